#!/usr/bin/env python3
"""Segment images with a cascade (device side): the small model here, the hard images on a server.

    python3 cascade_device.py device.onnx image.jpg [more images ...] --server HOST:PORT
        [--threshold T | --policy policy.json] [--table thresholds.json] [-o OUT_DIR] [--threads 4]

``device.onnx`` (written by ``optiseg deploy`` of a cascade) is the small
network and its router in one graph: for each image it gives the small
network's logits and ``quality``, the router's prediction of the small
network's IoU on that image. The image goes to the server (cascade_server.py,
over TCP) when ``quality < threshold``; otherwise the small network's mask is
kept. Every preprocessing detail comes from the model's metadata, as in
predict.py.

The threshold, checked again before every image (so it can change while this
runs, without deploying again):

1. ``--threshold T``, fixed;
2. else ``--policy FILE``, read again whenever the file changes:
   ``{"default": 0.8, "battery": [{"below": 20, "threshold": 0.5}], "load": [{"above": 3.0, "threshold": 0.6}]}``:
   the battery rule with the lowest ``below`` that the battery level (percent, from
   /sys/class/power_supply, or ``--battery``) is under, else the load rule with the
   highest ``above`` that the 1-minute load average exceeds, else ``default``;
3. else the ``default_threshold`` of ``--table`` (default: thresholds.json next to the model).

On the link: the image as uint8 RGB at the server model's input size goes up,
its class map as uint8 at that size comes down (the tensor_codec frame format,
8 bits per value), and is resized to the image's size with nearest neighbour.
A server that cannot be reached leaves the small network's mask in place
(``"fallback"`` says why). Masks are written as PNG (binary: 0/255, else the
class index). Prints one JSON line: every image's route, score, threshold and times.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_model(path, threads: int = 0):
    """An onnxruntime session of ``path`` and the optiseg metadata it carries."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_modelmeta().custom_metadata_map


