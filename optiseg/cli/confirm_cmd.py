"""`optiseg confirm`: measure a study's front again in interleaved rounds, with an interval per plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import print_json, stdout_console

DESCRIPTION = """\
Measure the Pareto front again, and every plan within noise of it, in interleaved rounds
(A B C A B C ..., one measurement per plan per round) on the study's device. Each plan gets
the median of its rounds' medians and a 90 % confidence interval of it (order statistics);
the front is recomputed from those, and plans whose intervals overlap are shown as ties.

Chosen: the front members, and each trained feasible plan at most --margin (default 10 %)
slower than the front at its IoU, or 3 x its median's measured spread if larger. The budget
counts device seconds: as many plans as 3 rounds of fit (front first, then nearest), then
more rounds while one more fits, up to --rounds. The revised figures are kept in the study:
`optiseg front`, `report` and `--json` show them; each trial keeps its first figure.
A search does this by itself when it ends (config: `confirm: {rounds: 5, budget_s: 120}`).
"""

EPILOG = """\
examples:
  optiseg confirm runs/quickstart
  optiseg confirm examples/quickstart.yaml --rounds 7 --budget-s 300
  optiseg confirm runs/quickstart --json --quiet > confirmed.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    confirm = subparsers.add_parser(
        "confirm",
        help="measure a study's front again in interleaved rounds (intervals, ties)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    confirm.add_argument("study", type=Path, help="study folder (e.g. runs/quickstart) or the study's config file")
    confirm.add_argument("--rounds", type=int, default=5, help="rounds at most (at least 3; default 5)")
    confirm.add_argument("--budget-s", type=float, default=120.0, metavar="S",
                         help="device seconds the rounds may take (default 120)")
    confirm.add_argument("--margin", type=float, default=0.10,
                         help="confirm plans at most this fraction slower than the front at their IoU (default 0.10)")
    confirm.add_argument("--json", action="store_true", help="print what was measured and the new front as one JSON object")
    confirm.add_argument("--quiet", action="store_true", help="no progress output (lines still go to the study's search.log)")
    confirm.set_defaults(handler=run_confirm)


def run_confirm(args: argparse.Namespace) -> int:
    import contextlib

    from .. import records as store
    from ..devices import open_pool
    from ..errors import UsageError
    from ..search import open_existing_study
    from ..search.confirm import MIN_ROUNDS, ConfirmProgress, confirm_study, study_device
    from ..search.objectives import objectives_from
    from ..search.progress import SearchProgress
    from ..search.storage import SQLiteWriterLock

    if args.rounds < MIN_ROUNDS:
        raise UsageError(f"--rounds {args.rounds}: confirmation needs at least {MIN_ROUNDS} rounds to give an interval")
    if not args.budget_s > 0:
        raise UsageError(f"--budget-s {args.budget_s:g}: give a positive number of device seconds, e.g. --budget-s 120")
    if not 0 <= args.margin <= 1:
        raise UsageError(f"--margin {args.margin:g}: give a fraction between 0 and 1, e.g. --margin 0.1")
    handle = open_existing_study(args.study)
    device = study_device(handle)
    objectives = objectives_from(store.study_settings(handle.study).get("objectives"))
    lock = SQLiteWriterLock(handle.storage.path) if handle.storage.kind == "sqlite" else contextlib.nullcontext()
    quiet = args.quiet or args.json
    with lock, open_pool(device) as pool:
        for runner in pool.runners:
            runner.connect()  # a host key, login or onnxruntime problem: said now, before any round
        progress = ConfirmProgress.for_search(SearchProgress(handle.paths.log, quiet=quiet))  # lines also to search.log
        report = confirm_study(handle.study, handle.paths, pool, objectives, rounds=args.rounds, budget_s=args.budget_s,
                               margin=args.margin, progress=progress)
    if args.json:
        print_json({"study": handle.name, "folder": str(handle.paths.folder), **report.as_dict()})
    else:
        print_report(handle.name, report)
    return 0


def print_report(name: str, report) -> None:
    """The confirmation as a table (one row per chosen plan), then the recomputed front."""
    from rich.table import Table

    from ..search.confirm import CONFIDENCE, first_latency
    from ..search.progress import front_table

    console = stdout_console()
    members = {r.number for r in report.front.members}
    table = Table(title=f"{name}: confirmation, {report.rounds} interleaved rounds on {report.device or 'the device'} "
                        f"({report.spent_s:.0f} of {report.budget_s:g} device seconds)",
                  title_justify="left", header_style="bold")
    for column, right in (("trial", True), ("plan", False), ("IoU", True), ("first ms", True), ("confirmed ms", True),
                          (f"{CONFIDENCE:.0%} interval", True), ("rounds", True), ("front", False), ("tied with", False),
                          ("chosen as", False)):
        table.add_column(column, justify="right" if right else "left")
    for row in report.rows:
        r, revision = row.record, row.revision
        first = first_latency(r)
        chosen = "front member" if row.on_front else f"{row.gap:+.0%} off the front (noise {row.noise:.0%})"
        tied = ", ".join(str(n) for n in report.front.tied_with(r.number))
        table.add_row(
            str(r.number), r.plan_key or "", f"{r.iou:.4f}" if r.iou is not None else "",
            f"{first:.3f}" if first is not None else "",
            f"{revision.latency_ms:.3f}" if revision else "not measured",
            f"[{revision.low_ms:.3f}, {revision.high_ms:.3f}]" if revision else row.note,
            str(len(revision.rounds)) if revision else "", "yes" if r.number in members else "no", tied, chosen,
        )
    console.print(table if report.rows else f"{name}: nothing to confirm ({report.stop_reason})", soft_wrap=not report.rows)
    if report.rows:
        coverage = {row.coverage for row in report.rows if row.coverage is not None}
        if any(c < CONFIDENCE for c in coverage):
            console.print(f"note: with {report.rounds} rounds [min, max] is the narrowest order-statistic interval and covers "
                          f"the median {min(coverage):.1%} of the time; 5 rounds or more reach {CONFIDENCE:.0%}.",
                          soft_wrap=True, markup=False)
        console.print(f"stopped: {report.stop_reason}", soft_wrap=True, markup=False)
    if report.front.members:
        console.print(front_table(report.front.members, title=f"Pareto front, confirmed ({len(report.front.members)} plan{'' if len(report.front.members) == 1 else 's'})",
                                  ties=report.front.ties))
