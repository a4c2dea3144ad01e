"""Confirmation rounds: the front, and every plan within noise of it, measured again in interleaved rounds.

A search measures each plan once, at a moment of its own; on a device whose
speed drifts (a shared machine, a Pi warming up) two plans a few per cent apart
may owe their order to the hour they were measured in. At the end of a search
(``confirm:`` in the study config) and on demand (``optiseg confirm STUDY``) the
plans whose place on the front a few per cent could change are measured again,
together, in rounds ``A B C A B C ...``: whatever the device does during the
confirmation, it does to every plan alike.

Life cycle (:func:`confirm_study` drives it):

1. :func:`choose_plans` (pure): the front members, then every feasible complete
   plan *within noise of the front* (see :func:`choose_plans`), each with how
   far it is from the front.
2. Each plan's timed model: its mode's ``timed_model(plan, network_folder)``, the
   very file its latency was measured on. A plan whose file is gone, or that was
   measured on a device this config does not reach, is listed and left out.
3. Budget: front members first, then the others nearest first, as many as
   :data:`MIN_ROUNDS` rounds of fit in ``budget_s`` (each plan's cost: the wall
   time of its first measurement). Those rounds always run; each further round
   runs while the seconds spent plus the last round's time fit, up to ``rounds``.
4. :func:`run_rounds`: one device of the pool for every round (one device's noise),
   one ``runner.measure`` per plan per round, in the same order every round.
5. Per plan: the median of the rounds' medians and its confidence interval
   (:func:`median_interval`), kept as a :class:`~optiseg.records.LatencyRevision`
   (``source="confirm"``) through :func:`~optiseg.records.write_latency_revision`.
   Nothing is written before the last round: an interrupted confirmation leaves
   the study as it was.
6. The front recomputed from the revised records with
   :func:`~optiseg.results.confirmed_front`: ties where intervals overlap.
"""

from __future__ import annotations

import datetime as _dt
import math
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import records as store
from ..errors import UsageError
from ..layout import StudyLayout
from ..records import LatencyRevision, TrialRecord
from ..results import (
    INTERVAL_METRICS,
    ConfirmedFront,
    confirmed_front,
    evaluated_plans,
    latency_revision,
    objective_pairs,
    pareto_front,
)

MIN_ROUNDS = 3  # fewer rounds give no interval worth the name (3 rounds: [min, max] covers the median 75 % of the time)
CONFIDENCE = 0.90
NOISE_FLOOR = 0.10  # default margin: a plan within 10 % of the front's latency at its quality is confirmed
NOISE_SPREADS = 3.0  # ... or within 3 x its median's measured coefficient of variation, if that is larger
DEFAULT_MEASURE_S = 3.0  # a measurement's wall time when the record does not say (2 s of timed runs + start)


# ---------------------------------------------------------------- 1. which plans

@dataclass(frozen=True)
class Choice:
    """A plan chosen for confirmation: on the front, or ``gap`` slower than it where ``noise`` could explain it."""

    record: TrialRecord
    on_front: bool
    gap: float  # latency over the front's at this plan's quality, as a fraction (0 for members)
    noise: float  # the fraction of its latency that noise could account for


def median_spread(record: TrialRecord) -> float:
    """The coefficient of variation of a plan's median latency, as far as its records know it.

    Rounds of an earlier confirmation give it directly (their standard deviation
    over their median). One measurement gives only its median's standard error
    (1.2533 x std / sqrt(runs), over the median), which knows nothing of the
    device's drift between measurements: the margin of :func:`choose_plans` covers that.
    """
    revision = latency_revision(record)
    if revision and len(revision.get("rounds") or ()) >= MIN_ROUNDS:
        rounds = np.asarray(revision["rounds"], dtype=float)
        return float(np.std(rounds, ddof=1) / np.median(rounds)) if np.median(rounds) > 0 else 0.0
    latency = record.latency
    median, std, runs = latency.get("median_ms"), latency.get("std_ms"), latency.get("runs")
    if not median or std is None or not runs:
        return 0.0
    return 1.2533 * float(std) / math.sqrt(float(runs)) / float(median)


