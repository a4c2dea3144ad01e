#!/usr/bin/env python3
"""The server side of a split network: receive the tensors that cross the cut, run the tail, send the mask back.

    python3 split_server.py tail.onnx [--host 127.0.0.1] [--port 5555] [--threads 0] [--frames N]

Each request is one frame of ``tensor_codec.py`` (the crossing tensors at the
bits the device chose; the frame says which), length-prefixed on a TCP
connection; each answer is the mask (``tensor_codec.encode_mask``: the class of
every pixel at the network's input size). Prints one JSON line when it listens
(``{"listening": PORT}``; ``--port 0`` picks a free port) and one per frame.
Needs numpy and onnxruntime; ``tensor_codec.py`` and ``predict.py`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensor_codec  # noqa: E402
from predict import session, to_mask  # noqa: E402


def serve(tail, listener, frames=None):
    """Answer frames on ``listener`` until ``frames`` were answered (None: forever)."""
    meta = tail.get_modelmeta().custom_metadata_map
    num_classes = int(meta["num_classes"])
    inputs = {item.name for item in tail.get_inputs()}
    answered = 0
    while frames is None or answered < frames:
        connection, peer = listener.accept()
        with connection:
            while frames is None or answered < frames:
                message = tensor_codec.recv_message(connection)
                if message is None:
                    break
                started = time.perf_counter()
                tensors = tensor_codec.decode_frame(message)
                if set(tensors) != inputs:
                    raise SystemExit("frame holds %s but the tail takes %s: head and tail of different cuts" % (sorted(tensors), sorted(inputs)))
                logits = tail.run(None, tensors)[0][0]
                tensor_codec.send_message(connection, tensor_codec.encode_mask(to_mask(logits, num_classes)))
                answered += 1
                print(json.dumps({"frame": answered, "peer": "%s:%s" % peer[:2], "bytes": len(message),
                                  "server_ms": round((time.perf_counter() - started) * 1000, 3)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tail")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=5555, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    parser.add_argument("--frames", type=int, default=None, help="stop after answering this many frames")
    args = parser.parse_args()
    tail = session(args.tail, args.threads)
    with socket.create_server((args.host, args.port)) as listener:
        print(json.dumps({"listening": listener.getsockname()[1]}), flush=True)
        serve(tail, listener, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
