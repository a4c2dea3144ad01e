"""`optiseg search`, `optiseg front` and `optiseg deploy`: run a study, read its front, ship a model."""

from __future__ import annotations

import argparse
import csv
import io
import shlex
import sys
from pathlib import Path

from ._common import human_count, print_json, stderr_console, stdout_console

FRONT_COLUMNS = ("trial", "status", "plan", "mode", "precision", "model", "resolution", "in_channels", "knobs",
                 "params", "macs", "activation_mb", "onnx_mb", "device_mb", "latency_ms", "latency_p90_ms", "fps",
                 "iou", "miou", "feasible", "duplicate_of", "imported_from", "retry_of", "derived_from", "error", "error_retryable",
                 "latency_first_ms", "latency_low_ms", "latency_high_ms", "latency_rounds", "latency_source", "tied_with",
                 "partial_epochs")


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search",
        help="run (or resume) the study a config file describes",
        description=(
            "Search the IoU-latency Pareto front. Each trial builds a candidate, exports it to ONNX, measures "
            "its latency on the configured device, and trains it only if it can meet `max_latency_ms`. Running "
            "the same command again resumes the study: finished trials are kept, an interrupted trial resumes "
            "from its last epoch. Several workers can share one study through a database (`storage:`)."
        ),
        epilog=(
            "examples:\n"
            "  optiseg search examples/quickstart.yaml\n"
            "  optiseg search examples/packages.yaml --n-trials 30 --timeout 8h\n"
            "  optiseg search my.yaml --force        # settings changed: archive the old study, start anew"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("config", type=Path, help="study config (YAML)")
    search.add_argument("--n-trials", type=int, help="override budget.n_trials (trials over all workers)")
    search.add_argument("--timeout", help="override budget.timeout for this run (e.g. 90s, 30m, 2h)")
    search.add_argument("--force", action="store_true", help="start anew if the stored study has other settings (the old one is archived)")
    search.add_argument("--quiet", action="store_true", help="no progress output (the log still goes to search.log)")
    search.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    search.set_defaults(handler=run_search_command)

    front = subparsers.add_parser(
        "front",
        help="print a study's Pareto front",
        description="Print the Pareto front of a study: feasible, trained plans that no other beats on every objective "
        "(by default IoU and latency). Each deployment plan of a network (FP32, INT8, ...) is a row of its own.",
        epilog="examples:\n  optiseg front runs/quickstart\n  optiseg front examples/quickstart.yaml --csv > front.csv\n"
        "  optiseg front runs/quickstart --all --json\n  optiseg front runs/budget --partial      # with networks a multi-fidelity study trained only partly, marked",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    front.add_argument("study", type=Path, help="study folder (e.g. runs/quickstart) or the study's config file")
    front.add_argument("--all", action="store_true", help="every trial with its status and cause, not only the front")
    front.add_argument("--partial", action="store_true",
                       help="also networks a multi-fidelity study trained only to a lower rung, scored on the test split "
                       "as they stand and marked partial (deployable with `optiseg deploy --trial N`)")
    front.add_argument("--mode", action="append", metavar="MODE",
                       help="only plans of this deployment mode or precision (device, int8, split, early_exit, early_exit_split, cascade, fp32; repeatable)")
    output = front.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object")
    output.add_argument("--csv", action="store_true", help="CSV on stdout")
    front.set_defaults(handler=run_front)

    deploy = subparsers.add_parser(
        "deploy",
        help="write one trained candidate as a folder ready for the device",
        description="Write the trained ONNX (with its metadata), its figures, the study config, predict.py and a README on how to run it on the device.",
        epilog="example:\n  optiseg deploy runs/quickstart --trial 3 -o deploy/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deploy.add_argument("study", type=Path, help="study folder or the study's config file")
    deploy.add_argument("--trial", type=int, required=True, help="trial number (see `optiseg front`)")
    deploy.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    deploy.set_defaults(handler=run_deploy)


def run_search_command(args: argparse.Namespace) -> int:
    from ..config import load_config, read_yaml
    from ..search import run_search

    overrides = {}
    if args.n_trials is not None or args.timeout is not None:
        budget = dict(read_yaml(args.config).get("budget") or {})
        if args.n_trials is not None:
            budget["n_trials"] = args.n_trials
        if args.timeout is not None:
            budget["timeout"] = args.timeout
        overrides["budget"] = budget
    loaded = load_config(args.config, overrides=overrides, for_search=True)
    summary = run_search(loaded, force=args.force, quiet=args.quiet or args.json)
    if args.json:
        print_json(
            {
                "study": summary.study,
                "folder": str(summary.folder),
                "storage": summary.storage,
                "sampler": summary.sampler,
                "stop_reason": summary.stop_reason,
                "finished_this_run": summary.finished_this_run,
                "counts": summary.counts,
                "elapsed_s": round(summary.elapsed_s, 1),
                "front": [r.as_dict() for r in summary.front],
                "confirmation": summary.confirmation,
                "partial_on_front": summary.partial_on_front,
            }
        )
    else:
        _print_summary(summary)
    return 130 if summary.interrupted else 0


def _print_summary(summary) -> None:
    from ..search.progress import format_duration, front_table

    counts = summary.counts
    trained = f"{counts.get('networks_trained', 0)} networks trained"
    if counts.get("training_compute_macs"):
        trained += f": {human_count(counts['training_compute_macs'])}MAC, {format_duration(counts.get('training_seconds') or 0)}"
    parts = [f"{counts.get('complete', 0)} plans complete ({trained})", f"{counts.get('too_slow', 0)} too slow"]
    for key, label in (("failed", "failed"), ("interrupted", "interrupted"), ("skipped", "skipped"), ("imported", "imported")):
        if counts.get(key):
            parts.append(f"{counts[key]} {label}")
    line = (
        f"{summary.study}: {summary.stop_reason}; {', '.join(parts)} "
        f"({summary.finished_this_run} this run, {format_duration(summary.elapsed_s)}, sampler {summary.sampler})"
    )
    if summary.interrupted:
        stderr_console().print(
            f"[yellow]stopped[/]: {line}. Run the same command to resume; an interrupted trial continues from its last epoch.",
            soft_wrap=True,
        )
        return
    console = stdout_console()
    console.print(line, soft_wrap=True)
    confirmation = summary.confirmation
    if confirmation and confirmation.get("rounds"):
        measured = sum(1 for p in confirmation["plans"] if p.get("latency_revision"))
        console.print(f"confirmed: {measured} plans in {confirmation['rounds']} interleaved rounds "
                      f"({confirmation['spent_s']:.0f} device seconds); intervals and ties: optiseg front "
                      f"{shlex.quote(str(summary.folder))}", soft_wrap=True, markup=False)
    if summary.front:
        console.print(front_table(summary.front, title=f"Pareto front ({len(summary.front)} plans)"))
        best = summary.front[-1]
        folder = shlex.quote(str(summary.folder))
        console.print(
            f"next: optiseg front {folder}  |  optiseg report {folder}  |  "
            f"optiseg deploy {folder} --trial {best.number} -o deploy/",
            soft_wrap=True, markup=False,
        )
    else:
        console.print("no feasible trained plan yet: relax the constraints or give the search more trials", soft_wrap=True)
    if summary.partial_on_front:
        console.print(f"{summary.partial_on_front} network{'s' if summary.partial_on_front > 1 else ''} trained to a lower rung only "
                      f"would stand on the front, marked partial: optiseg front {shlex.quote(str(summary.folder))} --partial",
                      soft_wrap=True, markup=False)


def _front_rows(trial_records, ties=None):
    """One flat row per trial: the columns of FRONT_COLUMNS, every named metric, the per-class IoU.

    A latency measured again after its trial adds its revision (``latency_revision``: the
    :class:`~optiseg.records.LatencyRevision` fields, the first figure among them) and
    ``confirmed``; ``tied_with`` lists the front members whose intervals overlap this one's.
    """
    from ..results import latency_revision

    rows = []
    for r in trial_records:
        revision = latency_revision(r)
        rows.append({
            "trial": r.number, "status": r.status, "plan": r.plan_key, "mode": r.mode, "precision": r.precision,
            "model": r.model, "resolution": r.resolution, "in_channels": r.in_channels, "knobs": r.knobs,
            "params": r.params, "macs": r.macs, "activation_mb": r.activation_mb, "onnx_mb": r.onnx_mb,
            "device_mb": r.metric("device_mb"), "latency_ms": r.latency_ms, "latency_p90_ms": r.latency_p90_ms,
            "fps": r.fps, "iou": r.iou, "miou": r.metric("miou") if r.iou is not None else None,
            "feasible": r.feasible, "duplicate_of": r.duplicate_of, "imported_from": r.imported_from,
            "retry_of": r.retry_of, "derived_from": list(r.derived_from) if r.derived_from else None,
            "error": r.error, "error_retryable": r.error_retryable if r.error else None,
            "metrics": dict(r.evaluation.metrics), "per_class_iou": dict(r.evaluation.per_class_iou),
            "operating_points": [p.as_dict() for p in r.evaluation.operating_points],
            "violations": r.violations,
            "latency_revision": revision, "confirmed": bool(revision and revision.get("source") == "confirm"),
            "latency_first_ms": revision.get("first_ms") if revision else None,
            "latency_low_ms": revision.get("low_ms") if revision else None,
            "latency_high_ms": revision.get("high_ms") if revision else None,
            "latency_rounds": len(revision.get("rounds") or ()) if revision else None,
            "latency_source": revision.get("source") if revision else None,
            "tied_with": list((ties or {}).get(r.number, ())),
            "partial": _partial_row(r),
        })
    return rows


def _partial_row(record) -> dict | None:
    """Where a partial network's training stopped and its file (None for any other trial)."""
    from ..results import partial_figures

    figures = partial_figures(record)
    if figures is None:
        return None
    return {"epochs": figures.get("epochs"), "of": figures.get("of"), "rung": figures.get("rung"), "onnx": figures.get("onnx")}


def _csv(rows) -> str:
    """FRONT_COLUMNS, then every other named metric any row has, then ``iou[<class>]`` per class."""
    from ..plans import METRICS

    metrics = [name for name in METRICS if name not in FRONT_COLUMNS and any(name in row["metrics"] for row in rows)]
    classes = list(dict.fromkeys(name for row in rows for name in row["per_class_iou"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*FRONT_COLUMNS, *metrics, *(f"iou[{c}]" for c in classes)],
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({
            **row, **{name: row["metrics"].get(name) for name in metrics},
            **{f"iou[{c}]": row["per_class_iou"].get(c) for c in classes},
            "knobs": ";".join(f"{k}={v}" for k, v in row["knobs"].items()),
            "tied_with": ";".join(str(n) for n in row["tied_with"]),
            "partial_epochs": f"{row['partial']['epochs']}/{row['partial']['of']}" if row["partial"] else "",
        })
    return buffer.getvalue()


def run_front(args: argparse.Namespace) -> int:
    from .. import records as store
    from ..results import confirmed_front, load_records, training_totals, with_partial
    from ..search import open_existing_study
    from ..search.objectives import objectives_from
    from ..search.progress import front_table

    handle = open_existing_study(args.study)
    trial_records = load_records(handle.study)  # revised latencies (optiseg confirm, drift checks) applied
    if args.partial:
        trial_records = with_partial(trial_records)
    objectives = objectives_from(store.study_settings(handle.study).get("objectives"))
    front = confirmed_front(trial_records, objectives)  # without revisions, exactly the point-value front
    chosen = sorted(trial_records, key=lambda r: r.number) if args.all else front.members
    if args.mode:
        from ..errors import UsageError, did_you_mean
        from ..modes import list_modes, placement_modes
        from ..plans import DEPLOYMENT_KNOBS

        known = list(dict.fromkeys([*list_modes(), *placement_modes(), *DEPLOYMENT_KNOBS["precision"]]))
        for name in args.mode:
            if name not in known:
                raise UsageError(f"--mode {name!r} is not a mode{did_you_mean(name, known)}; modes and precisions: {', '.join(known)}")
        chosen = [r for r in chosen if r.mode in args.mode or r.precision in args.mode]
    rows = _front_rows(chosen, front.ties)
    if args.json:
        print_json({"study": handle.name, "folder": str(handle.paths.folder),
                    "objectives": [{"metric": o.metric, "direction": o.direction} for o in objectives],
                    "training": training_totals(trial_records), "trials": rows})
    elif args.csv:
        sys.stdout.write(_csv(rows))
    else:
        front_name = "Pareto front with partial networks" if args.partial else "Pareto front"
        title = f"{handle.name}: {'all trials' if args.all else f'{front_name} ({len(chosen)} of {len(trial_records)} trials)'}"
        table = front_table(chosen, title=title, show_status=args.all, ties=front.ties)
        stdout_console().print(table if chosen else f"{title}: no feasible trained plan yet")
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    from .._paths import require_output
    from ..deploy import deploy_trial
    from ..errors import UsageError
    from ..results import load_records
    from ..search import open_existing_study

    require_output(args.output, "folder", "-o")
    handle = open_existing_study(args.study)
    records = {r.number: r for r in load_records(handle.study)}
    if args.trial not in records:
        raise UsageError(f"study {handle.name!r} has no trial {args.trial}; it has trials 0 to {max(records, default=-1)}")
    written = deploy_trial(records[args.trial], handle.paths.folder, handle.config_path, args.output)
    stdout_console().print(f"wrote {args.output}: " + ", ".join(p.name for p in written), soft_wrap=True)
    return 0
