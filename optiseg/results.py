"""A study's Pareto front and its hypervolume, by metric name.

Pure functions over :class:`~optiseg.records.TrialRecord`s: the terminal
table, ``--json`` / ``--csv`` output, ``deploy`` and the HTML report all read
the same figures. :func:`confirmed_front` is the front that knows latencies
are measured with noise: a plan whose latency was confirmed in interleaved
rounds (``optiseg confirm``) carries a confidence interval, and a faster
median inside another plan's interval is a tie, not a win.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import NamedTuple

from .records import (  # noqa: F401  (re-exported: the statuses and the record belong to optiseg.records)
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PARTIAL,
    RUNNING,
    SKIPPED,
    STATUSES,
    TOO_SLOW,
    WAITING,
    TrialRecord,
    load_records,
    read_record,
)

DEFAULT_OBJECTIVES = (("iou", "maximize"), ("latency_ms", "minimize"))


def objective_pairs(objectives) -> tuple[tuple[str, str], ...]:
    """``(metric, direction)`` pairs from Objectives or pairs (None: IoU up, latency down)."""
    if objectives is None:
        return DEFAULT_OBJECTIVES
    return tuple((o.metric, o.direction) if hasattr(o, "metric") else tuple(o) for o in objectives)


def with_partial(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """``records`` with each partial network that may stand on a front, marked, made feasible (status still
    ``partial``): a multi-fidelity network scored on the test split where its training stopped (see
    :func:`partial_figures`), within every constraint on those figures, and trained no further since (its
    network has no trial of a higher rung that finished). Fronts built from these show what a study holds
    now, whole networks and partial ones; without it, partial networks never stand on a front."""
    records = list(records)
    furthest: dict[str, int] = {}
    for record in records:
        if record.status in (COMPLETE, PARTIAL) and record.candidate is not None and record.duplicate_of is None:
            rung = record.rung if record.status == PARTIAL else math.inf
            furthest[record.candidate] = max(furthest.get(record.candidate, -1), rung)
    out = []
    for record in records:
        figures = partial_figures(record)
        if (figures is not None and record.rung == furthest.get(record.candidate)
                and all(v is not None and v <= 0 for v in (figures.get("constraints") or {}).values())):
            record = replace(record, feasible=True)
        out.append(record)
    return out


def partial_figures(record: TrialRecord) -> dict | None:
    """A partial trial's rung as scored on the test split (epochs, of, onnx, constraints ...), or None."""
    fidelity = record.evaluation.details.get("fidelity") or {}
    if record.status != PARTIAL or "onnx" not in fidelity or record.metric("iou") is None:
        return None
    return dict(fidelity)


def partial_epochs(record: TrialRecord) -> str | None:
    """``3 of 10 epochs`` for a partial trial (how far its network was trained), None for any other."""
    fidelity = record.evaluation.details.get("fidelity") or {}
    return f"{fidelity.get('epochs')} of {fidelity.get('of')} epochs" if record.status == PARTIAL else None


def evaluated_plans(records: Iterable[TrialRecord], objectives=None) -> list[TrialRecord]:
    """The records a front is chosen from: feasible, complete, every objective known; one per plan (its first trial)."""
    pairs = objective_pairs(objectives)
    seen: set[str | None] = set()
    points = []
    for record in sorted(records, key=lambda r: r.number):
        if not record.feasible or any(record.metric(name) is None for name, _ in pairs):
            continue
        key = record.plan_key or f"trial-{record.number}"
        if key in seen:
            continue
        seen.add(key)
        points.append(record)
    return points


def pareto_front(records: Iterable[TrialRecord], objectives=None) -> list[TrialRecord]:
    """Feasible, complete records that no other one beats on every objective (default: IoU up, latency down).

    One record per plan (the first trial that evaluated it), sorted by latency
    (or by the last objective). ``objectives`` is a sequence of
    :class:`~optiseg.search.objectives.Objective` or ``(metric, direction)`` pairs.
    Point values only; :func:`confirmed_front` weighs confirmed latencies' intervals.
    """
    pairs = objective_pairs(objectives)
    points = evaluated_plans(records, pairs)
    signed = {id(p): _signed(p, pairs) for p in points}
    front = [p for p in points if not any(_dominates(signed[id(q)], signed[id(p)]) for q in points if q is not p)]
    return _front_order(front, pairs)


