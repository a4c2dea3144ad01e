"""Is the front the same when the search is run again? Without confirmation rounds, and with them.

    python benchmarks/front_stability.py [--quick] [--threads 2] [--rounds 5] [--budget-s 90] [--json]

**Candidates.** The same 20 Fast-SCNN networks every pass: resolution {96, 128,
160, 192, 256} x (a, t) in {(0.25, 6), (0.5, 2), (0.5, 6), (1, 6)}, r=3, pp=1,
exported untrained once (``optiseg.export.export_onnx``): latency does not
depend on the weights. Their quality is a **pseudo-IoU from a fixed formula**
(no training), rising with resolution and width as trained IoUs do:
``iou = 0.97 - 0.08 * 96 / resolution - 0.05 * (1 - a) - 0.01 * (6 - t) / 4 -
0.002 * (index % 3)``, so the front is a real trade-off and only latency can move it.

**Passes.** Three independent passes, each like a search: every candidate
measured once, in a shuffled order of its own (seeded), by the local runner with
the search's protocol (``--threads`` threads, 10 warm-up runs, >= 50 runs and >= 2 s;
``--quick``: 3 warm-up, >= 20 runs, >= 0.5 s). Each pass's records go through
:func:`optiseg.results.pareto_front` (the front a search shows) and then through
what ``optiseg confirm`` does at the end of a search: the front and the plans
within noise of it (:func:`optiseg.search.confirm.choose_plans`, margin 10 %),
as many as 3 rounds of fit in ``--budget-s``, measured in interleaved rounds
(:func:`~optiseg.search.confirm.run_rounds`, up to ``--rounds``), revised
(median of round medians, 90 % order-statistic interval) and the front
recomputed by :func:`optiseg.results.confirmed_front` (ties kept on it).

**Printed.** Each pass's front without and with confirmation (members by
resolution/a/t; ``~`` marks a member tied with another), the pairwise Jaccard
index of the memberships (|A & B| / |A | B|), their mean, and whether the three
fronts are identical. About 7 minutes on 2 cores (``--quick``: under 3).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESOLUTIONS = (96, 128, 160, 192, 256)
KNOBS = ((0.25, 6), (0.5, 2), (0.5, 6), (1.0, 6))
OBJECTIVES = (("iou", "maximize"), ("latency_ms", "minimize"))
PASSES = 3


def candidates() -> list[dict]:
    out = []
    for index, (resolution, (a, t)) in enumerate(itertools.product(RESOLUTIONS, KNOBS)):
        iou = 0.97 - 0.08 * 96 / resolution - 0.05 * (1 - a) - 0.01 * (6 - t) / 4 - 0.002 * (index % 3)
        out.append({"index": index, "resolution": resolution, "a": a, "t": t, "iou": round(iou, 4),
                    "name": f"{resolution}/a{a:g}/t{t}"})
    return out


def export_all(folder: Path, cands: list[dict]) -> list[Path]:
    from optiseg.export import export_onnx
    from optiseg.models import build_model
    from optiseg.network import Network

    paths = []
    for c in cands:
        knobs = {"a": c["a"], "t": c["t"], "r": 3, "pp": 1}
        network = Network.create("fastscnn", knobs, c["resolution"], num_classes=1)
        path = folder / f"{network.key}.onnx"
        export_onnx(build_model("fastscnn", knobs, 1).eval(), path, network)
        paths.append(path)
    return paths


def record_of(number: int, c: dict, latency: dict):
    from optiseg.records import COMPLETE, TrialRecord

    return TrialRecord.make(
        number, COMPLETE, model="fastscnn", knobs={"a": c["a"], "t": c["t"], "r": 3, "pp": 1},
        resolution=f"{c['resolution']}x{c['resolution']}", iou=c["iou"], latency_ms=float(latency["median_ms"]),
        feasible=True, latency=latency, candidate=c["name"],
    )


def one_pass(runner, paths, cands, seed: int, rounds: int, budget_s: float, log) -> dict:
    from optiseg.records import apply_revision
    from optiseg.results import confirmed_front, pareto_front
    from optiseg.search.confirm import choose_plans, revision_of, run_rounds, within_budget

    order = list(range(len(cands)))
    random.Random(seed).shuffle(order)
    started = time.perf_counter()
    latencies: dict[int, dict] = {}
    for i in order:  # like a search: one measurement per candidate, one after the other
        latencies[i] = runner.measure(paths[i]).to_dict()
    search_s = time.perf_counter() - started
    trial_records = [record_of(i, cands[i], latencies[i]) for i in range(len(cands))]
    first_front = pareto_front(trial_records, OBJECTIVES)

    choices = choose_plans(trial_records, OBJECTIVES)
    taken, left_out = within_budget(choices, budget_s)
    done = run_rounds(runner, [paths[c.record.number] for c in taken], rounds=rounds, budget_s=budget_s)
    revisions = {c.record.plan_key: revision_of(c.record, medians) for c, medians in zip(taken, done.medians)}
    revised = [apply_revision(r, revisions[r.plan_key]) if r.plan_key in revisions else r for r in trial_records]
    confirmed = confirmed_front(revised, OBJECTIVES)
    log(f"pass {seed + 1}: search {search_s:.0f} s, front {len(first_front)}; confirmed {len(taken)} plans "
        f"({len(left_out)} left out by the budget) in {done.count} rounds, {done.spent_s:.0f} s; "
        f"confirmed front {len(confirmed.members)}, {len(confirmed.ties)} tied")
    return {
        "front": sorted(r.candidate for r in first_front),
        "confirmed_front": sorted(r.candidate for r in confirmed.members),
        "tied": sorted(r.candidate for r in confirmed.members if confirmed.tied_with(r.number)),
        "chosen": len(choices), "confirmed_plans": len(taken), "rounds": done.count, "search_s": round(search_s, 1),
        "confirm_s": round(done.spent_s, 1), "load_1m": latencies[order[-1]].get("facts", {}).get("load_1m"),
        "first_ms": {cands[i]["name"]: round(float(latencies[i]["median_ms"]), 4) for i in range(len(cands))},
        "confirmed_ms": {key.split("@")[0]: [round(v.low_ms, 4), round(v.latency_ms, 4), round(v.high_ms, 4)]
                         for key, v in revisions.items()},
    }


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(fronts: list[list[str]]) -> dict:
    pairs = {f"{i + 1}-{j + 1}": round(jaccard(fronts[i], fronts[j]), 3) for i, j in itertools.combinations(range(len(fronts)), 2)}
    return {"pairwise_jaccard": pairs, "mean_jaccard": round(sum(pairs.values()) / len(pairs), 3),
            "identical": all(set(f) == set(fronts[0]) for f in fronts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timing protocol and budget: under 3 minutes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=None, help="device seconds per confirmation (default 90; --quick 30)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from optiseg.config.device import DeviceConfig
    from optiseg.devices import make_runner

    measure = ({"threads": args.threads, "warmup": 3, "min_runs": 20, "min_seconds": 0.5} if args.quick else
               {"threads": args.threads, "warmup": 10, "min_runs": 50, "min_seconds": 2.0})
    budget_s = args.budget_s if args.budget_s is not None else (30.0 if args.quick else 90.0)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    cands = candidates()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_all(Path(tmp), cands)
        with make_runner(DeviceConfig(measure=measure)) as runner:
            passes = [one_pass(runner, paths, cands, seed, args.rounds, budget_s, log) for seed in range(PASSES)]
    report = {
        "settings": {**measure, "rounds": args.rounds, "budget_s": budget_s, "candidates": len(cands),
                     "cpu": platform.processor() or platform.machine()},
        "passes": passes,
        "without_confirmation": stability([p["front"] for p in passes]),
        "with_confirmation": stability([p["confirmed_front"] for p in passes]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(json.dumps(report["settings"]))
    for label, key in (("without confirmation", "front"), ("after confirmation rounds", "confirmed_front")):
        print(f"\n{label}:")
        for number, p in enumerate(passes, 1):
            names = [n + ("~" if n in p["tied"] and key == "confirmed_front" else "") for n in p[key]]
            print(f"  pass {number}: {len(names)} members: {' '.join(names)}")
        figures = report["without_confirmation" if key == "front" else "with_confirmation"]
        pairs = ", ".join(f"{k} {v:.3f}" for k, v in figures["pairwise_jaccard"].items())
        print(f"  Jaccard {pairs}; mean {figures['mean_jaccard']:.3f}; identical: {'yes' if figures['identical'] else 'no'}")
    print("\nconfirmation per pass: " + "; ".join(
        f"{p['confirmed_plans']} of {p['chosen']} chosen plans, {p['rounds']} rounds, {p['confirm_s']:.0f} s" for p in passes))
    print(f"total {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