def model_input(rgb: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` already at the model's input size -> its normalized float32 input ``(1, C, H, W)``."""
    values = rgb.astype(np.float32) / 255.0
    if meta["channel_order"] == "Y":
        values = values @ LUMA[:, None]
    mean = np.array(json.loads(meta["normalization_mean"]), dtype=np.float32).reshape(-1, 1, 1)
    std = np.array(json.loads(meta["normalization_std"]), dtype=np.float32).reshape(-1, 1, 1)
    return ((values.transpose(2, 0, 1) - mean) / std)[None].astype(np.float32)


def class_map(logits: np.ndarray) -> np.ndarray:
    """One image's logits ``(C, H, W)`` -> class indices ``(H, W)`` uint8: sigmoid > 0.5 for one logit, argmax otherwise."""
    if logits.shape[0] == 1:
        return (logits[0] > 0).astype(np.uint8)
    return logits.argmax(axis=0).astype(np.uint8)


def input_size(meta: dict, key: str = "input_shape") -> tuple[int, int]:
    """(height, width) of a model input shape in the metadata."""
    shape = json.loads(meta[key])
    return int(shape[2]), int(shape[3])


# ---------------------------------------------------------------- the threshold, at run time


def battery_level() -> float | None:
    """The first battery's charge in percent, from /sys/class/power_supply; None without a battery."""
    for folder in sorted(glob.glob("/sys/class/power_supply/*")):
        try:
            if Path(folder, "type").read_text().strip() == "Battery":
                return float(Path(folder, "capacity").read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def policy_threshold(policy: dict, battery: float | None, load: float | None) -> tuple[float, str]:
    """The threshold a policy gives for a battery level and a load average, and the rule that gave it."""
    if battery is not None:
        for rule in sorted(policy.get("battery", []), key=lambda r: float(r["below"])):
            if battery < float(rule["below"]):
                return float(rule["threshold"]), f"battery {battery:g} % < {float(rule['below']):g} %"
    if load is not None:
        for rule in sorted(policy.get("load", []), key=lambda r: -float(r["above"])):
            if load > float(rule["above"]):
                return float(rule["threshold"]), f"load {load:.2f} > {float(rule['above']):g}"
    if "default" not in policy:
        raise ValueError("the policy has no rule for now and no default")
    return float(policy["default"]), "policy default"


class Threshold:
    """Where the threshold comes from (flag, policy file read again when it changes, table), asked before every image."""

    def __init__(self, fixed, policy_path, table_path, battery):
        self.fixed, self.policy_path, self.table_path, self.battery = fixed, policy_path, table_path, battery
        self._policy, self._mtime = None, None

    def now(self) -> tuple[float, str]:
        if self.fixed is not None:
            return self.fixed, "--threshold"
        if self.policy_path is not None:
            mtime = os.stat(self.policy_path).st_mtime_ns
            if mtime != self._mtime:
                self._policy, self._mtime = json.loads(Path(self.policy_path).read_text()), mtime
            battery = self.battery if self.battery is not None else battery_level()
            return policy_threshold(self._policy, battery, os.getloadavg()[0])
        if self.table_path is not None and Path(self.table_path).is_file():
            return float(json.loads(Path(self.table_path).read_text())["default_threshold"]), "table default"
        raise ValueError("no threshold: give --threshold T, --policy FILE, or keep thresholds.json next to the model")


# ---------------------------------------------------------------- the server


class Server:
    """One TCP connection to cascade_server.py, opened on the first hard image and kept."""

    def __init__(self, address: str, timeout: float):
        host, _, port = address.rpartition(":")
        self.host, self.port, self.timeout = host or "127.0.0.1", int(port), timeout
        self.sock = None

    def segment(self, image: np.ndarray) -> np.ndarray:
        from tensor_codec import decode_frame, encode_frame, recv_message, send_message

        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_message(self.sock, encode_frame({"image": image}, bits=8))
        reply = recv_message(self.sock)
        if reply is None:
            raise ConnectionError("the server closed the connection")
        return np.rint(decode_frame(reply)["mask"]).astype(np.uint8)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="device.onnx: the small network and its router")
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--server", required=True, help="HOST:PORT of cascade_server.py")
    parser.add_argument("--threshold", type=float, default=None, help="fixed: send when quality < this")
    parser.add_argument("--policy", type=Path, default=None, help="JSON policy: battery level / load average -> threshold")
    parser.add_argument("--table", type=Path, default=None, help="thresholds.json (default: next to the model)")
    parser.add_argument("--battery", type=float, default=None, help="battery level in percent (default: read from the system)")
    parser.add_argument("-o", "--out", type=Path, default=Path("masks"))
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: onnxruntime decides)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to reach the server and for its answer")
    args = parser.parse_args()
    try:
        from PIL import Image
    except ImportError:
        print("cascade_device.py reads images with Pillow: pip install pillow", file=sys.stderr)
        return 2

    session, meta = load_model(args.model, args.threads)
    height, width = input_size(meta)
    server_size = input_size(meta, "server_input_shape")
    binary = int(meta["num_classes"]) == 1
    threshold = Threshold(args.threshold, args.policy, args.table or args.model.with_name("thresholds.json"), args.battery)
    server = Server(args.server, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for path in args.images:
            image = Image.open(path).convert("RGB")
            resized = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.uint8)
            start = time.perf_counter()
            logits, quality = session.run([meta["output_name"], meta["quality_output"]], {meta["input_name"]: model_input(resized, meta)})
            device_ms = (time.perf_counter() - start) * 1000
            quality = float(np.ravel(quality)[0])
            limit, source = threshold.now()
            entry = {"image": str(path), "quality": round(quality, 4), "threshold": limit, "threshold_from": source,
                     "device_ms": round(device_ms, 2), "route": "device"}
            mask = class_map(logits[0])
            if quality < limit:
                sent = np.asarray(image.resize((server_size[1], server_size[0]), Image.BILINEAR), dtype=np.uint8)
                start = time.perf_counter()
                try:
                    mask = server.segment(sent)
                    entry.update(route="server", round_trip_ms=round((time.perf_counter() - start) * 1000, 2))
                except (OSError, ValueError) as exc:
                    server.close()
                    server.sock = None
                    entry["fallback"] = f"server {args.server} unreachable: {exc}"
            png = Image.fromarray(mask * 255 if binary else mask).resize(image.size, Image.NEAREST)
            target = args.out / f"{path.stem}.png"
            png.save(target)
            entry["mask"] = str(target)
            results.append(entry)
    finally:
        server.close()
    print(json.dumps({"images": results, "sent": sum(r["route"] == "server" for r in results), "total": len(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
