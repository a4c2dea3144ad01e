"""Early exits on the packages data: per-exit IoU, MACs and measured latency, the operating curve, the best point.

    flock /tmp/optiseg-heavy.lock python benchmarks/early_exit.py [--data ../shared/datasets/packages]
        [--epochs 40] [--branch-epochs 10] [--resolution 192] [--knobs a=1] [--exits 2] [--threads 1]
        [--train-plain] [-o WORK_DIR] [--json]

Trains two networks with the default `training:` settings, exactly as
`optiseg train` does (run folders in WORK_DIR, reused when finished):

* ``joint``: Fast-SCNN with ``--exits`` side exits, every output's loss summed with weight 1 (``--epochs``);
* ``two_stage``: the same network, backbone alone (``--epochs``), then the exit heads with the backbone frozen
  (``--branch-epochs``), as the early-exit study trained its branches.

The network without exits is the two-stage network run whole: its first stage
is the plain training bit for bit (same seed, same batches; the exit heads,
built after the backbone, get no gradient) and the second never touches the
backbone, so its final output is the network trained without exits
(``tests/test_exits.py`` checks both). ``--train-plain`` trains it apart as well
and reports both.

For each network with exits: the chain of stage graphs is exported (parity
checked), each stage is timed on this machine (``--threads`` onnxruntime
threads, the runner's protocol: warm-up, >= 50 runs and >= 2 s, median), the
policy (confidence ``max_prob``) runs over every test image with thresholds
0.50 to 1.00, and the per-exit table, the operating curve and the fastest
point losing at most one point of IoU are printed, against the network
without exits (its ONNX timed the same way and scored by onnxruntime) and
against the exit network's own final output. The threshold is also chosen
on the validation split and its test figures reported (the test-chosen best
point is optimistic by construction). Last, the deployed policy
(``ExitChainRunner.run_policy``, what ``early_exit.py`` runs) is timed image by
image at the best threshold, to check the expected latency computed from the
stage medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from optiseg._runners.early_exit import ExitChainRunner
from optiseg.checkpoint import load_checkpoint, model_from_checkpoint
from optiseg.cli._common import parse_knobs
from optiseg.config import DataConfig, DeviceConfig, TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.devices import make_runner
from optiseg.exits import analyse_exits, best_point, efficient_points, exit_outputs, exit_table, operating_curve, sweep_thresholds
from optiseg.models import parse_resolution
from optiseg.network import Network
from optiseg.training import evaluate_onnx, train_network
from optiseg.training.evaluate import onnx_input

REPO = Path(__file__).resolve().parents[1]
# The shared data next to the repository, or next to the folder of worktrees that holds it.
DEFAULT_DATA = next((p / "shared" / "datasets" / "packages" for p in (REPO.parent, REPO.parent.parent)
                     if (p / "shared" / "datasets" / "packages").is_dir()), REPO.parent / "shared" / "datasets" / "packages")
POLICY_PASSES = 5


class EpochPrinter:
    """One line per epoch on stderr."""

    def __init__(self, name: str):
        self.name = name

    def on_epoch_end(self, epoch: int, epochs: int, m: dict[str, Any]) -> None:
        exits = ",".join(f"{e['iou']:.3f}" for e in m.get("val_exits", ()) if e["iou"] is not None)
        print(f"{self.name} epoch {epoch:3d}/{epochs} loss {m['train_loss']:.4f} val_iou {m['val_iou']:.4f}"
              f"{f' exits {exits}' if exits else ''} {m['seconds']:.1f}s{' *' if m['best'] else ''}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--branch-epochs", type=int, default=10)
    parser.add_argument("--resolution", default="192")
    parser.add_argument("--knobs", default="a=1")
    parser.add_argument("--exits", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the timing (default 1)")
    parser.add_argument("--train-plain", action="store_true", help="also train the network without exits apart")
    parser.add_argument("-o", "--work", type=Path, default=Path("/tmp/optiseg-bench-exits"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset(DataConfig(root=args.data))
    cache = DatasetCache(dataset)
    knobs = parse_knobs(args.knobs)
    resolution = parse_resolution(args.resolution)
    base = {"epochs": args.epochs}
    plans = {
        "two_stage": ({"exits": args.exits}, {**base, "exits": {"schedule": "two_stage", "branch_epochs": args.branch_epochs}}),
        "joint": ({"exits": args.exits}, {**base, "exits": {"schedule": "joint"}}),
        **({"plain": ({}, base)} if args.train_plain else {}),
    }
    runs = {}
    for name, (extra, training) in plans.items():
        network = Network.create("fastscnn", {**knobs, **extra}, resolution, num_classes=dataset.num_classes)
        result = train_network(network, dataset=dataset, training=TrainingConfig.model_validate(training),
                               run_dir=args.work / f"{name}-e{args.epochs}", cache=cache, reporter=EpochPrinter(name))
        runs[name] = (network, result)

    device = DeviceConfig.model_validate({"kind": "local", "measure": {"threads": args.threads}})
    figures: dict[str, Any] = {"settings": {**vars(args), "data": str(args.data), "work": str(args.work)}, "networks": {}}
    with make_runner(device) as runner:
        reports = {}
        for name in ("two_stage", "joint"):
            network, result = runs[name]
            model = model_from_checkpoint(load_checkpoint(result.checkpoint))
            reports[name] = analyse_exits(model, network, cache=cache, runner=runner, folder=result.run_dir / "exits")
        reference = reports["two_stage"].reference
        figures["plain"] = {"network_key": Network.create("fastscnn", knobs, resolution, num_classes=dataset.num_classes).key,
                            "source": "the two_stage network run whole: its backbone is the plain training",
                            "test_iou": reference.iou, "latency_ms": reference.latency_ms}
        for name, report in reports.items():
            figures["networks"][name] = _figures(report, runs[name][1], cache, figures["plain"], args.threads)
        if "plain" in runs:
            _, plain = runs["plain"]
            scores = evaluate_onnx(plain.onnx, cache.resized("test", resolution), cache.original_masks("test"),
                                   class_names=dataset.class_names, binary=dataset.binary, in_channels=3, threads=args.threads)
            figures["plain_trained_apart"] = {"test_iou": scores.primary_iou, "latency_ms": runner.measure(plain.onnx).median_ms,
                                              "train_seconds": plain.metrics["train_seconds"]}
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        _print(figures)
    return 0


def _figures(report, result, cache, plain: dict[str, Any], threads: int) -> dict[str, Any]:
    """One network's exit report, its best points against both references, the val-chosen threshold, the timed policy."""
    dataset = cache.dataset
    network = report.network
    scoring = {"class_names": dataset.class_names, "binary": dataset.binary}
    val = exit_outputs(report.chain, cache.resized("val", network.resolution), cache.original_masks("val"),
                       num_classes=len(dataset.class_names), in_channels=network.in_channels)
    val_curve = operating_curve(val, report.latency.cumulative_ms, sweep_thresholds(val), **scoring)
    val_final = exit_table(val, report.chain.exits, report.latency.cumulative_ms, report.chain.cumulative_macs, **scoring)[-1].iou
    chosen_on_val = best_point(val_curve, val_final, 0.01) if val_final is not None else None
    test_at_val_choice = None if chosen_on_val is None else operating_curve(
        report.per_image, report.latency.cumulative_ms, [chosen_on_val.threshold], cumulative_macs=report.chain.cumulative_macs,
        **scoring)[0]
    versus_plain = best_point(report.curve, plain["test_iou"], 0.01)
    timed = _time_policy(report, cache, report.best or versus_plain, threads)
    return {
        "network_key": network.key,
        "train_seconds": result.metrics["train_seconds"],
        "epochs_run": result.metrics["epochs_run"],
        "report": report.as_dict(),
        "efficient_curve": [p.as_dict(report.chain.exits) for p in efficient_points(report.curve)],
        "best_vs_own_final": None if report.best is None else {**report.best.as_dict(report.chain.exits), "saving": report.saving},
        "best_vs_plain": None if versus_plain is None else {
            **versus_plain.as_dict(report.chain.exits), "saving": 1 - versus_plain.expected_ms / plain["latency_ms"]},
        "chosen_on_val": None if test_at_val_choice is None else {
            **test_at_val_choice.as_dict(report.chain.exits), "val_iou": chosen_on_val.iou,
            "saving_vs_own_final": 1 - test_at_val_choice.expected_ms / report.reference.latency_ms},
        "timed_policy": timed,
    }


