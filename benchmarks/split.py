"""Split computing on this machine: per cut, the head, the tail and the transfer, and the IoU at 32/16/8/4 bits.

Trains each network once on the packages data (optiseg's trainer; resumes in
``-o``), exports its trained head and tail at every cut (and ``server``: the
whole network on the server, the image sent), then per cut and bits:

* times the head **with the encoding** of what crosses on the device runner and
  the tail **with the decoding** on the server runner (both local here, each
  with ``--threads``; on a real deployment they are two machines);
* computes the transfer at ``--links`` Mbit/s (frame bytes up, mask bytes down,
  plus ``--rtt-ms``): the link is a figure of the config, not of this machine;
* scores head -> encode -> decode -> tail with onnxruntime on the test split.

Prints per network: one row per (cut, bits) with head, tail, frame size, the
transfer and end-to-end time at each link, and the IoU; then which plan wins
end to end at each link (all on the device included), and the best split plan
whose IoU is within 1 point of the whole network's.

    python benchmarks/split.py                               # the issue's three networks
    python benchmarks/split.py --only "unet a=1 160x320" --epochs-unet 2 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from optiseg._runners.tensor_codec import mask_nbytes
from optiseg.checkpoint import load_checkpoint, model_from_checkpoint
from optiseg.config import DataConfig, DeviceConfig, LinkConfig, TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.devices import CodecStep, make_runner
from optiseg.network import Network
from optiseg.split import SplitTiming, export_split, iou_with_codec, plan_cuts
from optiseg.training import evaluate_onnx, train_network

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "packages"
NETWORKS = (
    ("fastscnn baseline 512", "fastscnn", {}, 512),
    ("fastscnn a=0.25 512", "fastscnn", {"a": 0.25}, 512),
    ("unet a=1 160x320", "unet", {"a": 1}, "160x320"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the Fast-SCNNs")
    parser.add_argument("--epochs-unet", type=int, default=3, help="epochs of the U-Net (25.8 G MACs a frame: slow on a CPU)")
    parser.add_argument("--bits", default="32,16,8,4")
    parser.add_argument("--links", default="100,1000", help="link bandwidths in Mbit/s (both ways)")
    parser.add_argument("--rtt-ms", type=float, default=1.0)
    parser.add_argument("--device-slowdowns", default="1,10,30",
                        help="what-if: the winner if the device ran K times slower than this machine (a Raspberry Pi 4 "
                             "ran the thesis's networks about 20-30x slower); K=1 is what was measured")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="seconds of timed runs per measurement")
    parser.add_argument("--only", default=None, help="semicolon-separated labels of NETWORKS")
    parser.add_argument("-o", "--output", type=Path, default=None, help="work folder (default: temporary); training resumes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    bits = [int(b) for b in args.bits.split(",")]
    links = [float(v) for v in args.links.split(",")]
    work = args.output or Path(tempfile.mkdtemp(prefix="optiseg-split-"))
    dataset = load_dataset(DataConfig.model_validate({"root": str(args.data.resolve())}))
    cache = DatasetCache(dataset)
    measure = {"threads": args.threads, "min_seconds": args.min_seconds, "min_runs": 20, "warmup": 5}
    device = make_runner(DeviceConfig.model_validate({"kind": "local", "name": "device", "measure": measure}))
    server = make_runner(DeviceConfig.model_validate({"kind": "local", "name": "server", "measure": measure}))
    report = []
    for label, model_name, knobs, resolution in NETWORKS:
        if args.only and label not in args.only.split(";"):
            continue
        network = Network.create(model_name, knobs, resolution, num_classes=dataset.num_classes)
        epochs = args.epochs_unet if model_name == "unet" else args.epochs
        started = time.perf_counter()
        trained = train_network(network, dataset=dataset, training=TrainingConfig(epochs=epochs),
                                run_dir=work / network.key / "train", cache=cache)
        train_s = time.perf_counter() - started
        test = cache.resized("test", network.resolution), cache.original_masks("test")
        scoring = dict(class_names=tuple(dataset.class_names), binary=dataset.binary, in_channels=network.in_channels,
                       threads=args.threads)
        whole_iou = evaluate_onnx(trained.onnx, *test, **scoring).primary_iou
        whole_ms = device.measure(trained.onnx).median_ms
        model = model_from_checkpoint(load_checkpoint(trained.run_dir / "best.pt"))
        rows = []
        for cut in plan_cuts(network, model):
            head, tail = work / network.key / f"{cut.after}-head.onnx", work / network.key / f"{cut.after}-tail.onnx"
            if not (head.is_file() and tail.is_file()):
                export_split(model, network, cut, head, tail)
            for b in bits:
                head_latency = device.measure(head, CodecStep("encode", b)).to_dict()
                tail_latency = server.measure(tail, CodecStep("decode", b)).to_dict()
                iou = iou_with_codec(head, tail, *test, bits=b, **scoring).primary_iou
                per_link = {}
                for mbps in links:
                    link = LinkConfig(uplink_mbps=mbps, rtt_ms=args.rtt_ms)
                    timing = SplitTiming.of(head_latency, tail_latency, link, mask_nbytes(*network.resolution))
                    per_link[f"{mbps:g}"] = {"transfer_ms": timing.link_ms, "total_ms": timing.latency_ms}
                row = {"cut": cut.after, "bits": b, "head_ms": head_latency["median_ms"], "tail_ms": tail_latency["median_ms"],
                       "frame_bytes": head_latency["codec"]["frame_bytes"], "values": cut.values, "iou": iou,
                       "iou_change_points": 100 * (iou - whole_iou), "links": per_link}
                rows.append(row)
                if not args.json:
                    transfer = "  ".join(f"@{k}: {v['transfer_ms']:7.2f} + = {v['total_ms']:7.2f} ms" for k, v in per_link.items())
                    print(f"{label:<22} {cut.after:<24} {b:>2}b head {row['head_ms']:7.2f} tail {row['tail_ms']:7.2f} "
                          f"{row['frame_bytes'] / 1e6:7.3f} MB  {transfer}  IoU {iou:.4f} ({row['iou_change_points']:+.2f} pt)",
                          flush=True)
        winners = {}
        for mbps in links:
            key = f"{mbps:g}"
            for k in (float(v) for v in args.device_slowdowns.split(",")):
                if k == 1.0:
                    continue
                total = lambda r: r["links"][key]["total_ms"] + (k - 1.0) * r["head_ms"]  # noqa: E731
                best = min(rows, key=total)
                device_k = k * whole_ms
                verdict = "all on the device" if device_k <= total(best) else f"split after {best['cut']} at {best['bits']} bits"
                winners[f"{key}@slowdown{k:g}"] = {"all_on_device_ms": device_k, "best_split_ms": total(best), "winner": verdict}
                if not args.json:
                    print(f"{label}: what if the device were {k:g}x slower, at {key} Mbit/s: all on the device {device_k:.2f} ms; "
                          f"best split {best['cut']}@{best['bits']}b {total(best):.2f} ms (IoU {best['iou']:.4f}); winner: {verdict}",
                          flush=True)
            best = min(rows, key=lambda r: r["links"][key]["total_ms"])
            close = [r for r in rows if r["iou_change_points"] >= -1.0]
            best_close = min(close, key=lambda r: r["links"][key]["total_ms"]) if close else None
            winners[key] = {
                "all_on_device_ms": whole_ms,
                "fastest_split": {"cut": best["cut"], "bits": best["bits"], "total_ms": best["links"][key]["total_ms"], "iou": best["iou"]},
                "fastest_split_within_1pt": None if best_close is None else {
                    "cut": best_close["cut"], "bits": best_close["bits"], "total_ms": best_close["links"][key]["total_ms"],
                    "iou": best_close["iou"]},
                "winner": "all on the device" if whole_ms <= best["links"][key]["total_ms"] else f"split after {best['cut']} at {best['bits']} bits",
            }
            if not args.json:
                w = winners[key]
                print(f"{label}: at {key} Mbit/s: all on the device {whole_ms:.2f} ms (IoU {whole_iou:.4f}); fastest split "
                      f"{best['cut']}@{best['bits']}b {best['links'][key]['total_ms']:.2f} ms (IoU {best['iou']:.4f}); "
                      f"within 1 pt: {w['fastest_split_within_1pt']}; winner: {w['winner']}", flush=True)
        report.append({"network": label, "key": network.key, "epochs": epochs, "train_s": round(train_s, 1),
                       "whole_iou": whole_iou, "all_on_device_ms": whole_ms, "rows": rows, "winners": winners})
    device.close()
    server.close()
    if args.json:
        print(json.dumps({"threads": args.threads, "rtt_ms": args.rtt_ms, "links_mbps": links, "work": str(work), "networks": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
