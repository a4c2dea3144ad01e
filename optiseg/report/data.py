"""What the report shows, as plain data: pure functions over :class:`~optiseg.results.TrialRecord`s.

Each figure of the report has a function here that computes its data (a
NamedTuple) and one in :mod:`optiseg.report.figures` that draws it, so the
numbers are tested without a browser. Text meant for plotly's hover labels is
built here too; every string that came from the user is HTML-escaped in it
(plotly renders a subset of HTML in labels).
"""

from __future__ import annotations

import html
import json
import math
import shlex
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .._units import si
from ..config import EFFORTS
from ..models import format_knob_value
from ..plans import get_metric
from ..results import (
    COMPLETE,
    FAILED,
    RUNNING,
    SKIPPED,
    TOO_SLOW,
    TrialRecord,
    confirmed_front,
    DEFAULT_OBJECTIVES,
    default_reference_latency,
    hypervolume_history,
    reference_point,
    training_totals,
    pareto_front,
    partial_epochs,
    with_partial,
)

BASELINE_TIER = "baseline"
TIER_ORDER = (BASELINE_TIER, *EFFORTS)
TIMING_STAGES = (("profile_s", "build + profile"), ("export_s", "ONNX export"), ("measure_s", "latency"), ("train_s", "training"))
STATUS_ORDER = (COMPLETE, TOO_SLOW, FAILED, RUNNING, SKIPPED)


# ----------------------------------------------------------------------------------- values


def knob_values(record: TrialRecord) -> dict[str, Any]:
    """Every searchable knob of ``record``: the model's knobs plus ``resolution`` and ``in_channels``."""
    values: dict[str, Any] = dict(record.knobs)
    if record.resolution is not None:
        values["resolution"] = record.resolution
    if record.in_channels is not None:
        values["in_channels"] = record.in_channels
    if record.plan is not None:
        values["precision"] = record.precision
    return values


format_value = format_knob_value


def value_key(knob: str, value: Any) -> tuple:
    """Sort and compare key of a knob value: numbers by value, resolutions by pixel count ('192' == '192x192')."""
    if knob == "resolution":
        size = _resolution(value)
        if size is not None:
            return (0, size[0] * size[1], size[0], size[1])
    if isinstance(value, (bool, int, float)):
        return (0, float(value))
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def _resolution(value: Any) -> tuple[int, int] | None:
    from ..errors import UsageError
    from ..models import parse_resolution

    if isinstance(value, bool):
        return None
    try:
        return parse_resolution(tuple(value) if isinstance(value, list) else value)
    except (UsageError, TypeError, ValueError):
        return None


def candidate_tier(values: Mapping[str, Any], baseline: Mapping[str, Any], tiers: Mapping[str, str]) -> str:
    """The highest effort tier among the knobs whose value differs from the baseline; ``baseline`` if none does."""
    ranks = [
        EFFORTS.index(tiers[name])
        for name, base in baseline.items()
        if name in values and tiers.get(name) in EFFORTS and value_key(name, values[name]) != value_key(name, base)
    ]
    return EFFORTS[max(ranks)] if ranks else BASELINE_TIER


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def knobs_text(record: TrialRecord) -> str:
    """``a=0.5, t=6, r=3, pp=1`` (plus ``luma`` for one input channel, ``INT8`` for an INT8 plan); plain text, not escaped."""
    text = ", ".join(f"{name}={format_value(value)}" for name, value in record.knobs.items())
    return text + (", luma" if record.in_channels == 1 else "") + (", INT8" if record.precision == "int8" else "")


