#!/usr/bin/env python3
"""The device side of a split network: run the head, send what crosses the cut, receive the mask.

    python3 split_device.py head.onnx IMAGE [IMAGE ...] --server HOST:PORT [--bits 8] [-o masks/] [--threads 0]

Each image is preprocessed as the model's metadata says, run through the head,
its outputs encoded at ``--bits`` per value (``tensor_codec.py``: 32 float32,
16 float16, 8 or 4 quantized; default: the plan's, from ``split.json``) and
sent as one frame to ``split_server.py``, which answers with the mask. Masks
are written as PNGs at each image's own size; one JSON line per image gives
the head, encoding and round-trip times and the bytes sent. Needs numpy,
onnxruntime and Pillow; ``tensor_codec.py`` and ``predict.py`` next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensor_codec  # noqa: E402
from predict import Preprocessing, open_image, save_mask, session  # noqa: E402


def plan_bits(head_path):
    """The bits of the deployed plan, from ``split.json`` beside the head (8 without one)."""
    plan = Path(head_path).with_name("split.json")
    return int(json.loads(plan.read_text())["bits"]) if plan.is_file() else 8


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("head")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--server", required=True, help="HOST:PORT of split_server.py")
    parser.add_argument("--bits", type=int, choices=tensor_codec.BITS, default=None, help="bits per value on the link")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"))
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    args = parser.parse_args()
    bits = args.bits or plan_bits(args.head)
    host, _, port = args.server.rpartition(":")
    head = session(args.head, args.threads)
    meta = head.get_modelmeta().custom_metadata_map
    prepare = Preprocessing(meta)
    names = [output.name for output in head.get_outputs()]
    args.out.mkdir(parents=True, exist_ok=True)
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=60) as connection:
        for path in args.images:
            image = open_image(path)
            t0 = time.perf_counter()
            outputs = head.run(names, {prepare.input_name: prepare(image)})
            t1 = time.perf_counter()
            frame = tensor_codec.encode_frame(dict(zip(names, outputs)), bits)
            t2 = time.perf_counter()
            tensor_codec.send_message(connection, frame)
            answer = tensor_codec.recv_message(connection)
            t3 = time.perf_counter()
            if answer is None:
                raise SystemExit("the server closed the connection")
            target = args.out / ("%s.png" % path.stem)
            save_mask(tensor_codec.decode_mask(answer), image.size, target, prepare.num_classes)
            print(json.dumps({"image": str(path), "mask": str(target), "bits": bits, "bytes_sent": len(frame),
                              "head_ms": round((t1 - t0) * 1000, 3), "encode_ms": round((t2 - t1) * 1000, 3),
                              "round_trip_ms": round((t3 - t2) * 1000, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
