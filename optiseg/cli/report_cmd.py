"""`optiseg report`: a study's Pareto report as one offline HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import print_json, stdout_console


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report",
        help="write a study's interactive Pareto report (one offline HTML file)",
        description=(
            "Write one self-contained HTML page about a study: the IoU-fps and IoU-latency trade-off with the Pareto "
            "front, the front's models with their deploy commands, which knobs mattered, the front's predictions on "
            "test images and their training curves, and the device, data and budget behind the figures. The file "
            "embeds plotly.js and every image: open it anywhere, offline."
        ),
        epilog=(
            "examples:\n"
            "  optiseg report runs/quickstart                      # writes reports/quickstart.html\n"
            "  optiseg report examples/quickstart.yaml -o qs.html --open\n"
            "  optiseg report runs/quickstart --no-samples --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("study", type=Path, help="study folder (e.g. runs/quickstart) or the study's config file")
    report.add_argument("-o", "--output", type=Path, help="HTML file to write (default: reports/<study>.html)")
    report.add_argument("--open", action="store_true", help="open the report in the default web browser")
    report.add_argument("--no-samples", action="store_true",
                        help="leave out the front models' predictions on test images (no checkpoint or data set needed)")
    report.add_argument("--json", action="store_true", help="print the result (path, size, time) as one JSON object")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from .._paths import require_output
    from ..report import ReportOptions, build_report, default_report_path, summarize
    from ..search import open_existing_study

    handle = open_existing_study(args.study)
    out = args.output or default_report_path(handle.name)
    require_output(out, "file", "-o" if args.output else "the report")  # before the report is built
    result = build_report(handle, out, study_arg=str(args.study), options=ReportOptions(samples=not args.no_samples))
    if args.json:
        print_json({
            "study": handle.name, "path": str(result.path), "size_mb": result.size_mb, "seconds": result.seconds,
            "trials": result.trials, "front": result.front, "notes": list(result.notes),
        })
    else:
        console = stdout_console()
        console.print(summarize(result), soft_wrap=True, markup=False)
        for note in result.notes:
            console.print(f"  note: {note}", soft_wrap=True, markup=False)
    if args.open:
        import webbrowser

        if not webbrowser.open(result.path.resolve().as_uri()):
            console = stdout_console()
            console.print(f"no web browser found here; open {result.path.resolve().as_uri()} yourself", soft_wrap=True, markup=False)
    return 0
