"""A cascade on this machine: how much computation and latency it saves for at most 3 points of IoU, and how good its router is.

Trains a small and a large Fast-SCNN with optiseg's trainer (or reuses the
runs in the work folder), builds their cascade (``optiseg.cascade.build_cascade``:
per-image scores, routers learned from the validation split, the device graph,
every part measured) and reports, for the best operating point that loses at
most --max-loss IoU against the large network alone:

* the share of images sent to the server;
* the saving in computation (MACs: small network and router on the device for
  every frame, plus the share sent times the large network on the server)
  against the large network alone;
* the saving in expected latency per frame against the large network alone,
  both on the server (every frame sent over the link) and on the device;
* the learned router against the oracle and the random router at the same
  share, and the share each of them needs to stay within --max-loss.

Device and server are both this machine (onnxruntime, --threads threads each),
measured one after the other; the link is --link-mbps both ways with --rtt-ms.

    python benchmarks/cascade.py                                   # packages data, the defaults below
    python benchmarks/cascade.py --synthetic 200 --classes 4 -o /tmp/cascade-synth --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from optiseg.cascade import CascadeMember, CascadeSettings, best_within, build_cascade, cascade_runners
from optiseg.cli._common import parse_knobs
from optiseg.config import DataConfig, DeviceConfig, LinkConfig, TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.network import Network
from optiseg.training import train_network

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the repository, or beside the folder of worktrees it is in
DEFAULT_DATA = next((folder / "shared" / "datasets" / "packages" for folder in (REPO.parent, REPO.parent.parent)
                     if (folder / "shared" / "datasets" / "packages").is_dir()), REPO.parent / "shared" / "datasets" / "packages")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data folder (binary 0/255 masks, split layout)")
    parser.add_argument("--synthetic", type=int, default=None, metavar="N", help="instead: a synthetic data set of N images in the work folder")
    parser.add_argument("--classes", type=int, default=4, help="classes of the synthetic data set (default 4)")
    parser.add_argument("--small", default="a=0.25,t=6,r=1", help="knobs of the small Fast-SCNN")
    parser.add_argument("--small-resolution", default="96")
    parser.add_argument("--large", default="", help="knobs of the large Fast-SCNN (default: the baseline)")
    parser.add_argument("--large-resolution", default="192")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--router", choices=("decision", "baseline"), default="decision")
    parser.add_argument("--target", choices=("accuracy", "iou"), default="accuracy")
    parser.add_argument("--crossfit", type=int, default=0, metavar="K", help="also K-fold cross-fitting (K more trainings of the small network)")
    parser.add_argument("--max-loss", type=float, default=0.03, help="IoU the cascade may lose against the large network (default 0.03)")
    parser.add_argument("--link-mbps", type=float, default=100.0)
    parser.add_argument("--rtt-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("/tmp/optiseg-cascade-bench"), help="work folder; training and the cascade resume")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = args.output
    if args.synthetic:
        data = DataConfig.model_validate({"root": str(work / f"synthetic-{args.synthetic}-c{args.classes}"),
                                          "synthetic": {"n": args.synthetic, "classes": args.classes}})
    else:
        data = DataConfig.model_validate({"root": str(args.data.resolve())})
    dataset = load_dataset(data)
    cache = DatasetCache(dataset)
    training = TrainingConfig(epochs=args.epochs)
    members, train_s = {}, {}
    for role, knobs, resolution in (("small", args.small, args.small_resolution), ("large", args.large, args.large_resolution)):
        network = Network.create("fastscnn", parse_knobs(knobs), resolution, num_classes=dataset.num_classes)
        started = time.perf_counter()
        result = train_network(network, dataset=dataset, training=training, run_dir=work / network.key / "train", cache=cache)
        train_s[role] = round(time.perf_counter() - started, 1)
        members[role] = CascadeMember(network=network, onnx=result.onnx, checkpoint=result.checkpoint, label=f"{role} {network.describe()}")

    settings = CascadeSettings(router=args.router, target=args.target, router_data="crossfit" if args.crossfit else "val",
                               folds=args.crossfit or 3, training=training)
    link = LinkConfig(uplink_mbps=args.link_mbps, rtt_ms=args.rtt_ms)
    measure = {"kind": "local", "measure": {"threads": args.threads}}
    folder = work / "cascades" / f"{members['small'].network.key}+{members['large'].network.key}-{args.router}-{args.target}"
    started = time.perf_counter()
    local = DeviceConfig.model_validate(measure)
    result = build_cascade(members["small"], members["large"], cache=cache, runners=lambda: cascade_runners(local, local),
                           link=link, folder=folder, settings=settings, stage=lambda text: print(text, file=sys.stderr, flush=True))
    report = summarize(result, max_loss=args.max_loss)
    report.update(train_s=train_s, cascade_s=round(time.perf_counter() - started, 1), data=str(data.root),
                  threads=args.threads, link=link.describe(), folder=str(folder))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def summarize(result, *, max_loss: float) -> dict[str, Any]:
    """The issue's figures from a cascade result (see the module docstring)."""
    large, small = result.references["large"], result.references["small"]
    large_device_ms = float(result.latencies["large"]["median_ms"])  # device and server are this machine
    large_macs = result.costs[result.router].server_macs

    def needed(points) -> float | None:
        point = best_within(points, large.iou, max_loss, key="macs")
        return None if point is None else point.share_sent

    chosen = best_within(result.points, large.iou, max_loss, key="macs")
    by_count = {name: {p.sent: p for p in result.curves[name]} for name in ("oracle", "random")}
    figures: dict[str, Any] = {
        "small": {"network": result.small.network.describe(), "iou": small.iou, "latency_ms": small.latency_ms, "macs": small.macs},
        "large": {"network": result.large.network.describe(), "iou": large.iou, "server_latency_ms": large.latency_ms,
                  "device_latency_ms": large_device_ms, "macs": large_macs},
        "router": result.router, "target": result.target, "test_images": large.images,
        "rank_correlation": dict(result.rank_correlation),
        "router_rows": result.router_fit.get("rows"),
        "device_ms": result.costs[result.router].device_ms,
        "share_needed": {"router": needed(result.points), "oracle": needed(result.curves["oracle"]),
                         "random": needed(result.curves["random"]),
                         "other_router": needed(result.curves["baseline" if result.router == "decision" else "decision"])},
        "max_loss": max_loss,
    }
    if chosen is not None:
        oracle, random = by_count["oracle"].get(chosen.sent), by_count["random"].get(chosen.sent)
        headroom = None if oracle is None or random is None or oracle.iou == random.iou else (chosen.iou - random.iou) / (oracle.iou - random.iou)
        figures["best"] = {
            "threshold": chosen.threshold, "share_sent": chosen.share_sent, "iou": chosen.iou,
            "iou_loss_points": 100 * (large.iou - chosen.iou), "macs": chosen.macs,
            "computation_saved": 1 - chosen.macs / large_macs,
            "latency_ms": chosen.latency_ms,
            "latency_saved_vs_large_on_server": 1 - chosen.latency_ms / large.latency_ms,
            "latency_saved_vs_large_on_device": 1 - chosen.latency_ms / large_device_ms,
            "device_latency_ms": chosen.device_latency_ms, "link_bytes": chosen.link_bytes,
            "oracle_iou": None if oracle is None else oracle.iou, "random_iou": None if random is None else random.iou,
            "gap_to_oracle_points": None if oracle is None else 100 * (oracle.iou - chosen.iou),
            "ahead_of_random_points": None if random is None else 100 * (chosen.iou - random.iou),
            "oracle_headroom_captured": headroom,
        }
    return figures


