"""The latency model per device: how well each form predicts measured latencies, against MACs alone.

    python benchmarks/latency_model.py [--quick] [--threads 2] [--rounds 3] [--save FILE] [--json]
    python benchmarks/latency_model.py --study runs/quickstart      # a study's own measurements
    python benchmarks/latency_model.py --measurements FILE          # a set saved with --save

**Measurements.** With ``--study DIR``: every FP32 plan the study measured (one
per plan, no duplicates). Otherwise 30 Fast-SCNN candidates of the thesis grid,
(a, t, r) in {(1,6,1), (0.25,6,1), (0.125,6,2), (0.125,4,2), (0.125,2,2),
(0.125,2,1)} x resolution {96, 128, 160, 192, 256}, pp=1: each exported to
ONNX (``optiseg.export.export_onnx``) and timed by the local runner at
``--threads`` threads, in ``--rounds`` interleaved rounds (every candidate once
per round, alternate rounds in reverse order, so a drift of the machine hits
every candidate alike); the figure of a candidate is the median of its rounds.
About 5 minutes on 2 cores: 90 measurements of 2-3 s each, with the default
protocol (``--quick``: 2 rounds of 20 runs / 0.5 s, 1.5 minutes measured).

**Scores**, per form of :data:`optiseg.latency_model.FORMS` (``macs`` is the
MACs-only baseline, ``latency = k * MACs``):

* ``loo``: leave-one-out, each measurement predicted by a model fitted to all
  the others;
* ``n10``: ``--draws`` random draws of ``--train-size`` (10) measurements, the
  model fitted to them and scored on all the others; the mean over draws.

Each: Spearman rank correlation of predicted and measured latency (``rho``),
the share of predictions within +-10 % of the measurement, the median absolute
percentage error, the share of measurements inside the 90 % prediction
interval and that interval's median width (high / low). With several rounds,
``repeat_within_10pct`` is the share of candidates whose first round is within
+-10 % of the median of the others: what a model that knew the candidate's own
earlier measurement would score, the machine's noise floor.

Anchors from the literature: HELP (Lee et al., 2021) ranks latencies on a
Raspberry Pi 4 with rho 0.89 from 10 measured samples, FLOPs with 0.85;
nn-Meter (Zhang et al., 2021) predicts about 99 % of its CPU latencies within
+-10 % from kernel-level models built on thousands of measurements.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from optiseg.latency_model import (  # noqa: E402
    BASELINE_FORM,
    DEFAULT_FORM,
    FORMS,
    LatencyFeatures,
    LatencyModel,
    measurements_of,
)

GRID_KNOBS = ((1.0, 6, 1), (0.25, 6, 1), (0.125, 6, 2), (0.125, 4, 2), (0.125, 2, 2), (0.125, 2, 1))
GRID_RESOLUTIONS = (96, 128, 160, 192, 256)
COVERAGE = 0.9


def grid_networks():
    from optiseg.network import Network

    return [
        Network.create("fastscnn", {"a": a, "t": t, "r": r, "pp": 1}, resolution)
        for a, t, r in GRID_KNOBS
        for resolution in GRID_RESOLUTIONS
    ]


def measure_grid(threads: int, rounds: int, min_runs: int, min_seconds: float, warmup: int) -> list[dict]:
    """Export every grid network and time it with the local runner in ``rounds`` interleaved rounds."""
    from optiseg.config.device import DeviceConfig, MeasureSettings
    from optiseg.devices import LocalRunner
    from optiseg.export import export_onnx
    from optiseg.profile import profile_model

    settings = MeasureSettings(threads=threads, min_runs=min_runs, min_seconds=min_seconds, warmup=warmup)
    rows, paths = [], []
    with tempfile.TemporaryDirectory() as tmp, LocalRunner(DeviceConfig(kind="local", measure=settings)) as runner:
        for network in grid_networks():
            module = network.build()
            profile = profile_model(module, network.input_shape)
            path = Path(tmp) / f"{network.key}.onnx"
            export_onnx(module, path, network)
            paths.append(path)
            features = LatencyFeatures.from_profile(network, module, profile.macs, profile.params, profile.activation_mb)
            rows.append({"key": network.key, "features": features, "rounds": []})
        for round_index in range(rounds):
            started = time.perf_counter()
            order = range(len(rows)) if round_index % 2 == 0 else reversed(range(len(rows)))
            for index in order:
                rows[index]["rounds"].append(runner.measure(paths[index]).median_ms)
            print(f"round {round_index + 1}/{rounds}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    for row in rows:
        row["latency_ms"] = statistics.median(row["rounds"])
    return rows


def study_measurements(folder: str) -> list[dict]:
    from optiseg.records import load_records
    from optiseg.search import open_existing_study

    handle = open_existing_study(folder)
    return [{"key": None, "features": f, "latency_ms": y, "rounds": []} for f, y in measurements_of(load_records(handle.study))]


def scores(predicted: np.ndarray, low: np.ndarray, high: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    error = predicted / measured - 1.0
    return {
        "rho": float(spearmanr(predicted, measured).statistic),
        "within_10pct": float(np.mean(np.abs(error) <= 0.10)),
        "median_abs_pct_error": float(np.median(np.abs(error)) * 100),
        "interval_coverage": float(np.mean((measured >= low) & (measured <= high))),
        "interval_width": float(np.median(high / low)),
    }


def fit_and_predict(form: str, train: list[int], test: list[int], features, latency) -> np.ndarray:
    model = LatencyModel(form, coverage=COVERAGE)
    model.extend(((features[i], latency[i]) for i in train), track=False)
    predictions = [model.predict(features[i]) for i in test]
    return np.array([[p.median_ms, p.low_ms, p.high_ms] for p in predictions])


def evaluate(form: str, features, latency: np.ndarray, train_size: int, draws: int, seed: int) -> dict:
    n = len(latency)
    loo = np.vstack([fit_and_predict(form, [j for j in range(n) if j != i], [i], features, latency) for i in range(n)])
    result = {"loo": scores(loo[:, 0], loo[:, 1], loo[:, 2], latency)}
    if n > train_size + 2:
        rng = np.random.default_rng(seed)
        per_draw = []
        for _ in range(draws):
            train = sorted(int(i) for i in rng.choice(n, train_size, replace=False))
            test = [i for i in range(n) if i not in train]
            predicted = fit_and_predict(form, train, test, features, latency)
            per_draw.append(scores(predicted[:, 0], predicted[:, 1], predicted[:, 2], latency[test]))
        result[f"n{train_size}"] = {key: float(np.mean([d[key] for d in per_draw])) for key in per_draw[0]}
    return result


def noise_floor(rows: list[dict]) -> float | None:
    """Share of candidates whose first round is within +-10 % of the median of their other rounds."""
    repeated = [row["rounds"] for row in rows if len(row["rounds"]) >= 2]
    if not repeated:
        return None
    return float(np.mean([abs(r[0] / statistics.median(r[1:]) - 1) <= 0.10 for r in repeated]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--study", help="a study folder: use its measurements instead of measuring the grid")
    source.add_argument("--measurements", help="a file written by --save: use it instead of measuring")
    parser.add_argument("--quick", action="store_true", help="2 rounds of a short protocol, 100 draws")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick: 2)")
    parser.add_argument("--train-size", type=int, default=10)
    parser.add_argument("--draws", type=int, default=None, help="random training sets (default 200; --quick: 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the measurements to this JSON file (read back with --measurements)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    draws = args.draws or (100 if args.quick else 200)

    if args.study:
        rows, origin = study_measurements(args.study), f"study {args.study}"
    elif args.measurements:
        saved = json.loads(Path(args.measurements).read_text(encoding="utf-8"))
        rows = [{**row, "features": LatencyFeatures.from_dict(row["features"])} for row in saved["rows"]]
        origin = f"{args.measurements} ({saved.get('origin', '')})"
    else:
        protocol = dict(min_runs=20, min_seconds=0.5, warmup=5) if args.quick else dict(min_runs=50, min_seconds=2.0, warmup=10)
        rows = measure_grid(args.threads, rounds, **protocol)
        origin = (f"Fast-SCNN grid on {platform.node()}, {args.threads} threads, {rounds} rounds of "
                  f"{protocol['min_runs']} runs / {protocol['min_seconds']} s")
    if len(rows) < 5:
        raise SystemExit(f"error: {len(rows)} measurements are too few to evaluate a latency model (need 5 or more)")
    if args.save:
        saved_rows = [{**row, "features": row["features"].as_dict()} for row in rows]
        Path(args.save).write_text(json.dumps({"origin": origin, "rows": saved_rows}, indent=1), encoding="utf-8")

    features = [row["features"] for row in rows]
    latency = np.array([row["latency_ms"] for row in rows])
    results = {form: evaluate(form, features, latency, args.train_size, draws, args.seed) for form in FORMS}
    best = max(results, key=lambda form: (results[form]["loo"]["within_10pct"], results[form]["loo"]["rho"]))
    report = {
        "measurements": {"origin": origin, "count": len(rows), "latency_ms_range": [float(latency.min()), float(latency.max())],
                         "repeat_within_10pct": noise_floor(rows)},
        "coverage": COVERAGE, "train_size": args.train_size, "draws": draws,
        "default_form": DEFAULT_FORM, "baseline_form": BASELINE_FORM, "best_loo_form": best,
        "forms": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{len(rows)} measurements: {origin}; latency {latency.min():.3f}-{latency.max():.3f} ms")
    if report["measurements"]["repeat_within_10pct"] is not None:
        print(f"noise floor: first round within +-10 % of the others for {report['measurements']['repeat_within_10pct']:.0%} of candidates")
    split = f"n{args.train_size}"
    print(f"\n{'form':10s} | {'leave-one-out':^35s} | {f'{args.train_size} training samples, {draws} draws':^35s}")
    header = f"{'rho':>6s} {'+-10%':>6s} {'MdAPE':>6s} {'cover':>6s} {'width':>7s}"
    print(f"{'':10s} | {header} | {header}")
    for form, result in results.items():
        cells = []
        for part in ("loo", split):
            s = result.get(part)
            cells.append(f"{'n/a':^35s}" if s is None else
                         f"{s['rho']:6.3f} {s['within_10pct']:6.0%} {s['median_abs_pct_error']:5.1f}% "
                         f"{s['interval_coverage']:6.0%} {s['interval_width']:6.2f}x")
        tag = "  (default)" if form == DEFAULT_FORM else "  (baseline)" if form == BASELINE_FORM else ""
        print(f"{form:10s} | {cells[0]} | {cells[1]}{tag}")
    print(f"\nbest leave-one-out form: {best}. MdAPE: median absolute % error; cover: share of measurements inside "
          f"the {COVERAGE:.0%} prediction interval; width: its median high/low")


if __name__ == "__main__":
    from optiseg.errors import OptisegError

    try:
        main()
    except OptisegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
