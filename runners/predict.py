#!/usr/bin/env python3
"""Segment images with a model exported by optiseg (device side: numpy + onnxruntime; Pillow to read images).

    python3 predict.py model.onnx image.jpg [more images ...] [-o OUT_DIR] [--threads 4]

Every preprocessing detail comes from the model's metadata: input size,
channel order (RGB, or the luma Y of BT.601), scaling and mean/std. Each
image's mask is resized back to the image's own size and written as a PNG:
binary models write 0/255, multi-class models write the class index.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"))
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    args = parser.parse_args()
    try:
        from PIL import Image
    except ImportError:
        print("predict.py reads images with Pillow: pip install pillow", file=sys.stderr)
        return 2

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    _, channels, height, width = json.loads(meta["input_shape"])
    mean = np.array(json.loads(meta["normalization_mean"]), dtype=np.float32).reshape(-1, 1, 1)
    std = np.array(json.loads(meta["normalization_std"]), dtype=np.float32).reshape(-1, 1, 1)
    num_classes = int(meta["num_classes"])
    args.out.mkdir(parents=True, exist_ok=True)

    for path in args.images:
        image = Image.open(path).convert("RGB")
        resized = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
        if meta["channel_order"] == "Y":
            resized = resized @ LUMA[:, None]
        tensor = ((resized.transpose(2, 0, 1) - mean) / std)[None].astype(np.float32)
        start = time.perf_counter()
        logits = session.run([meta["output_name"]], {meta["input_name"]: tensor})[0][0]
        elapsed_ms = (time.perf_counter() - start) * 1000
        if num_classes == 1:
            mask = ((logits[0] > 0).astype(np.uint8)) * 255  # sigmoid(logit) > 0.5
        else:
            mask = logits.argmax(axis=0).astype(np.uint8)
        out = Image.fromarray(mask).resize(image.size, Image.NEAREST)
        target = args.out / f"{path.stem}.png"
        out.save(target)
        print(json.dumps({"image": str(path), "mask": str(target), "inference_ms": round(elapsed_ms, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
