"""Does a network trained from a larger one's weights (width slicing) reach the same IoU in fewer epochs?

A source network is trained whole; each target network is then trained four ways on the same data and
settings: from scratch for the whole epochs (what a search does today) and for ``--short`` epochs, and from
the source's sliced weights (optiseg/training/inherit.py) for the same two. A short training has its own
learning-rate schedule (it decays over its epochs), as a multi-fidelity rung does not. Printed per target:
test IoU of each, whether the short inherited training reaches the whole scratch training's IoU, and the epoch
at which the whole inherited training passes the whole scratch training's best validation IoU (same schedule).

Targets (default): the thesis grid's shapes sliced from the baseline (a=1, t=6, r=3) at the same and a lower
resolution, and the baseline's own shape at a lower resolution (copied whole).

    python benchmarks/inherit.py                                    # 128 px source, 10 epochs, --short 3
    python benchmarks/inherit.py --resolution 192 --epochs 15 --short 3,5 -o runs/inherit --json
    python benchmarks/inherit.py --model bisenetv2 --source a=1,t=6 --target a=0.5,t=6 --target a=1,t=3 --target a=0.5,t=3

Every training is a run folder under -o, so a second run reuses them (and resumes an interrupted one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from optiseg.checkpoint import load_checkpoint
from optiseg.cli._common import parse_knobs
from optiseg.config import DataConfig, TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.network import Network
from optiseg.training import BEST, InitialWeights, train_network

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "packages"
DEFAULT_TARGETS = ("a=0.25,t=6,r=1,pp=0", "a=0.125,t=4,r=2,pp=0", "a=0.125,t=2,r=1,pp=0",
                   "a=0.25,t=6,r=1,pp=0@96", "a=1,t=6,r=3,pp=0@96")


def parse_target(text: str, resolution: int) -> tuple[dict, int]:
    knobs, _, side = text.partition("@")
    return parse_knobs(knobs), int(side) if side else resolution


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose validation IoU is at least ``target``; None if none is."""
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--resolution", type=int, default=128, help="the source's side (and the targets' unless @side)")
    parser.add_argument("--model", default="fastscnn", help="the family of the source and the targets")
    parser.add_argument("--source", default=None, help="the source network's knobs (default: Fast-SCNN's baseline a=1,t=6,r=3,pp=0; "
                        "another family's defaults)")
    parser.add_argument("--target", action="append", help="KNOBS[@SIDE], repeatable (default for Fast-SCNN: five, see above; "
                        "required for another family)")
    parser.add_argument("--epochs", type=int, default=10, help="a whole training")
    parser.add_argument("--short", default="3", help="epochs of the short trainings, comma-separated")
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/inherit-bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    shorts = [int(s) for s in args.short.split(",")]
    if args.model != "fastscnn" and not args.target:
        parser.error(f"--target is required for {args.model} (the default targets are Fast-SCNN's)")
    source_knobs = args.source if args.source is not None else ("a=1,t=6,r=3,pp=0" if args.model == "fastscnn" else "")
    dataset = load_dataset(DataConfig.model_validate({"root": str(args.data.resolve())}))
    cache = DatasetCache(dataset)
    side = (args.resolution, args.resolution)

    def train(network: Network, epochs: int, folder: str, initial: InitialWeights | None = None) -> dict:
        began = time.perf_counter()
        result = train_network(network, dataset=dataset, training=TrainingConfig(epochs=epochs),
                               run_dir=args.output / folder, cache=cache, initial_weights=initial)
        metrics = result.metrics
        return {"test_iou": metrics["test_iou"], "epochs": metrics["epochs_run"], "train_s": metrics["train_seconds"],
                "wall_s": round(time.perf_counter() - began, 1), "val_curve": [h["val_iou"] for h in result.history]}

    source = Network.create(args.model, parse_knobs(source_knobs) if source_knobs else {}, side, num_classes=dataset.num_classes)
    source_result = train(source, args.epochs, f"source-{source.key}")
    weights = InitialWeights(load_checkpoint(args.output / f"source-{source.key}" / BEST)["state_dict"], f"source {source.key}")
    print(f"source {source.key}: test IoU {source_result['test_iou']:.4f} after {args.epochs} epochs", flush=True)

    rows = []
    for text in args.target or DEFAULT_TARGETS:
        knobs, target_side = parse_target(text, args.resolution)
        network = Network.create(args.model, knobs, (target_side, target_side), num_classes=dataset.num_classes)
        row = {"target": network.key}
        for epochs in (args.epochs, *shorts):
            row[f"scratch_{epochs}"] = train(network, epochs, f"{network.key}-scratch-{epochs}")
            row[f"inherited_{epochs}"] = train(network, epochs, f"{network.key}-inherited-{epochs}", weights)
        whole = row[f"scratch_{args.epochs}"]["test_iou"]
        row["short_inherited_reaches_whole_scratch"] = {e: row[f"inherited_{e}"]["test_iou"] >= whole for e in shorts}
        row["epochs_to_scratch_val_iou"] = epochs_to_reach(row[f"inherited_{args.epochs}"]["val_curve"],
                                                           max(row[f"scratch_{args.epochs}"]["val_curve"]))
        rows.append(row)
        figures = "  ".join(f"{how} {e}: {row[f'{how}_{e}']['test_iou']:.4f}"
                            for e in (args.epochs, *shorts) for how in ("scratch", "inherited"))
        print(f"{network.key}: {figures}  (epoch-1 val IoU scratch {row[f'scratch_{args.epochs}']['val_curve'][0]:.3f}, "
              f"inherited {row[f'inherited_{args.epochs}']['val_curve'][0]:.3f}; the inherited whole training passes the "
              f"scratch one's best val IoU at epoch {row['epochs_to_scratch_val_iou'] or 'never'})", flush=True)

    for epochs in (args.epochs, *shorts):
        gains = sorted(r[f"inherited_{epochs}"]["test_iou"] - r[f"scratch_{epochs}"]["test_iou"] for r in rows)
        print(f"{epochs} epochs: inherited - scratch test IoU, median {gains[len(gains) // 2]:+.4f} "
              f"[{gains[0]:+.4f}, {gains[-1]:+.4f}] over {len(rows)} targets", flush=True)
    reached_at = sorted(r["epochs_to_scratch_val_iou"] or args.epochs + 1 for r in rows)
    print(f"epochs the inherited whole training needs to reach the scratch one's best val IoU ({args.epochs} epochs): "
          f"median {reached_at[len(reached_at) // 2]} [{reached_at[0]}, {reached_at[-1]}]", flush=True)
    for epochs in shorts:
        reached = sum(r["short_inherited_reaches_whole_scratch"][epochs] for r in rows)
        print(f"inherited, {epochs} epochs, reaches the whole ({args.epochs}-epoch) scratch training's test IoU: "
              f"{reached} of {len(rows)} targets", flush=True)
    if args.json:
        print(json.dumps({"source": {"network": source.key, **source_result}, "targets": rows, "epochs": args.epochs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
