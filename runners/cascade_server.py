#!/usr/bin/env python3
"""Segment the hard images of a cascade (server side): the large model, behind a TCP socket.

    python3 cascade_server.py server.onnx [--host 0.0.0.0] [--port 5555] [--threads 4] [--max-requests N]

Each request (from cascade_device.py) is one tensor_codec frame holding
``image``: uint8 RGB at this model's input size; the answer is one frame
holding ``mask``: the class map (uint8, 0..classes-1) at that size. Several
devices may be connected at once (one thread each). Says
``{"listening": "HOST:PORT"}`` on stderr once it accepts connections; on
SIGINT, SIGTERM or after ``--max-requests`` answers, prints one JSON line
(requests served, median inference time) and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import socketserver
import sys
import threading
import time
from pathlib import Path

import numpy as np

from cascade_device import class_map, load_model, model_input
from tensor_codec import decode_frame, encode_frame, recv_message, send_message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="server.onnx: the large network")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=5555, help="TCP port (0: any free port, said on stderr)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    parser.add_argument("--max-requests", type=int, default=None, help="stop after answering this many images")
    args = parser.parse_args()

    session, meta = load_model(args.model, args.threads)
    shape = json.loads(meta["input_shape"])
    lock = threading.Lock()
    times: list[float] = []
    done = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while not done.is_set():
                message = recv_message(self.request)
                if message is None:
                    return
                image = np.rint(decode_frame(message)["image"]).astype(np.uint8)
                if image.shape != (shape[2], shape[3], 3):
                    raise ValueError(f"an image of shape {image.shape}; this model takes {shape[2]}x{shape[3]} RGB")
                start = time.perf_counter()
                logits = session.run([meta["output_name"]], {meta["input_name"]: model_input(image, meta)})[0]
                with lock:
                    times.append((time.perf_counter() - start) * 1000)
                    count = len(times)
                send_message(self.request, encode_frame({"mask": class_map(logits[0])}, bits=8))
                if args.max_requests is not None and count >= args.max_requests:
                    done.set()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer((args.host, args.port), Handler) as server:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        host, port = server.server_address[:2]
        print(json.dumps({"listening": f"{host}:{port}"}), file=sys.stderr, flush=True)
        while not done.wait(0.1):
            pass
        server.shutdown()
    print(json.dumps({"served": len(times), "median_inference_ms": round(float(np.median(times)), 2) if times else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