def print_report(r: dict[str, Any]) -> None:
    small, large = r["small"], r["large"]
    print(f"small: {small['network']}: IoU {small['iou']:.4f}, {small['latency_ms']:.2f} ms, {small['macs'] / 1e6:.2f} M MACs")
    print(f"large: {large['network']}: IoU {large['iou']:.4f}, {large['device_latency_ms']:.2f} ms on the device, "
          f"{large['server_latency_ms']:.2f} ms sent to the server ({r['link']}), {large['macs'] / 1e6:.2f} M MACs")
    rho = ", ".join(f"{name} {value:.3f}" if value is not None else f"{name} n/a" for name, value in r["rank_correlation"].items())
    print(f"router: {r['router']} predicting the small network's {r['target']}; rank correlation on {r['test_images']} test images: {rho}; "
          f"learned from {r['router_rows']} rows; device graph {r['device_ms']:.2f} ms")
    need = r["share_needed"]
    print("share sent to stay within {:.0f} points: ".format(100 * r["max_loss"])
          + ", ".join(f"{name} {'n/a' if v is None else f'{v:.0%}'}" for name, v in need.items()))
    best = r.get("best")
    if best is None:
        print("no operating point is within the loss")
        return
    print(f"best point: threshold {best['threshold']:.4f}, {best['share_sent']:.0%} sent, IoU {best['iou']:.4f} "
          f"({best['iou_loss_points']:.2f} points under the large network)")
    print(f"  computation saved {best['computation_saved']:.1%} ({best['macs'] / 1e6:.2f} M MACs per frame on average)")
    print(f"  expected latency {best['latency_ms']:.2f} ms: {best['latency_saved_vs_large_on_server']:.1%} less than the large network "
          f"on the server, {best['latency_saved_vs_large_on_device']:+.1%} against it on the device")
    print(f"  at that share: oracle IoU {best['oracle_iou']:.4f} (gap {best['gap_to_oracle_points']:.2f} points), random "
          f"{best['random_iou']:.4f} (router ahead by {best['ahead_of_random_points']:.2f} points, "
          f"{best['oracle_headroom_captured']:.0%} of the oracle's lead over random)")


if __name__ == "__main__":
    sys.exit(main())
