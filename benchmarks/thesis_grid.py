"""The thesis's final grid retrained here, against optiseg's multi-fidelity search at a fraction of its training.

1. **The grid** (stage 7 of the thesis, ``../shared/docs/thesis-stage7.csv``): Fast-SCNN at resolutions 512,
   256, 192, 160, 128, 96 (square) x (a, t, r) in {(1, 6, 1), (0.25, 6, 1), (0.125, 6, 2), (0.125, 4, 2),
   (0.125, 2, 2), (0.125, 2, 1)}, pp = 0, RGB: 36 networks (``--max-resolution 256``: the 30 up to 256).
   Trained with optiseg's trainer, as an optiseg study (the grid's networks queued; it resumes), each
   measured on this machine. Its front, hypervolume and training compute (epochs x images x MACs).
2. **optiseg's search** (expert tier, a space that contains the grid: resolutions 96..max in steps of 32,
   a in {1, .75, .5, .25, .125}, t in {6, 4, 2}, r in {3, 2, 1}, pp = 0), multi-fidelity (``fidelity:``),
   with ``budget.train_compute`` at each ``--fractions`` of the grid's compute, for each ``--seeds``, and
   ``max_latency_ms`` at the reference point's latency (the region the hypervolume counts; ``--no-latency-limit``
   searches without it: then the expensive corner of the space, e.g. the baseline a=1,t=6,r=3, eats the budget).
   ``--inherit``: with ``inherit_weights`` (a new network starts from the weights of a trained one that contains it).
3. The hypervolume of each front over the grid's, with one reference point for all (IoU: the grid's worst
   less 0.02; latency: 1.1 x the grid's slowest). Every study shares one output folder, hence one latency
   cache: a network measured once has one latency in every study.
4. The same ratio for the front that takes in, marked, the networks a search trained only to a lower rung
   (``optiseg front --partial``: each scored on the test split as it stands, a deployable file of its own).

    python benchmarks/thesis_grid.py --max-resolution 256                # the 30-network part, 3 seeds, 25 % and 50 %
    python benchmarks/thesis_grid.py --max-resolution 256 --epochs 12 --seeds 0 --fractions 0.25 -o runs/grid
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from optiseg.config import load_config
from optiseg.records import COMPLETE, load_records
from optiseg.results import PARTIAL, hypervolume_history, pareto_front, training_totals, with_partial
from optiseg.search import open_existing_study, run_search

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "packages"
RESOLUTIONS = (512, 256, 192, 160, 128, 96)
SHAPES = ((1, 6, 1), (0.25, 6, 1), (0.125, 6, 2), (0.125, 4, 2), (0.125, 2, 2), (0.125, 2, 1))


def grid_params(max_resolution: int) -> list[dict]:
    return [{"resolution": side, "a": a, "t": t, "r": r} for side in RESOLUTIONS if side <= max_resolution for a, t, r in SHAPES]


def study_config(name: str, args, epochs: int | None = None, **changes) -> dict:
    sides = list(range(96, args.max_resolution + 1, 32))
    return {
        "study": name, "model": "fastscnn", "effort": "expert", "resolution": args.max_resolution,
        "search_space": {"resolution": sides, "a": [1, 0.75, 0.5, 0.25, 0.125], "t": [6, 4, 2], "r": [3, 2, 1],
                         "pp": [0], "in_channels": [3]},
        "data": {"root": str(args.data.resolve())}, "training": {"epochs": epochs or args.epochs},
        "device": {"kind": "local", "measure": {"threads": args.threads}}, "confirm": False,
        "output": str(args.output.resolve()), **changes,
    }


def run(config: dict, folder: Path):
    path = folder / f"{config['study']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return run_search(load_config(path, for_search=True), quiet=True)


def front_points(records):
    return [(r.iou, r.latency_ms) for r in pareto_front(records)]


def hypervolume(records, reference):
    history = hypervolume_history([r for r in records if r.feasible], reference[1], reference=reference)
    return history[-1][1] if history else 0.0


def _ratio(value):
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-resolution", type=int, default=512, choices=RESOLUTIONS)
    parser.add_argument("--epochs", type=int, default=25, help="epochs of a whole training (the grid's, the searches' last rung)")
    parser.add_argument("--fractions", default="0.25,0.5", help="training budgets, as fractions of the grid's compute")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--search-epochs", type=int, default=None,
                        help="epochs of the searches' whole training (their last rung), default --epochs; fewer pay "
                             "with --inherit, whose networks reach the scratch IoU sooner (the grid keeps --epochs)")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--min-epochs", type=int, default=1, help="epochs of the lowest rung (default 1: a cheap first look)")
    parser.add_argument("--no-latency-limit", action="store_true",
                        help="search without max_latency_ms (default: the reference point's latency, the region the "
                             "hypervolume counts, as a user who wants real time would set it)")
    parser.add_argument("--inherit", action="store_true",
                        help="searches with inherit_weights: a new network starts from a trained one that contains it")
    parser.add_argument("--tag", default="", help="appended to the searches' study names (a second set of searches "
                                                  "beside the first, e.g. after a change to the search)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/thesis-grid"), help="one folder for every study (resumes)")
    parser.add_argument("--grid-only", action="store_true", help="train and report the grid, no search")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    grid = grid_params(args.max_resolution)
    started = time.perf_counter()

    # 1. The grid: its networks queued behind the study's baseline (always a study's first trial).
    name = f"grid-{args.max_resolution}"
    config = study_config(name, args, budget={"n_trials": 1}, sampler="random")
    run(config, args.output)
    handle = open_existing_study(args.output / name)
    for params in grid:
        handle.study.enqueue_trial(params, skip_if_exists=True)
    config["budget"] = {"n_trials": len(grid) + 1}
    run(config, args.output)
    grid_records = load_records(open_existing_study(args.output / name).study)
    members = {(f"{p['resolution']}x{p['resolution']}", float(p["a"]), p["t"], p["r"]) for p in grid}
    grid_only = [r for r in grid_records if r.status == COMPLETE and r.duplicate_of is None  # not the study's baseline
                 and (r.resolution, float(r.knobs["a"]), r.knobs["t"], r.knobs["r"]) in members]
    compute = training_totals(grid_only)["compute_macs"]
    reference = (max(0.0, min(r.iou for r in grid_only) - 0.02), 1.1 * max(r.latency_ms for r in grid_only))
    grid_hv = hypervolume(grid_only, reference)
    grid_s = time.perf_counter() - started
    lines = [f"grid ({len(grid_only)} networks, {args.epochs} epochs): compute {compute:.4g} MAC, "
             f"front {len(front_points(grid_only))} networks, hypervolume {grid_hv:.5g} "
             f"(reference IoU {reference[0]:.4f}, latency {reference[1]:.3f} ms), {grid_s / 60:.1f} min"]
    print(lines[0], flush=True)

    # 2. optiseg's multi-fidelity search at fractions of that compute.
    rows = []
    search_epochs = args.search_epochs or args.epochs
    if args.grid_only:
        args.fractions = ""
    for fraction in (float(f) for f in args.fractions.split(",") if f):
        for seed in (int(s) for s in args.seeds.split(",")):
            began = time.perf_counter()
            study = (f"search-{args.max_resolution}-{int(fraction * 100)}pct-seed{seed}"
                     f"{'-inherit' if args.inherit else ''}{f'-{search_epochs}ep' if search_epochs != args.epochs else ''}"
                     f"{'-' + args.tag if args.tag else ''}")
            limit = {} if args.no_latency_limit else {"constraints": {"max_latency_ms": round(reference[1], 4)}}
            run(study_config(study, args, seed=seed, fidelity={"eta": args.eta, "min_epochs": args.min_epochs},
                             epochs=search_epochs, **({"inherit_weights": True} if args.inherit else {}),
                             budget={"n_trials": 10_000, "train_compute": fraction * compute}, **limit), args.output)
            records = load_records(open_existing_study(args.output / study).study)
            spent = training_totals(records)
            hv = hypervolume(records, reference)
            marked = with_partial(records)  # the front that takes partial networks in, marked (`front --partial`)
            hv_partial = hypervolume(marked, reference)
            row = {"fraction": fraction, "seed": seed, "compute_macs": spent["compute_macs"],
                   "compute_share": spent["compute_macs"] / compute, "networks": spent["networks"],
                   "fully_trained": len({r.candidate for r in records if r.status == COMPLETE}),
                   "front": front_points(records), "hypervolume": hv, "ratio": hv / grid_hv if grid_hv else None,
                   "front_with_partial": [(r.iou, r.latency_ms, r.status) for r in pareto_front(marked)],
                   "hypervolume_with_partial": hv_partial, "ratio_with_partial": hv_partial / grid_hv if grid_hv else None,
                   "minutes": (time.perf_counter() - began) / 60}
            rows.append(row)
            partial_members = sum(1 for *_, status in row["front_with_partial"] if status == PARTIAL)
            print(f"search {int(fraction * 100)} % seed {seed} ({search_epochs} epochs{', inherited weights' if args.inherit else ''}): {row['networks']} networks ({row['fully_trained']} trained "
                  f"fully), compute {row['compute_share']:.2f} of the grid's, front {len(row['front'])}, hypervolume "
                  f"{hv:.5g}, ratio {_ratio(row['ratio'])}; with partial networks (marked): front {len(row['front_with_partial'])} "
                  f"({partial_members} partial), ratio {_ratio(row['ratio_with_partial'])}; {row['minutes']:.1f} min", flush=True)
    for fraction in sorted({r["fraction"] for r in rows}):
        for key, label in (("ratio", "whole networks"), ("ratio_with_partial", "with partial networks, marked")):
            ratios = sorted(r[key] or 0.0 for r in rows if r["fraction"] == fraction)
            print(f"at {int(fraction * 100)} % of the grid's compute, {label}: hypervolume ratio median "
                  f"{ratios[len(ratios) // 2]:.3f} [{ratios[0]:.3f}, {ratios[-1]:.3f}] over {len(ratios)} seeds", flush=True)
    if args.json:
        print(json.dumps({"grid": {"networks": len(grid_only), "compute_macs": compute, "hypervolume": grid_hv,
                                   "front": front_points(grid_only), "reference": reference, "minutes": grid_s / 60},
                          "searches": rows, "epochs": args.epochs, "search_epochs": search_epochs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
