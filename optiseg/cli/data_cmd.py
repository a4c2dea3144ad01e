"""`optiseg data check` and `optiseg data synth`: inspect a data set, or make a synthetic one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import print_json, print_table, stderr_console, stdout_console


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="check a data set, or generate a synthetic one",
        description="Check the data set a config describes, or generate a synthetic conveyor-belt data set.",
    )
    data.set_defaults(handler=lambda args: data.print_help() or 2)
    commands = data.add_subparsers(title="data commands", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="list every problem of the data set in a config, with its fix",
        description=(
            "Decode every image and mask of the data set in CONFIG's `data:` section and report missing\n"
            "folders, unpaired files, unreadable files, image/mask size mismatches, undeclared mask values\n"
            "and empty or tiny splits, each with the file and the fix. Exits with status 2 if any problem\n"
            "is an error. A `synthetic:` data set that does not exist yet is generated first."
        ),
        epilog="examples:\n  optiseg data check study.yaml\n  optiseg data check study.yaml --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("config", type=Path, help="study YAML file (only its data: section is read)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    check.set_defaults(handler=run_check)

    synth = commands.add_parser(
        "synth",
        help="generate a synthetic conveyor-belt data set",
        description=(
            "Write N rendered images of a package on a conveyor belt (top and side views, perspective,\n"
            "shading, printed label, varied lighting) with exact masks into OUT/{train,val,test}/{images,masks},\n"
            "split 75/10/15. --classes 2 writes 0/255 masks (package / background); 3..6 write index masks\n"
            "adding label, tape, barcode and rail."
        ),
        epilog="examples:\n  optiseg data synth data/synth --n 200\n  optiseg data synth data/synth3 --n 60 --classes 3 --size 320x180",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument("out", type=Path, help="folder to create (must not exist, or be empty)")
    synth.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    synth.add_argument("--classes", type=int, default=2, help="2 = binary (default); 3..6 = multi-class")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    synth.add_argument("--size", default="480x270", help="image WIDTHxHEIGHT in pixels (default 480x270)")
    synth.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    synth.set_defaults(handler=run_synth)


def run_check(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import check_dataset, prepare_synthetic

    cfg = load_config(args.config).config.data
    if prepare_synthetic(cfg):
        stderr_console().print(f"generated the synthetic data set at {cfg.root}")
    with stderr_console().status(f"checking {cfg.root}"):
        report = check_dataset(cfg)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 2
    total = [sum(report.class_pixels[s][i] for s in report.class_pixels) for i in range(len(report.class_names))]
    all_pixels = sum(total) or 1
    rows = [
        ("data set", str(report.root)),
        ("layout", report.layout or "not found"),
        ("images", ", ".join(f"{name} {len(samples)}" for name, samples in report.splits.items())),
        ("classes", ", ".join(f"{i} {n} ({t / all_pixels:.1%} of pixels)" for i, (n, t) in enumerate(zip(report.class_names, total)))),
    ]
    print_table(None, ("", "value"), rows)
    _print_problems(report.problems)
    console = stderr_console()
    if report.ok:
        console.print("[green]ok[/]: the data set can be trained on" + (" (see the warnings)" if report.warnings else ""))
        return 0
    console.print(f"[bold red]error:[/] {len(report.errors)} problem(s) must be fixed before training")
    return 2


def _print_problems(problems) -> None:
    """Each problem as ``severity file: message`` and its fix below (paths are never shortened)."""
    from rich.markup import escape

    console = stdout_console()
    colours = {"error": "bold red", "warning": "yellow"}
    for problem in problems:
        console.print(f"[{colours[problem.severity]}]{problem.severity}[/] {escape(problem.file)}: {escape(problem.message)}", soft_wrap=True)
        console.print(f"    fix: {escape(problem.fix)}", soft_wrap=True)


def run_synth(args: argparse.Namespace) -> int:
    from ..config import SYNTHETIC_CLASSES
    from ..data import generate_synthetic
    from ..data._layout import SPLITS
    from ..errors import UsageError

    size = _parse_size(args.size)
    if args.n < 3:
        raise UsageError(f"--n {args.n} is too small: train, val and test need at least one image each (use >= 20)")
    with stderr_console().status(f"rendering {args.n} images into {args.out}"):
        out = generate_synthetic(args.out, args.n, args.classes, seed=args.seed, size=size)
    counts = {split: len(list((out / split / "images").iterdir())) for split in SPLITS}
    classes = list(SYNTHETIC_CLASSES[: args.classes])
    if args.json:
        print_json({"root": str(out.resolve()), "splits": counts, "classes": classes, "size": list(size), "seed": args.seed})
        return 0
    print_table(
        f"wrote {out}",
        ("", "value"),
        [
            ("images", ", ".join(f"{k} {v}" for k, v in counts.items())),
            ("size", f"{size[0]}x{size[1]} (width x height)"),
            ("classes", ", ".join(f"{i} {name}" for i, name in enumerate(classes))),
            ("masks", "0/255 PNG" if args.classes == 2 else "index PNG"),
        ],
    )
    snippet = f"data:\n  root: {out.resolve()}\n" + ("" if args.classes == 2 else f"  masks: index\n  classes: [{', '.join(classes)}]\n")
    stderr_console().print(f"use it in a config:\n{snippet}", highlight=False, markup=False)
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    from ..errors import UsageError

    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise UsageError(f"--size {text!r} is invalid: write WIDTHxHEIGHT in pixels, e.g. 480x270")
    return int(width), int(height)
