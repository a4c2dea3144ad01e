"""A study's Pareto front and its hypervolume, by metric name.

Pure functions over :class:`~optiseg.records.TrialRecord`s: the terminal
table, ``--json`` / ``--csv`` output, ``deploy`` and the HTML report all read
the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .records import (  # noqa: F401  (re-exported: the statuses and the record belong to optiseg.records)
    COMPLETE,
    FAILED,
    INTERRUPTED,
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


def _objective_pairs(objectives) -> tuple[tuple[str, str], ...]:
    if objectives is None:
        return DEFAULT_OBJECTIVES
    return tuple((o.metric, o.direction) if hasattr(o, "metric") else tuple(o) for o in objectives)


def pareto_front(records: Iterable[TrialRecord], objectives=None) -> list[TrialRecord]:
    """Feasible, complete records that no other one beats on every objective (default: IoU up, latency down).

    One record per plan (the first trial that evaluated it), sorted by latency
    (or by the last objective). ``objectives`` is a sequence of
    :class:`~optiseg.search.objectives.Objective` or ``(metric, direction)`` pairs.
    """
    pairs = _objective_pairs(objectives)
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
    signed = {id(p): tuple((1.0 if d == "maximize" else -1.0) * float(p.metric(m)) for m, d in pairs) for p in points}
    front = [p for p in points if not any(_dominates(signed[id(q)], signed[id(p)]) for q in points if q is not p)]
    sort_metric = "latency_ms" if any(m == "latency_ms" for m, _ in pairs) else pairs[-1][0]
    return sorted(front, key=lambda r: (r.metric(sort_metric), -(r.metric(pairs[0][0]) or 0.0), r.number))


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


def hypervolume_history(records: Sequence[TrialRecord], reference_latency_ms: float) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible complete trials up to it) in trial order."""
    history = []
    points: list[tuple[float, float]] = []
    for record in sorted(records, key=lambda r: r.number):
        if record.feasible and record.iou is not None and record.latency_ms is not None:
            points.append((record.iou, record.latency_ms))
        history.append((record.number, hypervolume(points, reference_latency_ms)))
    return history


def default_reference_latency(records: Iterable[TrialRecord], max_latency_ms: float | None) -> float:
    """The hypervolume's latency reference: the constraint if any, else 1.1 x the slowest measured candidate."""
    if max_latency_ms:
        return float(max_latency_ms)
    latencies = [r.latency_ms for r in records if r.latency_ms is not None and math.isfinite(r.latency_ms)]
    return 1.1 * max(latencies) if latencies else 1.0
