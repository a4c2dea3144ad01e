#!/usr/bin/env python3
"""Segment images with a model exported by optiseg (device side: numpy + onnxruntime; Pillow to read images).

    python3 predict.py model.onnx image.jpg [more images ...] [-o OUT_DIR] [--threads 4]

Every preprocessing detail comes from the model's metadata: input size,
channel order (RGB, or the luma Y of BT.601), scaling and mean/std. Each
image's mask is resized back to the image's own size and written as a PNG:
binary models write 0/255, multi-class models write the class index.

The other device-side scripts of a deployment (split, cascade, early exits)
import ``Preprocessing``, ``to_mask`` and ``save_mask`` from this file.
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


class Preprocessing:
    """How an image becomes the model's input, read from an optiseg model's metadata."""

    def __init__(self, meta):
        _, self.channels, self.height, self.width = json.loads(meta["input_shape"])
        self.mean = np.array(json.loads(meta["normalization_mean"]), dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.array(json.loads(meta["normalization_std"]), dtype=np.float32).reshape(-1, 1, 1)
        self.luma = meta.get("channel_order") == "Y"
        self.num_classes = int(meta["num_classes"])
        self.input_name = meta.get("input_name", "input")

    def __call__(self, image):
        """A Pillow RGB image -> the float32 ``1xCxHxW`` tensor the model takes."""
        from PIL import Image

        resized = np.asarray(image.resize((self.width, self.height), Image.BILINEAR), dtype=np.float32) / 255.0
        if self.luma:
            resized = resized @ LUMA[:, None]
        return ((resized.transpose(2, 0, 1) - self.mean) / self.std)[None].astype(np.float32)


def to_mask(logits, num_classes):
    """``CxHxW`` logits -> the uint8 mask: class 1 where the logit is > 0 (binary), else the best class."""
    if num_classes == 1:
        return (logits[0] > 0).astype(np.uint8)  # sigmoid(logit) > 0.5
    return logits.argmax(axis=0).astype(np.uint8)


def save_mask(mask, size, target, num_classes):
    """Write ``mask`` resized (nearest) to ``size`` (width, height) as a PNG: 0/255 for binary models."""
    from PIL import Image

    pixels = mask * 255 if num_classes == 1 else mask
    Image.fromarray(pixels.astype(np.uint8)).resize(size, Image.NEAREST).save(target)


def open_image(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"))
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    args = parser.parse_args()
    try:
        import PIL  # noqa: F401
    except ImportError:
        print("predict.py reads images with Pillow: pip install pillow", file=sys.stderr)
        return 2

    model = session(args.model, args.threads)
    meta = model.get_modelmeta().custom_metadata_map
    prepare = Preprocessing(meta)
    args.out.mkdir(parents=True, exist_ok=True)

    for path in args.images:
        image = open_image(path)
        tensor = prepare(image)
        start = time.perf_counter()
        logits = model.run([meta["output_name"]], {meta["input_name"]: tensor})[0][0]
        elapsed_ms = (time.perf_counter() - start) * 1000
        target = args.out / f"{path.stem}.png"
        save_mask(to_mask(logits, prepare.num_classes), image.size, target, prepare.num_classes)
        print(json.dumps({"image": str(path), "mask": str(target), "inference_ms": round(elapsed_ms, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
