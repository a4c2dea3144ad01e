"""What a running search shows: trial n/N, the candidate, its stage, the front so far, elapsed time and ETA.

On a terminal this is a rich live view on stderr; otherwise (CI logs, pipes)
plain timestamped lines. Every line also goes to the study's ``search.log``.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..results import PARTIAL, TrialRecord
from ..secrets import mask_credentials


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class SearchProgress:
    """Progress of one `optiseg search` process."""

    def __init__(self, log_path: Path, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True, highlight=False)
        self.live_mode = self.console.is_terminal and not quiet
        self.quiet = quiet
        self.log_path = log_path
        self.started = time.monotonic()
        self.study_name = ""
        self.n_trials: int | None = None
        self.deadline: float | None = None
        self.finished_in_run: list[float] = []
        self.done_before = 0
        self.current: str = ""
        self.stage_text = ""
        self.trial_started_at: float | None = None
        self.front: list[TrialRecord] = []
        self.counts: dict[str, int] = {}
        self._live: Live | None = None

    # Lifecycle -----------------------------------------------------------------------------

    def start(self, study_name: str, n_trials: int | None, timeout_s: float | None, done_before: int) -> None:
        self.study_name, self.n_trials, self.done_before = study_name, n_trials, done_before
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        self.log(f"study {study_name}: {done_before} trials already finished, budget {n_trials or 'unlimited'} trials"
                 + (f", timeout {format_duration(timeout_s)}" if timeout_s else ""))
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    # Events from the search loop and the trial ---------------------------------------------

    def trial_started(self, number: int, plan) -> None:
        self.current = f"trial {number}: {plan.describe()}"
        self.trial_started_at = time.monotonic()
        self.stage_text = "starting"
        self.log(self.current)

    def stage(self, text: str) -> None:
        self.stage_text = text
        self.log(f"  {text}")

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, Any] | None = None) -> None:
        parts = [f"training epoch {epoch}/{epochs}"]
        for key, label in (("train_loss", "loss"), ("val_loss", "val loss"), ("val_iou", "val IoU")):
            value = (metrics or {}).get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{label} {value:.3f}")
        self.stage_text = "  ".join(parts)
        self.log(f"  {self.stage_text}", echo=not self.live_mode)

    def trial_finished(self, record: TrialRecord, front: list[TrialRecord], counts: dict[str, int]) -> None:
        if self.trial_started_at is not None:
            self.finished_in_run.append(time.monotonic() - self.trial_started_at)
        self.trial_started_at = None
        self.front, self.counts = front, counts
        outcome = {
            "complete": f"IoU {record.iou:.4f}, {record.latency_ms:.2f} ms" if record.iou is not None and record.latency_ms else "complete",
            "too_slow": f"too slow: {record.latency_ms:.2f} ms, not trained" if record.latency_ms else "too slow",
            "failed": f"failed: {record.error}",
        }.get(record.status, record.status)
        self.current, self.stage_text = "", ""
        self.log(f"trial {record.number} {outcome}")

    def training_reporter(self) -> "TrainingProgress":
        return TrainingProgress(self)

    def log(self, line: str, echo: bool = True) -> None:
        line = mask_credentials(line)
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {line}\n")
        if self._live is not None:
            self._live.update(self._render())
        elif echo and not self.quiet:
            self.console.print(f"[dim]{stamp[11:]}[/] {escape(line)}", soft_wrap=True)

    # Rendering -----------------------------------------------------------------------------

    def eta_seconds(self) -> float | None:
        finished = self.done_before + len(self.finished_in_run)
        remaining_by_trials = None
        if self.n_trials is not None and self.finished_in_run:
            mean = sum(self.finished_in_run) / len(self.finished_in_run)
            remaining_by_trials = max(0, self.n_trials - finished) * mean
            if self.trial_started_at is not None:
                remaining_by_trials = max(0.0, remaining_by_trials - (time.monotonic() - self.trial_started_at))
        remaining_by_time = max(0.0, self.deadline - time.monotonic()) if self.deadline else None
        options = [v for v in (remaining_by_trials, remaining_by_time) if v is not None]
        return min(options) if options else None

    def _render(self) -> Group:
        finished = self.done_before + len(self.finished_in_run)
        budget = f"{finished}/{self.n_trials}" if self.n_trials else f"{finished}"
        elapsed = time.monotonic() - self.started
        header = Text.assemble(
            ("optiseg search ", "bold"), (self.study_name, "bold cyan"),
            f"   trials {budget}   elapsed {format_duration(elapsed)}   ETA {format_duration(self.eta_seconds())}",
        )
        lines: list[Any] = [header]
        if self.counts:
            lines.append(Text("   ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items() if v), style="dim"))
        if self.current:
            lines.append(Text(self.current, style="bold"))
            lines.append(Text(f"  {self.stage_text}", style="yellow"))
        if self.front:
            lines.append(front_table(self.front, title="Pareto front so far"))
        return Group(*lines)


class TrainingProgress:
    """Adapter handed to the trainer: epochs reported into the search's live view."""

    def __init__(self, progress: SearchProgress):
        self.progress = progress

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.progress.epoch(epoch, epochs)

    def on_epoch_end(self, epoch: int, epochs: int, metrics: dict[str, Any]) -> None:
        self.progress.epoch(epoch, epochs, metrics)


