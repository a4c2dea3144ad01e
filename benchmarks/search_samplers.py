"""Which sampler finds the IoU-latency front fastest, and how much better than random search is optiseg's default?

Method. ``configs/sampler-table.yaml`` evaluates every candidate of a 90-candidate
intermediate-tier space on the real packages data once, with a real optiseg search
(export, latency on this machine, 10 epochs of training). This script then replays
seeded searches against that table through the same pieces a search uses (search
space, sampler factory, baseline first, duplicates cost a trial, too-slow candidates
PRUNED with a violated latency constraint and no IoU). Training is seeded, so a
replayed trial returns what running it again would; each trial is charged the
export, measurement and training time its candidate really took.

    python benchmarks/search_samplers.py compare   # default vs random, 12 trials, 3 seeds (issue 5)
    python benchmarks/search_samplers.py choose    # TPE / GP / NSGA-II / random at 10..60 trials
    options: --table-config benchmarks/configs/sampler-table.yaml --max-latency-ms X --resolutions 96 128 ... --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from optiseg.config import load_config
from optiseg.results import COMPLETE, default_reference_latency, hypervolume, load_records
from optiseg.search import build_search_space, make_sampler, open_existing_study
from optiseg.search.sampler import grid_queue, resolve_sampler_name

HERE = Path(__file__).resolve().parent


def load_table(config_path: Path, resolutions: list[int] | None):
    """The table's search space (optionally narrowed to some resolutions) and its evaluated candidates."""
    loaded = load_config(config_path)
    handle = open_existing_study(config_path)
    records = [r for r in load_records(handle.study) if r.status == COMPLETE and r.duplicate_of is None]
    config = loaded.config
    overrides = dict(config.search_space)
    if resolutions:
        overrides["resolution"] = resolutions
    space = build_search_space(config.model, config.effort, overrides, config.resolution)
    evaluated = {r.candidate: r for r in records}
    keys = [space.network(params).key for params in grid_queue(space)]
    table = {key: evaluated[key] for key in keys if key in evaluated}
    missing = space.size - len(table)
    if missing:
        sys.exit(f"the table has {len(table)} of {space.size} candidates: run `optiseg search {config_path}` "
                 "to finish it, or narrow it with --resolutions")
    return space, table


def replay(space, table, sampler_name: str, n_trials: int, seed: int, max_latency_ms: float | None, reference: tuple[float, float]):
    """One search replayed against the table; returns the hypervolume after each trial and the trials' timings."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = make_sampler(sampler_name, space, seed=seed, n_trials=n_trials, latency_constrained=max_latency_ms is not None)
    study.enqueue_trial(space.baseline_params())
    history, points, timings = [], [], []
    for _ in range(n_trials):
        trial = study.ask()
        record = table[space.suggest(trial).key]
        timings.append(record.timings)
        if max_latency_ms is not None:
            trial.set_constraint("latency_ms", record.latency_ms - max_latency_ms)
            if record.latency_ms > max_latency_ms:
                study.tell(trial, state=TrialState.PRUNED)
                history.append(hypervolume(points, *reference))
                continue
        study.tell(trial, [record.iou, record.latency_ms])
        points.append((record.iou, record.latency_ms))
        history.append(hypervolume(points, *reference))
    return history, timings


def best_possible(table, reference: tuple[float, float], max_latency_ms: float | None) -> float:
    points = [(r.iou, r.latency_ms) for r in table.values() if max_latency_ms is None or r.latency_ms <= max_latency_ms]
    return hypervolume(points, *reference)


def reference_point(table, args) -> tuple[float, float]:
    """(latency, IoU) the hypervolume is measured from: the constraint or 1.1 x the slowest, and the table's worst IoU."""
    latency = default_reference_latency(table.values(), args.max_latency_ms)
    iou = args.reference_iou if args.reference_iou is not None else min(r.iou for r in table.values())
    return latency, iou


def compare(space, table, args) -> dict:
    reference = reference_point(table, args)
    optimum = best_possible(table, reference, args.max_latency_ms)
    rows = {}
    for sampler in ("auto", "random"):
        finals, all_timings = [], []
        for seed in range(args.seeds):
            history, timings = replay(space, table, sampler, args.trials, seed, args.max_latency_ms, reference)
            finals.append(history[-1] / optimum)
            all_timings += timings
        split = {key: statistics.median(t.get(key, 0.0) for t in all_timings) for key in ("export_s", "measure_s", "train_s")}
        label = f"default (auto = {resolve_sampler_name(sampler, space, args.trials, args.max_latency_ms is not None)})"
        rows[label if sampler == "auto" else sampler] = {
            "hypervolume_fraction_per_seed": [round(v, 4) for v in finals],
            "mean": round(statistics.mean(finals), 4),
            "median_trial_seconds": {k: round(v, 2) for k, v in split.items()},
        }
    return {"trials": args.trials, "seeds": args.seeds,
            "reference": {"latency_ms": round(reference[0], 3), "iou": round(reference[1], 4)},
            "max_latency_ms": args.max_latency_ms, "samplers": rows}


def choose(space, table, args) -> dict:
    reference = reference_point(table, args)
    optimum = best_possible(table, reference, args.max_latency_ms)
    budgets = args.budgets
    result = {}
    for sampler in ("tpe", "gp", "nsga2", "random"):
        per_budget = {b: [] for b in budgets}
        for budget in budgets:  # a search of each budget, so that its sampler is set up for that budget
            for seed in range(args.seeds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    history, _ = replay(space, table, sampler, budget, seed, args.max_latency_ms, reference)
                per_budget[budget].append(history[-1] / optimum)
        result[sampler] = {b: round(statistics.mean(v), 4) for b, v in per_budget.items()}
        if not args.json:
            print(f"{sampler:7s} " + "  ".join(f"{b:3d} trials: {result[sampler][b]:.4f}" for b in budgets), flush=True)
    return {"seeds": args.seeds, "budgets": budgets, "max_latency_ms": args.max_latency_ms,
            "reference": {"latency_ms": round(reference[0], 3), "iou": round(reference[1], 4)},
            "mean_hypervolume_fraction": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("compare", "choose"))
    parser.add_argument("--table-config", type=Path, default=HERE / "configs" / "sampler-table.yaml")
    parser.add_argument("--max-latency-ms", type=float, default=None, help="replay with this latency constraint")
    parser.add_argument("--reference-iou", type=float, default=None,
                        help="the hypervolume's IoU reference (default: the worst IoU in the table)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None,
                        help="replay over these resolutions of the table only (default: all of them)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 30, 40, 60])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.seeds = args.seeds or (3 if args.mode == "compare" else 20)
    space, table = load_table(args.table_config, args.resolutions)
    latencies = sorted(r.latency_ms for r in table.values())
    if not args.json:
        print(f"table: {len(table)} candidates, latency {latencies[0]:.2f}..{latencies[-1]:.2f} ms, "
              f"IoU {min(r.iou for r in table.values()):.4f}..{max(r.iou for r in table.values()):.4f}")
    outcome = compare(space, table, args) if args.mode == "compare" else choose(space, table, args)
    print(json.dumps(outcome, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