def choose_plans(records: Sequence[TrialRecord], objectives=None, margin: float = NOISE_FLOOR) -> list[Choice]:
    """The front members (fastest first), then every plan within noise of the front (nearest first).

    A feasible complete plan ``p`` off the front is *within noise of it* when
    making its latency ``1 + noise`` times smaller would put it on the front,
    ``noise = max(margin, 3 x`` :func:`median_spread` ``(p))``. For an IoU-latency
    front: ``p`` is at most ``noise`` slower than the fastest member with at
    least ``p``'s IoU (``gap`` is by how much it is slower). Objectives other
    than latency (and fps) are taken as they are: confirmation measures latency
    only. With no latency among the objectives, nothing is chosen.
    """
    pairs = objective_pairs(objectives)
    noisy = [i for i, (metric, _) in enumerate(pairs) if metric in INTERVAL_METRICS]
    if not noisy:
        return []
    points = evaluated_plans(records, pairs)
    front = pareto_front(points, pairs)
    members = {id(r) for r in front}
    chosen = [Choice(r, True, 0.0, max(margin, NOISE_SPREADS * median_spread(r))) for r in front]
    near = []
    for p in points:
        if id(p) in members:
            continue
        noise = max(margin, NOISE_SPREADS * median_spread(p))
        gap = _gap(p, front, pairs, noisy)
        if gap is not None and gap < noise:
            near.append(Choice(p, False, gap, noise))
    return chosen + sorted(near, key=lambda c: (c.gap, c.record.number))


def _gap(p: TrialRecord, front: Sequence[TrialRecord], pairs, noisy: Sequence[int]) -> float | None:
    """By how much (a fraction) ``p``'s latency must shrink before no member of ``front`` dominates it any more."""
    worst = None
    for q in front:
        if not all(_better_or_equal(q, p, metric, direction) for i, (metric, direction) in enumerate(pairs) if i not in noisy):
            continue
        ratios = []
        for i in noisy:
            metric, direction = pairs[i]
            mine, theirs = float(p.metric(metric)), float(q.metric(metric))
            if min(mine, theirs) <= 0:
                break
            ratios.append(mine / theirs if direction == "minimize" else theirs / mine)
        else:
            needed = min(ratios) - 1.0  # q dominates p until p's latency shrinks by this fraction
            if needed >= 0:
                worst = needed if worst is None else max(worst, needed)
    return worst


def _better_or_equal(q: TrialRecord, p: TrialRecord, metric: str, direction: str) -> bool:
    a, b = float(q.metric(metric)), float(p.metric(metric))
    return a >= b if direction == "maximize" else a <= b


# ---------------------------------------------------------------- 3. the budget

def measurement_estimate(record: TrialRecord) -> float:
    """Device seconds one more measurement of a plan takes: its first one's wall time (or :data:`DEFAULT_MEASURE_S`)."""
    return float(record.latency.get("wall_s") or DEFAULT_MEASURE_S)


def within_budget(choices: Sequence[Choice], budget_s: float) -> tuple[list[Choice], list[Choice]]:
    """``(taken, left_out)``: in the order given (front first, then nearest), each plan whose :data:`MIN_ROUNDS`
    rounds still fit in ``budget_s`` next to those of the plans taken before it."""
    taken, left_out, planned = [], [], 0.0
    for choice in choices:
        cost = MIN_ROUNDS * measurement_estimate(choice.record)
        if planned + cost <= budget_s:
            taken.append(choice)
            planned += cost
        else:
            left_out.append(choice)
    return taken, left_out


# ---------------------------------------------------------------- 4. the rounds

@dataclass(frozen=True)
class Rounds:
    """What interleaved rounds measured: per plan, one median per round, in round order."""

    medians: tuple[tuple[float, ...], ...]
    order: tuple[int, ...]  # plan indexes in the order they were measured
    spent_s: float
    stop_reason: str

    @property
    def count(self) -> int:
        return min((len(m) for m in self.medians), default=0)