def hover_text(record: TrialRecord) -> str:
    """The hover label of one trial (plotly's HTML subset; user strings escaped)."""
    lines = [f"<b>trial {record.number}</b> · {_esc(record.status.replace('_', ' '))}"]
    lines.append(_esc(" ".join(str(part) for part in (record.model, record.resolution) if part)))
    if record.knobs or record.in_channels == 1:
        lines.append(_esc(knobs_text(record)))
    sizes = []
    if record.params is not None:
        sizes.append(f"params {record.params:,}")
    if record.macs is not None:
        sizes.append(f"MACs {record.macs / 1e6:,.1f} M")
    if sizes:
        lines.append(" · ".join(sizes))
    if record.latency_ms is not None:
        p90 = f" (p90 {record.latency_p90_ms:.2f})" if record.latency_p90_ms is not None else ""
        lines.append(f"latency {record.latency_ms:.2f} ms{p90} · {record.fps:.1f} fps")
    if record.iou is not None:
        lines.append(f"IoU {record.iou:.4f}" + ("" if record.feasible else " (violates a constraint)"))
    elif record.status == TOO_SLOW:
        lines.append("IoU: not trained (too slow)")
    elif record.status == FAILED and record.error:
        lines.append(_esc(_shorten(f"error: {record.error}", 160)))
    return "<br>".join(lines)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def measured(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Records with a latency, one per evaluation: trials that only copied another trial's figures are left out."""
    return [
        r for r in sorted(records, key=lambda r: r.number)
        if r.latency_ms is not None and math.isfinite(r.latency_ms) and r.latency_ms > 0 and r.duplicate_of is None
    ]


def status_counts(records: Iterable[TrialRecord]) -> dict[str, int]:
    """Trials per status, in a fixed order, plus ``duplicate`` (trials that reused an earlier trial's figures)."""
    records = list(records)
    counts = {status: sum(1 for r in records if r.status == status) for status in STATUS_ORDER}
    counts["duplicate"] = sum(1 for r in records if r.duplicate_of is not None)
    return counts


# ----------------------------------------------------------------------------------- trade-off plot


class PlotPoint(NamedTuple):
    number: int
    status: str
    latency_ms: float
    fps: float
    iou: float | None
    feasible: bool
    on_front: bool
    hover: str


class ConstraintLines(NamedTuple):
    max_latency_ms: float | None
    min_iou: float | None

    @property
    def min_fps(self) -> float | None:
        return 1000.0 / self.max_latency_ms if self.max_latency_ms else None


class ColorOption(NamedTuple):
    """One choice of the "colour by" switch: category labels in order, and each plotted trial's category."""

    name: str
    labels: tuple[str, ...]
    codes: Mapping[int, int]  # trial number -> index into labels


class TradeoffData(NamedTuple):
    """The IoU-fps and IoU-latency plot."""

    trained: tuple[PlotPoint, ...]  # complete trials, feasible or not
    not_trained: tuple[PlotPoint, ...]  # measured but without IoU: too slow, or failed after measuring
    front: tuple[PlotPoint, ...]  # sorted by latency
    constraints: ConstraintLines
    color_options: tuple[ColorOption, ...]
    unplaced: tuple[int, ...]  # failed trials without a latency
    duplicates: int


def searched_knobs(settings: Mapping[str, Any], records: Iterable[TrialRecord]) -> tuple[str, ...]:
    """The knobs the study searched: the stored search space's, else every knob that took two values."""
    choices = (settings.get("search_space") or {}).get("choices") or {}
    if choices:
        return tuple(choices)
    seen: dict[str, set] = {}
    for record in records:
        for name, value in knob_values(record).items():
            seen.setdefault(name, set()).add(value_key(name, value))
    return tuple(name for name, values in seen.items() if len(values) > 1)


def color_options(
    records: Sequence[TrialRecord], knobs: Sequence[str], baseline: Mapping[str, Any], tiers: Mapping[str, str]
) -> tuple[ColorOption, ...]:
    """Colour by effort tier, then by each searched knob; categories ordered by value."""
    options = []
    tier_of = {r.number: candidate_tier(knob_values(r), baseline, tiers) for r in records}
    labels = tuple(t for t in TIER_ORDER if t in tier_of.values())
    options.append(ColorOption("tier", labels, {n: labels.index(t) for n, t in tier_of.items()}))
    modes = {r.number: r.mode for r in records if r.mode}
    if len(set(modes.values())) > 1:  # several deployment modes on one front: colour (and filter, in the legend) by mode
        labels = tuple(sorted(set(modes.values())))
        options.append(ColorOption("mode", labels, {n: labels.index(m) for n, m in modes.items()}))
    for knob in knobs:
        values = {r.number: knob_values(r)[knob] for r in records if knob in knob_values(r)}
        labels, position = _categories(knob, values.values())
        options.append(ColorOption(knob, labels, {n: position[value_key(knob, v)] for n, v in values.items()}))
    return tuple(options)


def _categories(knob: str, values: Iterable[Any]) -> tuple[tuple[str, ...], dict[tuple, int]]:
    """The distinct values of ``knob`` as labels in value order, and each value key's index among them."""
    keyed = {value_key(knob, v): format_value(v) for v in values}
    ordered = sorted(keyed)
    return tuple(keyed[k] for k in ordered), {k: i for i, k in enumerate(ordered)}


def tradeoff_data(
    records: Sequence[TrialRecord],
    *,
    max_latency_ms: float | None = None,
    min_iou: float | None = None,
    knobs: Sequence[str] = (),
    baseline: Mapping[str, Any] | None = None,
    tiers: Mapping[str, str] | None = None,
    objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES,
) -> TradeoffData:
    """Points of every measured trial, the Pareto front (from :func:`optiseg.results.pareto_front`) and the constraints."""
    front_numbers = [r.number for r in pareto_front(records, objectives)]
    on_front = set(front_numbers)
    points = {}
    for record in measured(records):
        points[record.number] = PlotPoint(
            number=record.number,
            status=record.status,
            latency_ms=float(record.latency_ms),
            fps=float(record.fps),
            iou=record.iou,
            feasible=record.feasible,
            on_front=record.number in on_front,
            hover=hover_text(record),
        )
    trained = tuple(p for p in points.values() if p.status == COMPLETE and p.iou is not None)
    not_trained = tuple(p for p in points.values() if p.status in (TOO_SLOW, FAILED) and p.iou is None)
    unplaced = tuple(
        r.number for r in sorted(records, key=lambda r: r.number)
        if r.status == FAILED and r.number not in points and r.duplicate_of is None
    )
    plotted = [r for r in records if r.number in points]
    return TradeoffData(
        trained=trained,
        not_trained=not_trained,
        front=tuple(points[n] for n in front_numbers if n in points),
        constraints=ConstraintLines(max_latency_ms, min_iou),
        color_options=color_options(plotted, knobs, baseline or {}, tiers or {}),
        unplaced=unplaced,
        duplicates=sum(1 for r in records if r.duplicate_of is not None),
    )


# ----------------------------------------------------------------------------------- tables


class FrontRow(NamedTuple):
    number: int
    candidate: str | None
    model: str | None
    resolution: str | None
    knobs: str
    params: int | None
    macs: int | None
    activation_mb: float | None
    latency_ms: float
    latency_p90_ms: float | None
    fps: float
    iou: float
    class_iou: tuple[tuple[str, float | None], ...]
    deploy_command: str
    confirmed: str | None = None  # "[low, high] ms, N rounds" once confirmation rounds measured it again
    tied_with: tuple[int, ...] = ()  # members the intervals cannot order against this one
    partial: str | None = None  # "3 of 10 epochs" for a network a multi-fidelity study trained no further


def deploy_command(study_arg: str, record: TrialRecord) -> str:
    """The shell command that writes ``record``'s trained model to a deploy folder (arguments shell-quoted)."""
    target = f"deploy/{record.candidate}" if record.candidate else f"deploy/trial-{record.number}"
    return f"optiseg deploy {shlex.quote(study_arg)} --trial {record.number} -o {shlex.quote(target)}"


def front_rows(records: Sequence[TrialRecord], study_arg: str,
               objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES) -> tuple[FrontRow, ...]:
    """One row per Pareto-front trial, fastest first, with the command that deploys it."""
    rows = []
    front = confirmed_front(records, objectives)
    for record in front.members:
        revision = record.evaluation.details.get("latency_revision") or {}
        confirmed = None
        if revision.get("source") == "confirm":
            confirmed = (f"[{float(revision['low_ms']):.2f}, {float(revision['high_ms']):.2f}] ms, "
                         f"{len(revision.get('rounds') or ())} rounds (first {float(revision['first_ms']):.2f})")
        class_iou = record.metrics.get("test_class_iou")
        rows.append(FrontRow(
            number=record.number,
            candidate=record.candidate,
            model=record.model,
            resolution=record.resolution,
            knobs=knobs_text(record),
            params=record.params,
            macs=record.macs,
            activation_mb=record.activation_mb,
            latency_ms=float(record.latency_ms),
            latency_p90_ms=record.latency_p90_ms,
            fps=float(record.fps),
            iou=float(record.iou),
            class_iou=tuple((str(k), _number(v)) for k, v in class_iou.items()) if isinstance(class_iou, Mapping) else (),
            deploy_command=deploy_command(study_arg, record),
            confirmed=confirmed,
            tied_with=front.tied_with(record.number),
            partial=partial_epochs(record),
        ))
    return tuple(rows)


def partial_front_rows(records: Sequence[TrialRecord], study_arg: str,
                       objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES) -> tuple[FrontRow, ...]:
    """The partial networks on the front that takes them in, marked (:func:`optiseg.results.with_partial`)."""
    return tuple(row for row in front_rows(with_partial(records), study_arg, objectives) if row.partial)


class SplitRow(NamedTuple):
    """One way of running a network: all on the device, or cut at ``cut`` with ``bits`` on the link."""

    trial: int
    plan: str  # "all on device", "all on server", "after <stage>"
    bits: int | None
    device_ms: float | None
    link_ms: float | None
    server_ms: float | None
    latency_ms: float | None
    bytes_up: int | None
    iou: float | None
    on_front: bool


class SplitTable(NamedTuple):
    """Every plan of one network that has split plans, against its all-on-device and all-on-server plans."""

    network: str
    rows: tuple[SplitRow, ...]
    best: int | None  # the fastest row's trial


def split_tables(records: Sequence[TrialRecord], front: Sequence[TrialRecord]) -> tuple[SplitTable, ...]:
    """Per network with a plan on the front and split plans: each of its evaluated plans, in the order of its cuts."""
    on_front = {r.number for r in front}
    front_networks = {r.candidate for r in front}
    by_network: dict[str, list[TrialRecord]] = {}
    for record in records:
        if record.plan is not None and record.duplicate_of is None and record.latency_ms is not None:
            by_network.setdefault(record.candidate, []).append(record)
    tables = []
    for network, plans in by_network.items():
        if network not in front_networks or not any(r.mode == "split" for r in plans):
            continue
        rows = []
        for r in sorted(plans, key=lambda r: r.number):
            cut = r.plan.knob_dict.get("cut")
            name = "all on device" if r.mode != "split" else ("all on server" if cut == "server" else f"after {cut}")
            if r.mode not in ("split", "device"):
                name = f"{name} ({r.plan.label})"
            link = r.metric("link_bytes")
            rows.append(SplitRow(r.number, name, r.plan.knob_dict.get("bits"), r.metric("device_latency_ms"), r.metric("link_ms"),
                                 r.metric("server_latency_ms"), r.latency_ms, None if link is None else int(link),
                                 r.iou, r.number in on_front))
        best = min(rows, key=lambda row: row.latency_ms).trial if rows else None
        tables.append(SplitTable(network, tuple(rows), best))
    return tuple(tables)


class FailedRow(NamedTuple):
    number: int
    candidate: str | None
    error: str
    worker: str | None
    retried_by: int | None


def failed_rows(records: Sequence[TrialRecord]) -> tuple[FailedRow, ...]:
    """Failed trials with their error, and the trial that retried each one if any."""
    retries = {r.retry_of: r.number for r in records if r.retry_of is not None}
    return tuple(
        FailedRow(
            number=r.number,
            candidate=r.candidate,
            error=r.error or "no error recorded (interrupted or killed)",
            worker=r.worker,
            retried_by=retries.get(r.number),
        )
        for r in sorted(records, key=lambda r: r.number)
        if r.status == FAILED
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


# ----------------------------------------------------------------------------------- what mattered


class ImportanceData(NamedTuple):
    """Each knob's importance (ω², 0..1), most important first; a note where it cannot be computed."""

    iou: tuple[tuple[str, float], ...]
    latency: tuple[tuple[str, float], ...]
    iou_note: str | None
    latency_note: str | None


def omega_squared(groups: Sequence[Sequence[float]]) -> float | None:
    """ω²: the share of the variance of the values that their grouping explains, corrected for chance (one-way ANOVA).

    ``(SS_between - (k - 1) MS_within) / (SS_total + MS_within)``, clipped at 0;
    unlike the plain ratio SS_between / SS_total (η²), a knob that does nothing
    scores about 0 even with few trials. None when there are fewer than two
    groups or no more values than groups.
    """
    groups = [list(g) for g in groups if len(g)]
    values = [v for g in groups for v in g]
    n, k = len(values), len(groups)
    if k < 2 or n <= k:
        return None
    mean = sum(values) / n
    ss_total = sum((v - mean) ** 2 for v in values)
    if ss_total <= 1e-18:
        return 0.0
    ss_between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups)
    ms_within = max(0.0, ss_total - ss_between) / (n - k)
    return max(0.0, min(1.0, (ss_between - (k - 1) * ms_within) / (ss_total + ms_within)))


def knob_importance(records: Sequence[TrialRecord], knobs: Sequence[str]) -> ImportanceData:
    """How much each searched knob alone explains of IoU (trained candidates) and of latency (every measured one).

    One value per distinct candidate; latency enters as its logarithm, since
    knobs scale latency by factors. See :func:`omega_squared`.
    """
    evaluated = list({(r.candidate or r.number): r for r in measured(records) if r.status in (COMPLETE, TOO_SLOW)}.values())
    iou, iou_note = _importance([r for r in evaluated if r.iou is not None], knobs, lambda r: r.iou, "trained")
    latency, latency_note = _importance(evaluated, knobs, lambda r: math.log(r.latency_ms), "measured")
    return ImportanceData(iou, latency, iou_note, latency_note)


def _importance(records, knobs, target, what) -> tuple[tuple[tuple[str, float], ...], str | None]:
    if len(records) < 3:
        return (), f"not enough trials yet: {len(records)} {what} candidate(s), 3 or more are needed"
    scores, short = [], []
    for knob in knobs:
        groups: dict[tuple, list[float]] = {}
        for record in records:
            values = knob_values(record)
            if knob in values:
                groups.setdefault(value_key(knob, values[knob]), []).append(float(target(record)))
        if len(groups) < 2:
            continue
        score = omega_squared(list(groups.values()))
        if score is None:
            short.append(knob)
        else:
            scores.append((knob, score))
    if not scores:
        reason = f"more {what} candidates than values of {', '.join(short)} are needed" if short else f"no knob took two values among the {what} candidates"
        return (), f"not enough trials yet: {reason}"
    note = f"{', '.join(short)}: more {what} candidates than values are needed" if short else None
    return tuple(sorted(scores, key=lambda kv: (-kv[1], kv[0]))), note


class EffectPoint(NamedTuple):
    position: int  # index into KnobEffect.labels
    value: float
    number: int
    status: str


class KnobEffect(NamedTuple):
    """Latency and IoU of the measured trials against one knob's values, with the median per value."""

    knob: str
    labels: tuple[str, ...]
    latency: tuple[EffectPoint, ...]
    iou: tuple[EffectPoint, ...]
    latency_median: tuple[float | None, ...]
    iou_median: tuple[float | None, ...]


def knob_effects(records: Sequence[TrialRecord], knobs: Sequence[str]) -> tuple[KnobEffect, ...]:
    """One :class:`KnobEffect` per knob that took two or more values among the measured trials."""
    points = [r for r in measured(records) if r.status in (COMPLETE, TOO_SLOW)]
    effects = []
    for knob in knobs:
        present = [r for r in points if knob in knob_values(r)]
        labels, positions = _categories(knob, (knob_values(r)[knob] for r in present))
        if len(labels) < 2:
            continue
        latency, iou = [], []
        for r in present:
            position = positions[value_key(knob, knob_values(r)[knob])]
            latency.append(EffectPoint(position, float(r.latency_ms), r.number, r.status))
            if r.iou is not None:
                iou.append(EffectPoint(position, float(r.iou), r.number, r.status))
        effects.append(KnobEffect(
            knob=knob,
            labels=labels,
            latency=tuple(latency),
            iou=tuple(iou),
            latency_median=_medians(latency, len(labels)),
            iou_median=_medians(iou, len(labels)),
        ))
    return tuple(effects)


def _medians(points: Sequence[EffectPoint], n: int) -> tuple[float | None, ...]:
    groups: list[list[float]] = [[] for _ in range(n)]
    for point in points:
        groups[point.position].append(point.value)
    return tuple(statistics.median(g) if g else None for g in groups)


# ----------------------------------------------------------------------------------- progress and cost


class HypervolumeData(NamedTuple):
    """Hypervolume of the feasible trained trials after each trial, over the study's two objectives.

    ``unit`` names what the area measures (IoU x ms for the default objectives); ``reference`` is the
    point it is measured from, one value per objective, ``reference_text`` says it in words."""

    numbers: tuple[int, ...]
    values: tuple[float, ...]
    reference_latency_ms: float
    unit: str = "IoU × ms"
    reference_text: str = ""


def hypervolume_data(records: Sequence[TrialRecord], max_latency_ms: float | None,
                     objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES) -> HypervolumeData:
    """From :func:`optiseg.results.hypervolume_history`, with the study's default reference point.

    Empty for a study with other than two objectives (a hypervolume over one or three is not drawn)."""
    objectives = tuple(tuple(o) for o in objectives)
    if len(objectives) != 2:
        return HypervolumeData((), (), 0.0, "", f"no hypervolume over {len(objectives)} objectives")
    reference_latency = default_reference_latency(records, max_latency_ms)
    if objectives == DEFAULT_OBJECTIVES:
        reference = (0.0, reference_latency)
    else:
        reference = reference_point(records, objectives)
    history = hypervolume_history(list(records), reference_latency, objectives, reference=reference)
    unit = " × ".join({"": name}.get(get_metric(name).unit, get_metric(name).unit) for name, _ in objectives)
    text = " and ".join(f"{name} {value:.4g}" for (name, _), value in zip(objectives, reference))
    return HypervolumeData(tuple(n for n, _ in history), tuple(v for _, v in history), reference_latency,
                           unit.replace("iou", "IoU"), text)


class TimingData(NamedTuple):
    """Seconds per stage of each trial that did work of its own, and the totals over the study."""

    numbers: tuple[int, ...]
    stages: tuple[tuple[str, str], ...]  # (key, label)
    seconds: Mapping[str, tuple[float, ...]]  # stage key (and "other") -> seconds per trial
    totals: Mapping[str, float]
    trial_seconds: float  # summed trial durations


def timing_data(records: Sequence[TrialRecord]) -> TimingData:
    """Where the search spent its time; ``other`` is a trial's duration not covered by a timed stage."""
    worked = [r for r in sorted(records, key=lambda r: r.number) if r.duplicate_of is None and (r.timings or r.seconds)]
    stages = (*TIMING_STAGES, ("other", "other"))
    seconds: dict[str, list[float]] = {key: [] for key, _ in stages}
    for record in worked:
        staged = 0.0
        for key, _ in TIMING_STAGES:
            value = _number(record.timings.get(key)) or 0.0
            seconds[key].append(value)
            staged += value
        seconds["other"].append(max(0.0, (record.seconds or 0.0) - staged))
    return TimingData(
        numbers=tuple(r.number for r in worked),
        stages=stages,
        seconds={k: tuple(v) for k, v in seconds.items()},
        totals={k: float(sum(v)) for k, v in seconds.items()},
        trial_seconds=float(sum(r.seconds or 0.0 for r in records)),
    )


# ----------------------------------------------------------------------------------- training curves


class Curve(NamedTuple):
    number: int
    label: str
    epochs: tuple[int, ...]
    series: Mapping[str, tuple[float | None, ...]]  # train_loss, val_loss, val_iou -> value per epoch
    best_epoch: int | None


class CurvesData(NamedTuple):
    curves: tuple[Curve, ...]
    missing: tuple[int, ...]  # front trials whose history could not be read


CURVE_SERIES = ("train_loss", "val_loss", "val_iou")


def history_series(history: Any) -> tuple[tuple[int, ...], dict[str, tuple[float | None, ...]], int | None] | None:
    """Epochs, the loss and IoU series and the best epoch of a trainer history; None if it is not one.

    Accepts the trainer's list of per-epoch dicts (``epoch``, ``train_loss``, ``val_loss``,
    ``val_iou``, ``best``, ...) and, for robustness, a dict of per-epoch lists.
    """
    if isinstance(history, Mapping):
        lengths = {len(v) for v in history.values() if isinstance(v, list)}
        if len(lengths) != 1:
            return None
        length = lengths.pop()
        history = [{k: v[i] for k, v in history.items() if isinstance(v, list)} for i in range(length)]
    if not isinstance(history, list) or not history or not all(isinstance(e, Mapping) for e in history):
        return None
    epochs = tuple(int(e["epoch"]) if isinstance(e.get("epoch"), int) else i + 1 for i, e in enumerate(history))
    series = {key: tuple(_number(e.get(key)) for e in history) for key in CURVE_SERIES}
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    if not series:
        return None
    best = [epoch for epoch, e in zip(epochs, history) if e.get("best") is True]
    return epochs, series, (best[-1] if best else None)


def training_curves(front: Sequence[TrialRecord], histories: Mapping[int, Any]) -> CurvesData:
    """Training curves of the front's trials from their histories (trial number -> trainer history)."""
    curves, missing = [], []
    for record in front:
        parsed = history_series(histories.get(record.number))
        if parsed is None:
            missing.append(record.number)
            continue
        epochs, series, best = parsed
        label = f"trial {record.number}: {record.resolution or ''} {knobs_text(record)}".strip()
        curves.append(Curve(record.number, label, epochs, series, best))
    return CurvesData(tuple(curves), tuple(missing))


# ----------------------------------------------------------------------------------- context


class Fact(NamedTuple):
    label: str
    value: str


class DeviceGroup(NamedTuple):
    """One device the study measured on, what it reported, and how many trials it timed."""

    device: str
    trials: int
    facts: tuple[Fact, ...]


def device_groups(records: Sequence[TrialRecord]) -> tuple[DeviceGroup, ...]:
    """The devices' facts (CPU, cores, threads, onnxruntime, governor, ...) as measured, one group per device."""
    groups: dict[str, list[TrialRecord]] = {}
    for record in measured(records):
        if record.latency:
            key = str(record.latency.get("device_key") or (record.latency.get("facts") or {}).get("hostname") or "device")
            groups.setdefault(key, []).append(record)
    result = []
    for key, members in groups.items():
        latest = members[-1].latency
        facts = latest.get("facts") or {}

        def distinct(getter) -> str:
            values = [getter(r) for r in members]
            return ", ".join(dict.fromkeys(str(v) for v in values if v not in (None, "")))

        def spread(getter, unit: str) -> str:
            values = [v for v in (_number(getter(r)) for r in members) if v is not None]
            if not values:
                return ""
            low, high = min(values), max(values)
            return f"{low:.3g}{unit}" if low == high else f"{low:.3g}–{high:.3g}{unit}"

        def fact(r, name):
            return (r.latency.get("facts") or {}).get(name)

        cores = facts.get("cores")
        usable = facts.get("usable_cores")
        pairs = [
            ("CPU", facts.get("cpu_model")),
            ("board", facts.get("board")),
            ("cores", f"{cores} ({usable} usable)" if cores is not None and usable not in (None, cores) else cores),
            ("machine", facts.get("machine")),
            ("OS", facts.get("os")),
            ("Python", facts.get("python_version")),
            ("onnxruntime", distinct(lambda r: fact(r, "onnxruntime_version"))),
            ("numpy", facts.get("numpy_version")),
            ("threads", distinct(lambda r: r.latency.get("threads"))),
            ("graph optimization", distinct(lambda r: r.latency.get("graph_optimization"))),
            ("timed runs", distinct(lambda r: r.latency.get("runs"))),
            ("warm-up runs", distinct(lambda r: r.latency.get("warmup"))),
            ("CPU governor", distinct(lambda r: fact(r, "governor"))),
            ("temperature", spread(lambda r: fact(r, "temperature_c"), " °C")),
            ("throttled flags", distinct(lambda r: fact(r, "throttled"))),
            ("load (1 min)", spread(lambda r: fact(r, "load_1m"), "")),
        ]
        result.append(DeviceGroup(key, len(members), tuple(Fact(k, str(v)) for k, v in pairs if v not in (None, ""))))
    return tuple(result)


def budget_facts(
    records: Sequence[TrialRecord], budget: Mapping[str, Any] | None, span_s: float | None
) -> tuple[Fact, ...]:
    """The budget the config set and what the study used of it."""
    counts = status_counts(records)
    evaluated = counts[COMPLETE] + counts[TOO_SLOW]
    facts = []
    n_trials = (budget or {}).get("n_trials")
    facts.append(Fact("trials evaluated", f"{evaluated} of {n_trials}" if n_trials else str(evaluated)))
    timeout = (budget or {}).get("timeout")
    if timeout:
        facts.append(Fact("timeout per run", str(timeout)))
    facts.append(Fact("outcomes", ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n) or "no trials yet"))
    timing = timing_data(records)
    facts.append(Fact("time in trials", format_seconds(timing.trial_seconds)))
    totals = training_totals(records)
    if totals["networks"]:
        facts.append(Fact("training", f"{totals['networks']} networks, {si(totals['compute_macs'])}MAC "
                          f"(epochs x training images x MACs per image), {format_seconds(totals['seconds'])}"))
    if span_s is not None:
        facts.append(Fact("first trial start to last trial end", format_seconds(span_s)))
    return tuple(facts)


