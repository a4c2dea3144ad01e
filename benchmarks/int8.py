"""INT8 against FP32 on this machine: latency ratio measured side by side, and the IoU each precision really gets.

Trains each network once on the packages data (optiseg's trainer), then for
every quantization configuration: quantizes the trained FP32 model with
optiseg's INT8 mode code (onnxruntime's quant_pre_process + static QDQ),
scores it with onnxruntime on the test split, and times FP32 and INT8 on the
local device runner (2 threads) in interleaved rounds (A B A B ...). Prints,
per network and configuration: median latencies, INT8 / FP32 ratio (median of
the per-round ratios), test IoU of both and the change, operators left in float.

    python benchmarks/int8.py                       # the issue's three networks, 40 epochs (512x512: --epochs-512)
    python benchmarks/int8.py --epochs 10 --epochs-512 3 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from optiseg.config import DataConfig, DeviceConfig, TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.devices import open_pool
from optiseg.modes._base import ModeContext
from optiseg.modes._common import calibration_inputs
from optiseg.network import Network
from optiseg.quantize import QuantizationSettings, quantize_int8
from optiseg.training import evaluate_onnx, train_network

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "packages"
NETWORKS = (
    ("baseline 512", {}, 512),
    ("baseline 192", {}, 192),
    ("a=0.25,t=6,r=1 192", {"a": 0.25, "t": 6, "r": 1}, 192),
)
CONFIGS = {
    "per-channel minmax": QuantizationSettings(method="minmax", per_channel=True),
    "per-tensor minmax": QuantizationSettings(method="minmax", per_channel=False),
    "per-channel percentile": QuantizationSettings(method="percentile", per_channel=True),
    "per-channel entropy": QuantizationSettings(method="entropy", per_channel=True),
    "per-channel minmax Resize-in-float": QuantizationSettings(method="minmax", per_channel=True, exclude_ops=("Resize",)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--epochs-512", type=int, default=None, help="epochs at 512x512 (default: --epochs)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    parser.add_argument("--only", default=None, help="semicolon-separated labels of NETWORKS")
    parser.add_argument("-o", "--output", type=Path, default=None, help="work folder (default: temporary); training resumes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = args.output or Path(tempfile.mkdtemp(prefix="optiseg-int8-"))
    dataset = load_dataset(DataConfig.model_validate({"root": str(args.data.resolve())}))
    cache = DatasetCache(dataset)
    pool = open_pool(DeviceConfig.model_validate({"kind": "local", "measure": {"threads": args.threads, "min_seconds": 1.0}}))
    chosen = [c.strip() for c in args.configs.split(",")]
    rows = []
    try:
        for label, knobs, side in NETWORKS:
            if args.only and label not in args.only.split(";"):
                continue
            epochs = args.epochs_512 if side == 512 and args.epochs_512 else args.epochs
            network = Network.create("fastscnn", knobs, side, num_classes=dataset.num_classes)
            started = time.perf_counter()
            trained = train_network(network, dataset=dataset, training=TrainingConfig(epochs=epochs),
                                    run_dir=work / network.key / "train", cache=cache)
            train_s = time.perf_counter() - started
            test = cache.resized("test", network.resolution), cache.original_masks("test")
            score = lambda path: evaluate_onnx(path, *test, class_names=tuple(dataset.class_names),  # noqa: E731
                                               binary=dataset.binary, in_channels=network.in_channels, threads=args.threads)
            fp32_iou = score(trained.onnx).primary_iou
            for name in chosen:
                settings = CONFIGS[name]
                context = ModeContext(network_folder=None, measure=None, dataset=dataset, cache=cache)
                target = work / network.key / f"int8-{name.replace(' ', '_').replace(',', '')}.onnx"
                result = quantize_int8(trained.onnx, target, calibration_inputs(network, context, settings.calibration_images, 0), settings)
                int8_iou = score(target).primary_iou
                fp32_ms, int8_ms, ratios = [], [], []
                with pool.acquire() as runner:
                    for _ in range(args.rounds):
                        a = runner.measure(trained.onnx).median_ms
                        b = runner.measure(target).median_ms
                        fp32_ms.append(a)
                        int8_ms.append(b)
                        ratios.append(b / a)
                row = {
                    "network": label, "config": name, "epochs": epochs, "train_s": round(train_s, 1),
                    "fp32_ms": statistics.median(fp32_ms), "int8_ms": statistics.median(int8_ms),
                    "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                    "fp32_iou": fp32_iou, "int8_iou": int8_iou, "iou_change_points": 100 * (int8_iou - fp32_iou),
                    "fp32_mb": trained.onnx.stat().st_size / 2**20, "int8_mb": result.size_mb, "float_ops": result.float_ops,
                }
                rows.append(row)
                if not args.json:
                    print(f"{label:<20} {name:<38} fp32 {row['fp32_ms']:7.2f} ms  int8 {row['int8_ms']:7.2f} ms  "
                          f"ratio {row['ratio']:.3f} [{row['ratio_min']:.3f}-{row['ratio_max']:.3f}]  IoU {fp32_iou:.4f} -> "
                          f"{int8_iou:.4f} ({row['iou_change_points']:+.2f} pt)  float ops {result.float_ops or 'none'}",
                          flush=True)
    finally:
        pool.close()
    if args.json:
        print(json.dumps({"threads": args.threads, "rounds": args.rounds, "work": str(work), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