def run_rounds(
    runner,
    models: Sequence[Path],
    *,
    rounds: int,
    budget_s: float,
    min_rounds: int = MIN_ROUNDS,
    on_measure: Callable[[int, int, float, float], None] | None = None,
    on_round: Callable[[int, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Rounds:
    """Measure ``models`` in interleaved rounds (``A B C A B C ...``) on ``runner``.

    The first ``min(rounds, min_rounds)`` rounds always run (the caller chose
    the plans so that they fit the budget); each later one runs only if the
    seconds spent plus the last round's time stay within ``budget_s``. Device
    seconds are the wall time of each ``runner.measure`` call. ``on_measure(index,
    round, median_ms, seconds)`` and ``on_round(round, spent_s)`` report progress.
    """
    medians: list[list[float]] = [[] for _ in models]
    order: list[int] = []
    spent = 0.0
    last_round = 0.0
    stop_reason = f"{rounds} rounds done"
    for number in range(1, rounds + 1):
        if number > min(rounds, min_rounds) and spent + last_round > budget_s:
            stop_reason = (f"budget of {budget_s:g} device seconds reached after {number - 1} rounds "
                           f"({spent:.0f} s spent, a round takes about {last_round:.0f} s)")
            break
        round_started = spent
        for index, model in enumerate(models):
            began = clock()
            result = runner.measure(model)
            seconds = clock() - began
            spent += seconds
            medians[index].append(float(result.median_ms))
            order.append(index)
            if on_measure is not None:
                on_measure(index, number, float(result.median_ms), seconds)
        last_round = spent - round_started
        if on_round is not None:
            on_round(number, spent)
    return Rounds(tuple(tuple(m) for m in medians), tuple(order), spent, stop_reason)


# ---------------------------------------------------------------- 5. the interval

@dataclass(frozen=True)
class Interval:
    """A median with its confidence interval (see :func:`median_interval`)."""

    median: float
    low: float
    high: float
    coverage: float  # the probability that [low, high] holds the true median


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The median of ``values`` and a distribution-free (order-statistic) confidence interval for it.

    For ``n`` sorted values ``x(1) <= ... <= x(n)``, ``[x(j), x(n+1-j)]`` holds the
    true median with probability ``1 - 2 P(B <= j-1)``, ``B ~ Binomial(n, 1/2)``,
    whatever the distribution (Conover, *Practical Nonparametric Statistics*,
    §3.2). The narrowest such interval whose coverage reaches ``confidence`` is
    returned; below 5 values none reaches 90 %, and ``[min, max]`` comes with the
    coverage it has (75 % for 3 values, 87.5 % for 4; 5 values: 93.75 %). No
    bootstrap: with 3 to 5 rounds a bootstrap's interval is one of these order
    statistics anyway, with a coverage it cannot state.
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    if n == 0:
        raise ValueError("no values to take the median of")
    median = float(np.median(ordered))
    best_j, best_coverage = 1, _coverage(n, 1)
    for j in range(2, n // 2 + 1):
        coverage = _coverage(n, j)
        if coverage < confidence:
            break
        best_j, best_coverage = j, coverage
    return Interval(median, float(ordered[best_j - 1]), float(ordered[n - best_j]), best_coverage)


def _coverage(n: int, j: int) -> float:
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j)) / 2.0**n


def first_latency(record: TrialRecord) -> float | None:
    """The figure the plan's trial measured first (kept whatever revisions came since)."""
    revision = latency_revision(record)
    if revision and revision.get("first_ms") is not None:
        return float(revision["first_ms"])
    return record.latency_ms


def revision_of(record: TrialRecord, medians: Sequence[float], when: str | None = None) -> LatencyRevision:
    """The :class:`LatencyRevision` of one plan's round medians."""
    interval = median_interval(medians)
    return LatencyRevision(
        plan_key=record.plan_key, latency_ms=interval.median, low_ms=interval.low, high_ms=interval.high,
        rounds=tuple(float(v) for v in medians), source="confirm", first_ms=first_latency(record),
        when=when or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


# ---------------------------------------------------------------- the whole confirmation

@dataclass(frozen=True)
class ConfirmRow:
    """One plan of a confirmation: why it was chosen, what it measured, or why it was left out."""

    record: TrialRecord  # as it was before this confirmation
    on_front: bool
    gap: float
    noise: float
    model: Path | None = None
    revision: LatencyRevision | None = None
    coverage: float | None = None
    note: str = ""  # why it was left out

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.record.number, "plan": self.record.plan_key, "on_front_before": self.on_front,
            "gap": round(self.gap, 4), "noise": round(self.noise, 4), "model": str(self.model) if self.model else None,
            "first_ms": first_latency(self.record),
            "latency_revision": self.revision.as_dict() if self.revision else None,
            "coverage": self.coverage, "note": self.note or None,
        }


@dataclass(frozen=True)
class ConfirmReport:
    """What :func:`confirm_study` did, and the front recomputed from the revised latencies."""

    rows: tuple[ConfirmRow, ...]
    rounds: int
    requested_rounds: int
    spent_s: float
    budget_s: float
    stop_reason: str
    written: bool
    front: ConfirmedFront
    device: str = ""
    records: tuple[TrialRecord, ...] = field(default=(), repr=False)  # every record, revisions applied

    @property
    def confirmed(self) -> list[ConfirmRow]:
        return [row for row in self.rows if row.revision is not None]

    def as_dict(self) -> dict[str, Any]:
        members = {r.number for r in self.front.members}
        return {
            "device": self.device, "rounds": self.rounds, "requested_rounds": self.requested_rounds,
            "spent_s": round(self.spent_s, 1), "budget_s": self.budget_s, "stop_reason": self.stop_reason,
            "written": self.written, "confidence": CONFIDENCE,
            "plans": [{**row.as_dict(), "on_front": row.record.number in members,
                       "tied_with": list(self.front.tied_with(row.record.number))} for row in self.rows],
            "front": [{"trial": r.number, "plan": r.plan_key, "latency_ms": r.latency_ms,
                       "tied_with": list(self.front.tied_with(r.number))} for r in self.front.members],
        }


def confirm_study(
    study,
    layout: StudyLayout,
    pool,
    objectives=None,
    *,
    rounds: int = 5,
    budget_s: float = 120.0,
    margin: float = NOISE_FLOOR,
    progress: ConfirmProgress | None = None,
    write: bool = True,
) -> ConfirmReport:
    """Confirm the front of ``study`` (see the module docstring); ``pool`` is the study's :class:`~optiseg.devices.DevicePool`.

    Raises :class:`~optiseg.errors.UsageError` for fewer than :data:`MIN_ROUNDS`
    rounds or a budget that is not positive; a device that fails raises its
    :class:`~optiseg.errors.DeviceError` and nothing is written.
    """
    from ..modes import get_mode

    if rounds < MIN_ROUNDS:
        raise UsageError(f"rounds = {rounds}: confirmation needs at least {MIN_ROUNDS} rounds to give an interval")
    if not budget_s > 0:
        raise UsageError(f"budget_s = {budget_s:g}: give a positive number of device seconds, e.g. 120")
    progress = progress or ConfirmProgress(quiet=True)
    trial_records = store.load_records(study)
    choices = choose_plans(trial_records, objectives, margin)
    keys = {runner.device_key for runner in pool.runners}
    notes: dict[int, str] = {}
    models: dict[int, Path] = {}
    for choice in choices:
        record = choice.record
        folder = layout.network_at(record.artifacts) if record.artifacts else layout.network(record.candidate)
        models[record.number] = model = get_mode(record.mode).timed_model(record.plan, folder)
        measured_on = record.latency.get("device_key")
        if model is None:
            notes[record.number] = f"a {record.mode} plan's latency is more than one graph on the device; not measured again"
        elif not model.is_file():
            notes[record.number] = f"its model {model} is missing"
        elif measured_on and measured_on not in keys:
            notes[record.number] = f"measured on {measured_on}, which this config does not reach ({', '.join(sorted(keys))})"
    taken, left_out = within_budget([c for c in choices if c.record.number not in notes], budget_s)
    for choice in left_out:
        cost = MIN_ROUNDS * measurement_estimate(choice.record)
        notes[choice.record.number] = f"{MIN_ROUNDS} rounds of it (about {cost:.0f} s) do not fit the budget of {budget_s:g} s (raise it)"
    rows = [ConfirmRow(c.record, c.on_front, c.gap, c.noise, models[c.record.number], note=notes.get(c.record.number, ""))
            for c in choices]
    measured = [(c, models[c.record.number], measurement_estimate(c.record)) for c in taken]

    if not choices:
        reason = "no feasible trained plan to confirm yet" if not evaluated_plans(trial_records, objectives) else \
            "the study's objectives hold no latency to confirm"
        return _report(rows, 0, rounds, 0.0, budget_s, reason, False, trial_records, objectives, pool.label)
    if not measured:
        reason = "nothing measured: " + "; ".join(f"trial {r.record.number}: {r.note}" for r in rows)
        progress.line(f"confirm: {reason}")
        return _report(rows, 0, rounds, 0.0, budget_s, reason, False, trial_records, objectives, pool.label)

    paths = [model for _, model, _ in measured]
    with pool.acquire() as runner:
        progress.start(len(paths), rounds, budget_s, sum(e for _, _, e in measured), runner.label, len(rows) - len(paths))
        try:
            done = run_rounds(runner, paths, rounds=rounds, budget_s=budget_s,
                              on_measure=progress.measured, on_round=progress.round_done)
        finally:
            progress.stop()
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    revisions = {}
    for (choice, model, _), medians in zip(measured, done.medians):
        revision = revision_of(choice.record, medians, when)
        revisions[choice.record.plan_key] = revision
    final_rows = []
    for row in rows:
        revision = revisions.get(row.record.plan_key) if row.model is not None and not row.note else None
        coverage = median_interval(revision.rounds).coverage if revision else None
        final_rows.append(ConfirmRow(row.record, row.on_front, row.gap, row.noise, row.model, revision, coverage, row.note))
    if write:
        for revision in revisions.values():
            store.write_latency_revision(study, revision)
        revised = store.load_records(study)
    else:
        revised = [store.apply_revision(r, revisions[r.plan_key]) if r.plan_key in revisions else r for r in trial_records]
    report = _report(final_rows, done.count, rounds, done.spent_s, budget_s, done.stop_reason, write, revised,
                     objectives, runner.label)
    progress.line(f"confirm: {len(revisions)} plans in {done.count} interleaved rounds on {runner.label} "
                  f"({done.spent_s:.0f} s; {done.stop_reason}); front: {_plans(len(report.front.members))}"
                  + (f", {len(report.front.ties)} of them tied with another" if report.front.ties else ""))
    return report


def _plans(count: int) -> str:
    return f"{count} plan{'' if count == 1 else 's'}"


def _report(rows, count, requested, spent, budget_s, reason, written, trial_records, objectives, device) -> ConfirmReport:
    return ConfirmReport(
        rows=tuple(rows), rounds=count, requested_rounds=requested, spent_s=spent, budget_s=budget_s,
        stop_reason=reason, written=written, front=confirmed_front(trial_records, objectives), device=device,
        records=tuple(trial_records),
    )


def already_confirmed(study, objectives=None, margin: float = NOISE_FLOOR) -> bool:
    """Whether every plan :func:`choose_plans` picks now carries a confirmation (the end of a search that added nothing skips it)."""
    revisions = store.latency_revisions(study)
    choices = choose_plans(store.load_records(study), objectives, margin)
    return bool(choices) and all(
        c.record.plan_key in revisions and revisions[c.record.plan_key].source == "confirm" for c in choices)


def study_device(handle):
    """The device section of a study's config, checked against the device the study was measured on.

    ``handle`` is a :class:`~optiseg.search.study.StudyHandle`. Its config (the
    copy in the study folder, or the file given) must name the same device kind,
    name and timing protocol as the study's settings: a revision measured on
    another device, or with other settings, would not be comparable.
    """
    from ..config.device import load_device_config
    from ..errors import StudyError

    if handle.config_path is None:
        raise StudyError(f"study {handle.name!r} has no config file (no {handle.paths.config_copy})",
                         hint="give the study's config file instead of its folder: optiseg confirm CONFIG")
    device = load_device_config(handle.config_path)
    stored = store.study_settings(handle.study).get("device")
    dumped = device.model_dump(mode="json")
    mine = {"name": dumped.get("name"), "kind": dumped.get("kind"), "measure": dumped.get("measure")}
    if stored and stored != mine:
        raise StudyError(
            f"the device of {handle.config_path} ({mine}) is not the one study {handle.name!r} was measured on ({stored})",
            hint="confirm with the config the study was searched with (its copy is in the study folder: config.yaml)",
        )
    return device


def confirm_at_end_of_search(study, layout: StudyLayout, pool, objectives, settings, progress, *, fresh: bool) -> ConfirmReport | None:
    """The confirmation a search runs when its loop ends normally (``settings``: the config's ``confirm:`` section).

    Skipped when turned off, and when this run finished no trial and every plan
    it would pick is confirmed already. A device or file failure here is logged
    and leaves the search's result as it is (``optiseg confirm STUDY`` tries
    again); Ctrl-C is the caller's, as during the trials.
    """
    from ..errors import OptisegError

    if not settings.enabled:
        return None
    if not fresh and already_confirmed(study, objectives, settings.margin):
        progress.log("confirm: every plan of the front is confirmed already (no new trial this run)")
        return None
    progress.stop()  # the live view gives way to the confirmation's own progress bar
    try:
        return confirm_study(study, layout, pool, objectives, rounds=settings.rounds, budget_s=settings.budget_s,
                             margin=settings.margin, progress=ConfirmProgress.for_search(progress))
    except (OptisegError, OSError) as exc:
        progress.log(f"confirm: failed, the first figures stay ({str(exc).splitlines()[0]}); "
                     f"run `optiseg confirm {shlex.quote(str(layout.folder))}` to try again")
        return None


# ---------------------------------------------------------------- progress

class ConfirmProgress:
    """A rich progress bar with ETA on a terminal (stderr), and one line per round; every line also to ``log``.

    ``log(line)`` is e.g. :meth:`SearchProgress.log <optiseg.search.progress.SearchProgress.log>`,
    which keeps the line in ``search.log`` and prints it where no live view runs.
    """

    def __init__(self, console=None, *, bar: bool | None = None, quiet: bool = False,
                 log: Callable[[str], None] | None = None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.bar = (self.console.is_terminal and not quiet) if bar is None else (bar and not quiet)
        self.quiet = quiet
        self._log = log
        self._progress = None
        self._task = None
        self.rounds = 0

    @classmethod
    def for_search(cls, progress) -> ConfirmProgress:
        """Lines through a :class:`~optiseg.search.progress.SearchProgress` (its log file, its console)."""
        return cls(progress.console, bar=progress.live_mode, quiet=progress.quiet, log=progress.log)

    def line(self, text: str) -> None:
        if self._log is not None:
            self._log(text)
        elif not self.quiet:
            from rich.markup import escape

            self.console.print(escape(text), soft_wrap=True)

    def start(self, plans: int, rounds: int, budget_s: float, estimate_round_s: float, device: str, left_out: int) -> None:
        self.rounds = rounds
        self.line(f"confirm: {plans} plans, up to {rounds} interleaved rounds on {device}, budget {budget_s:g} device "
                  f"seconds (a round: about {estimate_round_s:.1f} s)" + (f"; {left_out} left out" if left_out else ""))
        if self.bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("confirming"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(f"round 1/{rounds}", total=plans * rounds)

    def measured(self, index: int, number: int, median_ms: float, seconds: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=f"round {number}/{self.rounds}")

    def round_done(self, number: int, spent_s: float) -> None:
        self.line(f"  confirm round {number}/{self.rounds} done ({spent_s:.0f} device seconds so far)")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