def format_seconds(seconds: float | None) -> str:
    """``75`` -> ``1 min 15 s``; ``4000`` -> ``1 h 06 min``."""
    if seconds is None:
        return "?"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> tuple[Fact, ...]:
    """``{"training": {"epochs": 30}}`` -> ``(Fact("training.epochs", "30"),)``; lists as JSON."""
    facts: list[Fact] = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            facts.extend(flatten_settings(value, prefix=f"{path}."))
        else:
            facts.append(Fact(path, value if isinstance(value, str) else json.dumps(value, default=str)))
    return tuple(facts)


class SpaceRow(NamedTuple):
    knob: str
    tier: str
    choices: str
    baseline: str


def search_space_rows(settings: Mapping[str, Any], tiers: Mapping[str, str]) -> tuple[SpaceRow, ...]:
    """The searched knobs with their tier, choices and baseline value, from the study's stored search space."""
    space = settings.get("search_space") or {}
    baseline = space.get("baseline") or {}
    return tuple(
        SpaceRow(knob, tiers.get(knob, "?"), ", ".join(format_value(v) for v in values), format_value(baseline.get(knob, "")))
        for knob, values in (space.get("choices") or {}).items()
    )


# ----------------------------------------------------------------------------------- latency checks


class LatencyCheckData(NamedTuple):
    """The latency model's prediction against each fresh measurement, and what the watch did about it."""

    numbers: tuple[int, ...]
    labels: tuple[str, ...]
    predicted_ms: tuple[float, ...]
    low_ms: tuple[float, ...]
    high_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    repeated: tuple[bool, ...]  # measured twice more: outside the model's interval
    predicted_too_slow: int  # plans recorded as too slow from the prediction alone
    revised: int  # plans whose latency was measured again (confirmation rounds, drift)
    drifts: tuple[Fact, ...]  # one line per drift event

    @property
    def inside(self) -> int:
        return sum(low <= m <= high for low, m, high in zip(self.low_ms, self.measured_ms, self.high_ms))


