"""A study's trials as plain records, its Pareto front and its hypervolume.

Pure functions over :class:`TrialRecord`s: the terminal table, ``--json`` /
``--csv`` output and the HTML report all read the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# What became of a trial (the "status" user attribute; failures have none).
COMPLETE = "complete"  # measured and trained: both objectives known
TOO_SLOW = "too_slow"  # measured, slower than max_latency_ms: not trained, IoU unknown
FAILED = "failed"  # an error; see `error`
RUNNING = "running"
WAITING = "waiting"  # queued (the baseline, a grid candidate, a retry), not started yet
SKIPPED = "skipped"  # asked after the global budget was used up by other workers


@dataclass(frozen=True)
class TrialRecord:
    number: int
    status: str
    candidate: str | None = None
    model: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    resolution: str | None = None
    in_channels: int | None = None
    params: int | None = None
    macs: int | None = None
    activation_mb: float | None = None
    onnx_mb: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    iou: float | None = None
    feasible: bool = False
    violations: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    artifacts: str | None = None
    error: str | None = None
    retry_of: int | None = None
    duplicate_of: int | None = None
    imported_from: str | None = None
    worker: str | None = None
    seconds: float | None = None

    @property
    def fps(self) -> float | None:
        return 1000.0 / self.latency_ms if self.latency_ms else None

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["fps"] = self.fps
        return row


def record_from_trial(trial) -> TrialRecord:
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial`` written by optiseg."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        status = attrs.get("status", COMPLETE)
    elif trial.state == TrialState.PRUNED:
        status = attrs.get("status", TOO_SLOW)
    elif trial.state == TrialState.RUNNING:
        status = RUNNING
    elif trial.state == TrialState.WAITING:
        status = WAITING
    elif attrs.get("status") == SKIPPED:
        status = SKIPPED
    else:
        status = FAILED
    violations = {k: v for k, v in trial.constraints.items() if v > 0}
    iou = attrs.get("iou") if status == COMPLETE else None
    seconds = trial.duration.total_seconds() if trial.duration else None
    return TrialRecord(
        number=trial.number,
        status=status,
        candidate=attrs.get("candidate"),
        model=attrs.get("model"),
        knobs=dict(attrs.get("knobs") or {}),
        resolution=attrs.get("resolution"),
        in_channels=attrs.get("in_channels"),
        params=attrs.get("params"),
        macs=attrs.get("macs"),
        activation_mb=attrs.get("activation_mb"),
        onnx_mb=attrs.get("onnx_mb"),
        latency_ms=attrs.get("latency_ms"),
        latency_p90_ms=(attrs.get("latency") or {}).get("p90_ms"),
        iou=iou,
        feasible=status == COMPLETE and not violations,
        violations=violations,
        timings=dict(attrs.get("timings") or {}),
        metrics=dict(attrs.get("metrics") or {}),
        latency=dict(attrs.get("latency") or {}),
        artifacts=attrs.get("artifacts"),
        error=attrs.get("error"),
        retry_of=attrs.get("optiseg_retry_of"),
        duplicate_of=attrs.get("duplicate_of"),
        imported_from=attrs.get("imported_from"),
        worker=attrs.get("worker"),
        seconds=seconds,
    )


def load_records(study) -> list[TrialRecord]:
    return [record_from_trial(t) for t in study.get_trials(deepcopy=False)]


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Feasible, complete records that no other one beats on both IoU (higher) and latency (lower).

    One record per candidate (the first trial that evaluated it), sorted by latency.
    """
    seen: set[str | None] = set()
    points = []
    for record in sorted(records, key=lambda r: r.number):
        if not record.feasible or record.iou is None or record.latency_ms is None:
            continue
        if record.candidate in seen:
            continue
        seen.add(record.candidate)
        points.append(record)
    front = [
        p
        for p in points
        if not any(_dominates(q, p) for q in points if q is not p)
    ]
    return sorted(front, key=lambda r: (r.latency_ms, -r.iou))


def _dominates(a: TrialRecord, b: TrialRecord) -> bool:
    return a.iou >= b.iou and a.latency_ms <= b.latency_ms and (a.iou > b.iou or a.latency_ms < b.latency_ms)


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