def front_table(front: list[TrialRecord], title: str | None = None, *, show_status: bool = False,
                ties: dict[int, tuple[int, ...]] | None = None) -> Table:
    """The Pareto front (or any trials) as a rich table; ``show_status`` adds what became of each trial and why.

    A latency measured again after its trial (``optiseg confirm``, a drift check) adds a ``confirmed`` column:
    the interval and rounds of a confirmation, or the first figure it replaced; ``ties`` (from
    :func:`~optiseg.results.confirmed_front`) adds a ``tied with`` column.
    """
    from ..results import latency_revision

    revised = any(latency_revision(r) for r in front)
    tied = bool(ties)
    remote = any(r.metric("server_latency_ms") for r in front)  # a plan with a part on the server: where the time goes
    marked = not show_status and any(r.status == PARTIAL for r in front)  # a front that takes partial networks in
    table = Table(title=title, title_justify="left", header_style="bold")
    columns = [("trial", True)] + ([("status", False)] if show_status else []) + [
        ("resolution", False), ("knobs", False), ("plan", False), ("params", True), ("MACs", True),
        ("latency ms", True)] + ([("confirmed", False)] if revised else []) + (
        [("device ms", True), ("link ms", True), ("server ms", True), ("sent", True)] if remote else []) + [
        ("fps", True), ("IoU", True)] + ([("trained", False)] if marked else [])
    if tied:
        columns.append(("tied with", False))
    if show_status:
        columns.append(("note", False))
    for column, right in columns:
        table.add_column(column, justify="right" if right else "left")
    for r in front:
        cells = [str(r.number)] + ([r.status] if show_status else []) + [
            r.resolution or "", _knobs(r.knobs, r.in_channels), r.plan.label if r.plan else "",
            f"{r.params:,}" if r.params is not None else "", f"{r.macs / 1e6:.1f} M" if r.macs is not None else "",
            f"{r.latency_ms:.2f}" if r.latency_ms is not None else ""] + (
            [revision_note(r)] if revised else []) + (_where_the_time_goes(r) if remote else []) + [
            f"{r.fps:.1f}" if r.fps else "", f"{r.iou:.4f}" if r.iou is not None else "",
        ] + ([_trained_note(r)] if marked else [])
        if tied:
            cells.append(", ".join(str(n) for n in (ties or {}).get(r.number, ())))
        if show_status:
            cells.append(trial_note(r))
        table.add_row(*cells)
    return table


def _trained_note(r: TrialRecord) -> str:
    """``whole``, or ``partial: 3 of 10 epochs`` for a network a multi-fidelity study trained no further."""
    from ..results import partial_epochs

    return f"partial: {partial_epochs(r)}" if r.status == PARTIAL else "whole"


def _where_the_time_goes(r: TrialRecord) -> list[str]:
    """Device, link and server milliseconds and the bytes sent per frame of a plan ('' where it has none)."""
    def ms(name: str) -> str:
        value = r.metric(name)
        return f"{value:.2f}" if value is not None else ""

    sent = r.metric("link_bytes")
    return [ms("device_latency_ms"), ms("link_ms"), ms("server_latency_ms"), _bytes(sent) if sent is not None else ""]


def _bytes(count: float) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def revision_note(r: TrialRecord) -> str:
    """How a revised latency came about: ``[1.20, 1.27] x5 (first 1.31)``, ``drift (first 1.31)``, or ''."""
    from ..results import latency_revision

    revision = latency_revision(r)
    if not revision:
        return ""
    first = revision.get("first_ms")
    was = f" (first {first:.2f})" if first is not None else ""
    if revision.get("source") == "confirm":
        return f"[{revision['low_ms']:.2f}, {revision['high_ms']:.2f}] x{len(revision.get('rounds') or ())}{was}"
    return f"{revision.get('source', 'revised')}{was}"


def trial_note(r: TrialRecord) -> str:
    """Why a trial has the status it has, in a few words (and whose weights its network started from)."""
    note = _status_note(r)
    source = r.evaluation.details.get("initialized_from") if r.evaluation is not None else None
    if source and r.duplicate_of is None and not r.imported_from:
        note += ("; " if note else "") + f"started from the weights of {str(source).split(' (')[0]}"
    return note


def _status_note(r: TrialRecord) -> str:
    if r.duplicate_of is not None:
        return f"same plan as trial {r.duplicate_of}"
    if r.imported_from:
        return f"imported from {r.imported_from}"
    if r.status == "too_slow":
        return "over " + ", ".join(sorted(r.violations)) if r.violations else "over a constraint"
    if r.error:
        return r.error + (" (retried on the next run)" if r.error_retryable else "")
    fidelity = r.evaluation.details.get("fidelity") or {}
    if r.status == "partial":
        val = r.metric("val_iou")
        test = r.metric("iou")
        shown = f"test IoU {test:.4f} as it stands (see front --partial)" if test is not None else "not on the front"
        return (f"rung {fidelity.get('rung', 0) + 1} of {len(fidelity.get('rungs') or ()) or '?'}: {fidelity.get('epochs')} of "
                f"{fidelity.get('of')} epochs, val IoU {'n/a' if val is None else f'{val:.4f}'}; {shown}")
    if r.derived_from:
        cascade = r.evaluation.details.get("cascade") or {}
        share = cascade.get("share_sent")
        return (f"cascade: trial {r.derived_from[0]} + trial {r.derived_from[1]} on the server"
                + (f", {share:.0%} sent" if share is not None else "") + ("" if r.feasible else "; over " + ", ".join(sorted(r.violations))))
    if r.promotion_of is not None:
        return f"trial {r.promotion_of}'s network trained on (rung {r.rung + 1})"
    if r.sibling_of is not None:
        return f"another plan of trial {r.sibling_of}'s network"
    return ""


def _knobs(knobs: dict[str, Any], in_channels: int | None) -> str:
    from ..models import format_knob_value

    return ",".join(f"{k}={format_knob_value(v)}" for k, v in knobs.items()) + (" luma" if in_channels == 1 else "")
