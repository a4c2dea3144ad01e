#!/usr/bin/env python3
"""Segment images with an early-exit network exported by optiseg (device side: numpy + onnxruntime; Pillow to read images).

    python3 early_exit.py DEPLOY_DIR image.jpg [more images ...] [--threshold 0.9] [-o OUT_DIR] [--threads 4]
    python3 early_exit.py DEPLOY_DIR image.jpg --server HOST:5555 [--bits 8]   # the last stage on a server

With ``--server``, an image that leaves at no exit is sent on as the tensors
the last stage reads (one ``tensor_codec.py`` frame at ``--bits``), and
``split_server.py stageN.onnx`` on the server runs the last stage and sends its
class map back.

DEPLOY_DIR holds the chain of stage graphs (``stage1.onnx``, ``stage2.onnx``,
...), each exit's upsampling (``exit1.onnx``, ...) and ``exits.json``, which
says what each graph reads and writes, which confidence the policy reads and
which threshold to use by default. Stage k computes exit k's logits (at the
resolution of the feature it reads), their confidences and the features the
next stages need; the script runs stage 1, and stops at the first exit whose
confidence reaches the threshold (then ``exitK.onnx`` resizes its logits to
the input size), otherwise runs the next stage on the features already
computed, up to the final output, which always answers.

The confidences are computed inside each exit's stage graph (so timing a
stage times them too), both kinds at once, in the order of ``CONFIDENCES``:

* ``max_prob``: the mean over pixels of the largest class probability
  (one logit: ``max(p, 1 - p)`` with ``p = sigmoid(logit)``; several: softmax);
* ``pixel_share``: the share of pixels whose largest class probability is at
  least the chain's ``pixel_probability``.

Preprocessing comes from stage 1's metadata, as ``predict.py`` does it. Each
image's mask is written as a PNG (binary: 0/255; classes: the index) and the
script prints exactly one JSON line: per image the exit it left at, its
confidence and milliseconds, and the share of images leaving at each exit.

optiseg imports this file (``optiseg._runners.early_exit``) for
:class:`ExitChainRunner`, so the policy measured by ``optiseg exits`` is this code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MANIFEST = "exits.json"
CONFIDENCES = ("max_prob", "pixel_share")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ExitChainRunner:
    """The stage graphs of ``folder`` (its ``exits.json``) in onnxruntime sessions, run on one image at a time."""

    def __init__(self, folder, threads: int = 0, manifest: dict | None = None):
        """``manifest``: the content of ``exits.json`` when it is not (yet) written there."""
        import onnxruntime as ort

        folder = Path(folder)
        self.manifest = manifest if manifest is not None else json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        self.stages = self.manifest["stages"]

        def session(name):
            return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

        self.sessions = [session(s["file"]) for s in self.stages]
        self.upsamples = [session(s["upsample"]) if s["upsample"] else None for s in self.stages]
        self.metadata = self.sessions[0].get_modelmeta().custom_metadata_map
        self.binary = self.metadata.get("num_classes") == "1"  # one logit per pixel: masks are written 0/255

    @property
    def exit_names(self) -> list[str]:
        """Each stage's logits: ``exit1``, ..., then ``logits`` (the final output)."""
        return [s["exit"] for s in self.stages]

    def _run_stage(self, index: int, env: dict) -> None:
        stage, session = self.stages[index], self.sessions[index]
        results = session.run(stage["outputs"], {name: env[name] for name in stage["inputs"]})
        env.update(zip(stage["outputs"], results))

    def _logits(self, index: int, env: dict) -> np.ndarray:
        """The logits of stage ``index``'s output at the input size, (C, H, W)."""
        stage, upsample = self.stages[index], self.upsamples[index]
        logits = env[stage["outputs"][0]]
        if upsample is not None:
            logits = upsample.run([stage["exit"]], {stage["outputs"][0]: logits})[0]
        return logits[0]

    def _confidences(self, index: int, env: dict) -> dict[str, float]:
        values = env[self.stages[index]["confidence"]][0]
        return {kind: float(value) for kind, value in zip(self.manifest["confidences"], values)}

    def run_all(self, tensor: np.ndarray) -> tuple[list[np.ndarray], list[dict[str, float]]]:
        """Every stage on one preprocessed image (1, C, H, W): each output's logits (C, H, W), and each exit's confidences by kind."""
        env = {self.stages[0]["inputs"][0]: np.asarray(tensor, dtype=np.float32)}
        logits = []
        for index in range(len(self.stages)):
            self._run_stage(index, env)
            logits.append(self._logits(index, env))
        return logits, [self._confidences(index, env) for index in range(len(self.stages) - 1)]

    def run_policy(self, tensor: np.ndarray, threshold: float, kind: str = "max_prob",
                   remote=None) -> tuple[int, np.ndarray, float | None]:
        """(stage index it left at, its logits (C, H, W), its ``kind`` confidence; None at the final output) for one image.

        ``remote``: a function that takes the tensors the last stage reads (:meth:`crossing`) and returns the class map
        (H, W, uint8) of the last stage run elsewhere (a server): the exits run here, the rest there.
        """
        if kind not in self.manifest["confidences"]:
            raise ValueError(f"unknown confidence {kind!r}: use one of {', '.join(self.manifest['confidences'])}")
        position = self.manifest["confidences"].index(kind)
        env = {self.stages[0]["inputs"][0]: np.asarray(tensor, dtype=np.float32)}
        last = len(self.stages) - 1
        for index in range(last + 1):
            if index == last and remote is not None:
                return index, remote(self.crossing(env)), None
            self._run_stage(index, env)
            if index == last:
                return index, self._logits(index, env), None
            sure = float(env[self.stages[index]["confidence"]][0][position])
            if sure >= threshold:
                return index, self._logits(index, env), sure
        raise AssertionError("unreachable")

    def crossing(self, env: dict) -> dict:
        """What the last stage reads (by name), from the tensors the stages before it wrote: what a server needs."""
        return {name: env[name] for name in self.stages[-1]["inputs"]}

    def run_last(self, tensors: dict) -> np.ndarray:
        """The last stage on ``tensors`` (its inputs by name): the final logits (C, H, W)."""
        env = dict(tensors)
        self._run_stage(len(self.stages) - 1, env)
        return self._logits(len(self.stages) - 1, env)

    def run_to_last(self, tensor: np.ndarray) -> dict:
        """Every stage but the last on one image: the tensors they wrote (exits' logits and confidences included)."""
        env = {self.stages[0]["inputs"][0]: np.asarray(tensor, dtype=np.float32)}
        for index in range(len(self.stages) - 1):
            self._run_stage(index, env)
        return env

    def preprocess(self, image) -> np.ndarray:
        """A PIL image -> the float32 input (1, C, H, W) that stage 1's metadata describes."""
        meta = self.metadata
        _, _, height, width = json.loads(meta["input_shape"])
        mean = np.array(json.loads(meta["normalization_mean"]), dtype=np.float32).reshape(-1, 1, 1)
        std = np.array(json.loads(meta["normalization_std"]), dtype=np.float32).reshape(-1, 1, 1)
        from PIL import Image

        resized = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
        if meta["channel_order"] == "Y":
            resized = resized @ LUMA[:, None]
        return ((resized.transpose(2, 0, 1) - mean) / std)[None].astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the deployment folder (exits.json and the stage graphs)")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--threshold", type=float, default=None, help="confidence to leave at an exit (default: exits.json's)")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"))
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    parser.add_argument("--server", default=None, metavar="HOST:PORT",
                        help="send what the last stage reads to split_server.py there, which runs the last stage "
                             "(an early_exit_split plan); default: every stage here")
    parser.add_argument("--bits", type=int, default=None, choices=(32, 16, 8, 4),
                        help="bits per value on the link (default: exits.json's, else 8)")
    args = parser.parse_args()
    try:
        from PIL import Image
    except ImportError:
        print(json.dumps({"ok": False, "error": "early_exit.py reads images with Pillow: pip install pillow"}))
        return 2
    try:
        chain = ExitChainRunner(args.folder, args.threads)
    except (OSError, ValueError, KeyError) as exc:
        print(json.dumps({"ok": False, "error": f"{args.folder} is not an early-exit deployment: {exc}"}))
        return 2
    policy = chain.manifest["policy"]
    threshold = args.threshold if args.threshold is not None else policy["threshold"]
    threshold = float("inf") if threshold is None else threshold  # null: never leave early
    names = chain.exit_names
    args.out.mkdir(parents=True, exist_ok=True)
    results, counts = [], [0] * len(names)
    remote, connection = None, None
    if args.server:
        try:
            remote, connection = _remote(args.server, args.bits or policy.get("bits") or 8)
        except (OSError, ValueError, ImportError) as exc:
            print(json.dumps({"ok": False, "error": f"cannot reach the server {args.server}: {exc}"}))
            return 2
    for path in args.images:
        try:
            image = Image.open(path)
            tensor = chain.preprocess(image)
        except OSError as exc:
            print(json.dumps({"ok": False, "error": f"cannot read image {path}: {exc}"}))
            return 2
        start = time.perf_counter()
        try:
            index, logits, sure = chain.run_policy(tensor, threshold, policy["confidence"], remote=remote)
        except (OSError, ValueError) as exc:  # the server went away, timed out or answered something else
            if connection is not None:
                connection.close()
            print(json.dumps({"ok": False, "error": f"{path}: the server {args.server} failed: {exc}"}))
            return 2
        elapsed_ms = (time.perf_counter() - start) * 1000
        if logits.ndim == 2:  # a class map from the server
            mask = (logits * 255).astype(np.uint8) if chain.binary else logits
        else:
            mask = (logits[0] > 0).astype(np.uint8) * 255 if logits.shape[0] == 1 else logits.argmax(axis=0).astype(np.uint8)
        target = args.out / f"{path.stem}.png"
        Image.fromarray(mask).resize(image.size, Image.NEAREST).save(target)
        counts[index] += 1
        results.append({"image": str(path), "mask": str(target), "exit": names[index] if not (remote and index == len(names) - 1) else "server",
                        "confidence": None if sure is None else round(sure, 6), "ms": round(elapsed_ms, 3)})
    if connection is not None:
        connection.close()
    print(json.dumps({
        "ok": True, "threshold": None if threshold == float("inf") else threshold, "confidence": policy["confidence"], "images": results,
        "share": {name: count / len(results) for name, count in zip(names, counts)},
        "mean_ms": round(sum(r["ms"] for r in results) / len(results), 3),
    }))
    return 0


def _remote(address: str, bits: int):
    """A function that sends the last stage's inputs as one ``tensor_codec`` frame and returns the server's class map."""
    import os
    import socket

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tensor_codec

    host, _, port = address.rpartition(":")
    connection = socket.create_connection((host or "127.0.0.1", int(port)), timeout=60)

    def send(tensors: dict) -> np.ndarray:
        tensor_codec.send_message(connection, tensor_codec.encode_frame(tensors, bits))
        answer = tensor_codec.recv_message(connection)
        if answer is None:
            raise OSError("the server closed the connection")
        return tensor_codec.decode_mask(answer)

    return send, connection


if __name__ == "__main__":
    sys.exit(main())