def _signed(record: TrialRecord, pairs) -> tuple[float, ...]:
    return tuple((1.0 if d == "maximize" else -1.0) * float(record.metric(m)) for m, d in pairs)


def _front_order(front: list[TrialRecord], pairs) -> list[TrialRecord]:
    sort_metric = "latency_ms" if any(m == "latency_ms" for m, _ in pairs) else pairs[-1][0]
    return sorted(front, key=lambda r: (r.metric(sort_metric), -(r.metric(pairs[0][0]) or 0.0), r.number))


# ---------------------------------------------------------------- fronts that know the latency's noise

INTERVAL_METRICS = ("latency_ms", "device_latency_ms", "fps")  # what a confirmed latency gives an interval to


def latency_revision(record: TrialRecord) -> dict | None:
    """The :class:`~optiseg.records.LatencyRevision` applied to ``record`` (as a dict), or None."""
    revision = record.evaluation.details.get("latency_revision")
    return dict(revision) if revision else None


def metric_interval(record: TrialRecord, name: str) -> tuple[float, float] | None:
    """``(low, high)`` of a metric: a revised latency's confidence interval (``fps`` from it), else the value twice."""
    value = record.metric(name)
    if value is None:
        return None
    revision = latency_revision(record)
    if revision is None or name not in INTERVAL_METRICS:
        return (float(value), float(value))
    low, high = float(revision["low_ms"]), float(revision["high_ms"])
    if name == "fps":
        return (1000.0 / high, 1000.0 / low) if low > 0 else (float(value), float(value))
    return (low, high)


class ConfirmedFront(NamedTuple):
    """The front with the latencies' intervals weighed: its members, and which members are tied with which.

    ``ties[n]`` lists the members whose intervals overlap member ``n``'s on every
    objective that has one (latency): the front cannot say which of them is faster.
    """

    members: list[TrialRecord]
    ties: dict[int, tuple[int, ...]]

    def tied_with(self, number: int) -> tuple[int, ...]:
        return self.ties.get(number, ())


def confirmed_front(records: Iterable[TrialRecord], objectives=None) -> ConfirmedFront:
    """The front where a plan beats another only beyond the intervals, and ties are named.

    ``q`` dominates ``p`` when it is at least as good on every objective (point
    values: medians) *and* better on one of them beyond the intervals: for
    latency, ``q``'s ``high_ms`` below ``p``'s ``low_ms``. A plan without a
    revision has a point interval (its measured value), so with no revision at
    all this is :func:`pareto_front`. A plan a faster median would have pushed
    off the front stays on it, tied with that plan. Members are sorted as
    :func:`pareto_front` sorts them.
    """
    pairs = objective_pairs(objectives)
    points = evaluated_plans(records, pairs)
    signed = {id(p): _signed(p, pairs) for p in points}
    bounds = {id(p): _signed_intervals(p, pairs) for p in points}

    def dominates(q: TrialRecord, p: TrialRecord) -> bool:
        at_least = all(x >= y for x, y in zip(signed[id(q)], signed[id(p)]))
        return at_least and any(qb[0] > pb[1] for qb, pb in zip(bounds[id(q)], bounds[id(p)]))

    members = _front_order([p for p in points if not any(dominates(q, p) for q in points if q is not p)], pairs)
    noisy = [i for i, (metric, _) in enumerate(pairs) if metric in INTERVAL_METRICS]
    ties: dict[int, tuple[int, ...]] = {}
    if noisy:
        for p in members:
            tied = tuple(q.number for q in members if q is not p and all(
                bounds[id(q)][i][0] <= bounds[id(p)][i][1] and bounds[id(p)][i][0] <= bounds[id(q)][i][1] for i in noisy))
            if tied:
                ties[p.number] = tied
    return ConfirmedFront(members, ties)