def _time_policy(report, cache, point, threads: int) -> dict[str, Any] | None:
    """The deployed policy at ``point``'s threshold, timed image by image (median of passes); against the expected latency."""
    if point is None:
        return None
    runner = ExitChainRunner(report.chain.folder, threads)
    images = cache.resized("test", report.network.resolution)
    tensors = [onnx_input(images[i][0], report.network.in_channels) for i in range(len(images))]
    for tensor in tensors[:10]:
        runner.run_policy(tensor, point.threshold, report.confidence)
    per_image = []
    for tensor in tensors:
        times = []
        for _ in range(POLICY_PASSES):
            started = time.perf_counter()
            runner.run_policy(tensor, point.threshold, report.confidence)
            times.append((time.perf_counter() - started) * 1000)
        per_image.append(statistics.median(times))
    return {"threshold": point.as_dict()["threshold"], "expected_ms": point.expected_ms, "measured_mean_ms": statistics.fmean(per_image),
            "passes": POLICY_PASSES, "images": len(tensors)}


def _threshold(value: float | None) -> str:
    return "never" if value is None else f"{value:.6g}"


def _print(f: dict[str, Any]) -> None:
    plain = f["plain"]
    s = f["settings"]
    print(f"fastscnn {s['knobs']} at {s['resolution']}, {s['exits']} exits, {s['epochs']} epochs (+{s['branch_epochs']} branch "
          f"epochs for two_stage); latency on this machine, {s['threads']} onnxruntime thread(s)")
    print(f"no exits ({plain['network_key']}, {plain['source']}): test IoU {plain['test_iou']:.4f}, {plain['latency_ms']:.3f} ms")
    apart = f.get("plain_trained_apart")
    if apart:
        print(f"  trained apart: test IoU {apart['test_iou']:.4f}, {apart['latency_ms']:.3f} ms, trained in {apart['train_seconds']:.0f} s")
    for name, n in f["networks"].items():
        r = n["report"]
        print(f"\n== {name} ({n['network_key']}, trained in {n['train_seconds']:.0f} s, {n['epochs_run']} epochs) ==")
        print("output        IoU     MACs        ms up to it")
        for row in r["exits"]:
            print(f"{row['name']:<12} {row['iou']:.4f}  {row['macs'] / 1e6:8.2f} M  {row['latency_ms']:8.3f}")
        ref = r["reference"]
        print(f"{'whole':<12} {ref['iou']:.4f}  {ref['macs'] / 1e6:8.2f} M  {ref['latency_ms']:8.3f}   (no exit heads)")
        print(f"chain parity {r['chain']['max_abs_diff']:.1e}; stage ms {', '.join(f'{m:.3f}' for m in r['latency']['stage_ms'])}")
        print(f"operating curve: the {len(n['efficient_curve'])} points no other beats, of {len(r['curve'])} thresholds")
        print("threshold  " + "  ".join(f"{e['name']:>7}" for e in r["exits"]) + "     IoU  expected ms")
        for p in n["efficient_curve"]:
            print(f"{_threshold(p['threshold']):>9}  " + "  ".join(f"{v:7.0%}" for v in p["shares"].values())
                  + f"  {p['iou']:.4f}  {p['expected_ms']:10.3f}")
        print(f"{'no exits':>9}  " + " " * (9 * len(r["exits"])) + f"{plain['test_iou']:.4f}  {plain['latency_ms']:10.3f}")
        for label, key, reference in (("own final output", "best_vs_own_final", ref), ("network without exits", "best_vs_plain", None)):
            b = n[key]
            if b is None:
                print(f"best vs {label}: no threshold within 1 point of IoU")
                continue
            against = ref["latency_ms"] if reference else plain["latency_ms"]
            print(f"best vs {label} (<= 1 point IoU lost): threshold {_threshold(b['threshold'])}, IoU {b['iou']:.4f}, "
                  f"{b['expected_ms']:.3f} ms vs {against:.3f} ms: {b['saving']:.1%} saved; shares "
                  + ", ".join(f"{k} {v:.0%}" for k, v in b["shares"].items()))
        v = n["chosen_on_val"]
        if v is not None:
            print(f"threshold chosen on val ({_threshold(v['threshold'])}, val IoU {v['val_iou']:.4f}): test IoU {v['iou']:.4f}, "
                  f"{v['expected_ms']:.3f} ms, {v['saving_vs_own_final']:.1%} saved vs own final")
        t = n["timed_policy"]
        if t is not None:
            print(f"deployed policy at {_threshold(t['threshold'])}: measured {t['measured_mean_ms']:.3f} ms per image "
                  f"(median of {t['passes']} passes, mean over {t['images']} images) vs expected {t['expected_ms']:.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
