"""Latency of the baselines on this machine: onnxruntime (2 threads) versus PyTorch eager.

Also checks that optiseg's cleaned export is as fast as a straightforward
``torch.onnx.export`` of the same network.

    python benchmarks/model_latency.py [--threads 2] [--min-runs 50] [--min-seconds 2] [--json]

Protocol per model: 10 warm-up runs of each contender, then ``--blocks`` rounds
in which each contender (optiseg's export, the plain export, PyTorch eager) runs
until both the minimum count and the minimum time of a block are reached, in
turn. Interleaving makes slow drifts of a shared machine hit every contender
alike; the headline figure is the median over all of a contender's runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from optiseg.network import Network
from optiseg.export import export_onnx
from optiseg.models import build_model

CASES = [
    ("fastscnn", {"a": 1, "t": 6, "r": 3, "pp": 1}, (512, 512)),
    ("fastscnn", {"a": 1, "t": 6, "r": 3, "pp": 1}, (192, 192)),
    ("bisenetv2", {}, (512, 512)),
]


def time_calls(fn, min_runs: int, min_seconds: float) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def interleaved_medians(contenders: dict, blocks: int, min_runs: int, min_seconds: float) -> dict[str, float]:
    """Median per contender, timed in alternating blocks after 10 warm-up runs each."""
    for fn in contenders.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(blocks):
        for name, fn in contenders.items():
            times[name] += time_calls(fn, max(1, min_runs // blocks), min_seconds / blocks)
    return {name: statistics.median(values) for name, values in times.items()}


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--blocks", type=int, default=5, help="alternating rounds per contender")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, knobs, size in CASES:
            model = build_model(name, knobs, num_classes=1).eval()
            x = torch.randn(1, 3, *size)
            optiseg_path = Path(tmp) / f"{name}-{size[0]}.onnx"
            export_onnx(model, optiseg_path, Network.create(name, knobs, size, num_classes=1))
            plain_path = Path(tmp) / f"{name}-{size[0]}-plain.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), str(plain_path), dynamo=False, opset_version=17, input_names=["input"])
            feed = {"input": x.numpy().astype(np.float32)}
            optiseg_session, plain_session = ort_session(optiseg_path, args.threads), ort_session(plain_path, args.threads)

            def eager():
                with torch.inference_mode():
                    model(x)

            results = interleaved_medians(
                {
                    "onnxruntime": lambda: optiseg_session.run(None, feed),
                    "onnxruntime_plain_export": lambda: plain_session.run(None, feed),
                    "pytorch_eager": eager,
                },
                args.blocks, args.min_runs, args.min_seconds,
            )
            row = {
                "model": name,
                "knobs": knobs,
                "resolution": f"{size[0]}x{size[1]}",
                "threads": args.threads,
                "onnxruntime_median_ms": round(results["onnxruntime"], 2),
                "plain_export_median_ms": round(results["onnxruntime_plain_export"], 2),
                "pytorch_eager_median_ms": round(results["pytorch_eager"], 2),
                "eager_over_onnxruntime": round(results["pytorch_eager"] / results["onnxruntime"], 2),
            }
            rows.append(row)
            if not args.json:
                print(
                    f"{name:10s} {row['resolution']:>8s}  onnxruntime {row['onnxruntime_median_ms']:8.2f} ms"
                    f"  (plain export {row['plain_export_median_ms']:8.2f} ms)"
                    f"  eager {row['pytorch_eager_median_ms']:8.2f} ms  eager/ort {row['eager_over_onnxruntime']:.2f}x",
                    flush=True,
                )
    meta = {"onnxruntime": ort.__version__, "torch": torch.__version__, "cpu_threads": args.threads}
    if args.json:
        print(json.dumps({"machine": meta, "results": rows}))
    else:
        print(json.dumps(meta))


if __name__ == "__main__":
    main()