def latency_check_data(records: Sequence[TrialRecord], drift_events: Sequence[Mapping[str, Any]]) -> LatencyCheckData:
    rows = []
    for record in sorted(records, key=lambda r: r.number):
        latency = record.evaluation.details.get("latency") or {}
        prediction, figure = latency.get("prediction"), _number(latency.get("median_ms"))
        if record.duplicate_of is None and isinstance(prediction, Mapping) and figure is not None:
            median = float(prediction["median_ms"])
            low, high = _number(prediction.get("low_ms")), _number(prediction.get("high_ms"))  # None: an unbounded end
            rows.append((record.number, f"trial {record.number}: {record.plan_key}", median,
                         median if low is None else low, median if high is None else high, figure, "repeats" in latency))
    drifts = tuple(
        Fact(str(event.get("when", ""))[:19].replace("T", " "),
             f"{event.get('device')}: reference {float(event.get('drifted_ms', 0)):.3g} ms against "
             f"{float(event.get('level_ms', 0)):.3g} ms; " + (
                 f"back after {float(event.get('waited_s', 0)):.0f} s, {len(event.get('remeasured') or [])} plan(s) measured again"
                 if event.get("back") else "did not come back in time: figures kept"))
        for event in drift_events
    )
    columns = list(zip(*rows)) if rows else [()] * 7
    return LatencyCheckData(
        *(tuple(c) for c in columns),
        predicted_too_slow=sum("latency_predicted" in r.evaluation.details for r in records),
        revised=sum("latency_revision" in r.evaluation.details for r in records),
        drifts=drifts,
    )