def _signed_intervals(record: TrialRecord, pairs) -> tuple[tuple[float, float], ...]:
    """Each objective's interval with larger = better (a minimized metric's interval negated and flipped)."""
    out = []
    for metric, direction in pairs:
        low, high = metric_interval(record, metric)
        out.append((low, high) if direction == "maximize" else (-high, -low))
    return tuple(out)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (larger is better after signing)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def hypervolume(points: Iterable[tuple[float, float]], reference_latency_ms: float, reference_iou: float = 0.0) -> float:
    """Area dominated by (IoU, latency) points up to the reference point (IoU 0, ``reference_latency_ms``).

    Units: IoU x milliseconds. Points at or beyond the reference add nothing.
    """
    frontier: list[tuple[float, float]] = []  # fastest first, each better in IoU than all faster ones
    best_iou = reference_iou
    for latency, iou in sorted((lat, iou) for iou, lat in points if iou is not None and lat is not None):
        if latency < reference_latency_ms and iou > best_iou:
            frontier.append((latency, iou))
            best_iou = iou
    area = 0.0
    for index, (latency, iou) in enumerate(frontier):
        next_latency = frontier[index + 1][0] if index + 1 < len(frontier) else reference_latency_ms
        area += (next_latency - latency) * (iou - reference_iou)
    return area


def hypervolume_history(records: Sequence[TrialRecord], reference_latency_ms: float, objectives=None,
                        reference: tuple[float, float] | None = None) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible complete trials up to it) in trial order.

    Default objectives (IoU up, latency down): the area up to IoU 0 and ``reference_latency_ms``. Any other
    two objectives: the area up to ``reference`` (one value per objective, default :func:`reference_point`).
    """
    pairs = objective_pairs(objectives)
    if len(pairs) != 2:
        raise ValueError(f"a hypervolume is computed over two objectives, not {len(pairs)}")
    if pairs == DEFAULT_OBJECTIVES and reference is None:
        reference = (0.0, reference_latency_ms)
    reference = reference if reference is not None else reference_point(records, pairs)
    signs = tuple(1.0 if direction == "maximize" else -1.0 for _, direction in pairs)
    history = []
    points: list[tuple[float, float]] = []
    for record in sorted(records, key=lambda r: r.number):
        values = [record.metric(name) for name, _ in pairs]
        if record.feasible and all(v is not None for v in values) and (pairs != DEFAULT_OBJECTIVES or record.iou is not None):
            points.append((signs[0] * values[0], signs[1] * values[1]))
        history.append((record.number, _area(points, (signs[0] * reference[0], signs[1] * reference[1]))))
    return history


def reference_point(records: Iterable[TrialRecord], pairs) -> tuple[float, float]:
    """Per objective, a value worse than every feasible trial's: 0 for an IoU, else 10 % beyond the worst seen."""
    values = []
    for name, direction in pairs:
        seen = [v for r in records if r.feasible and (v := r.metric(name)) is not None and math.isfinite(v)]
        if direction == "maximize":
            values.append(0.0 if name.endswith("iou") or not seen else min(seen) - 0.1 * abs(min(seen)))
        else:
            values.append(1.1 * max(seen) if seen else 1.0)
    return values[0], values[1]


def _area(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` above ``reference`` (both coordinates: larger is better)."""
    frontier: list[tuple[float, float]] = []
    best_first = reference[0]
    for second, first in sorted(((b, a) for a, b in points), reverse=True):  # best second coordinate first
        if second > reference[1] and first > best_first:
            frontier.append((second, first))
            best_first = first
    area = 0.0
    for index, (second, first) in enumerate(frontier):
        next_second = frontier[index + 1][0] if index + 1 < len(frontier) else reference[1]
        area += (second - next_second) * (first - reference[0])
    return area


def default_reference_latency(records: Iterable[TrialRecord], max_latency_ms: float | None) -> float:
    """The hypervolume's latency reference: the constraint if any, else 1.1 x the slowest measured candidate."""
    if max_latency_ms:
        return float(max_latency_ms)
    latencies = [r.latency_ms for r in records if r.latency_ms is not None and math.isfinite(r.latency_ms)]
    return 1.1 * max(latencies) if latencies else 1.0


def training_totals(records: Iterable[TrialRecord]) -> dict[str, float | int]:
    """The study's training: networks trained here (imports left out), their compute (MACs) and wall seconds,
    each network counted once whatever the plans that deploy it."""
    compute: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for record in records:  # a network trained in rungs (multi-fidelity) counts its furthest training
        if record.status in (COMPLETE, PARTIAL) and record.imported_from is None and record.metric("train_compute") is not None:
            if float(record.metric("train_compute")) >= compute.get(record.candidate, -1.0):
                compute[record.candidate] = float(record.metric("train_compute"))
                seconds[record.candidate] = float(record.metric("train_s") or 0.0)
    return {"networks": len(compute), "compute_macs": sum(compute.values()), "seconds": sum(seconds.values())}
