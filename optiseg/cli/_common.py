"""Helpers shared by the command modules: argument parsing, tables and JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import UsageError


def parse_knobs(text: str | None) -> dict[str, str]:
    """``"a=0.5,t=4"`` -> ``{"a": "0.5", "t": "4"}``; values are typed by the model's knob specs."""
    knobs: dict[str, str] = {}
    if not text:
        return knobs
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"--knobs {text!r}: {item!r} is not NAME=VALUE; write e.g. --knobs a=0.5,t=4,r=2,pp=0")
        if name.strip() in knobs:
            raise UsageError(f"--knobs {text!r}: knob {name.strip()!r} is given twice")
        knobs[name.strip()] = value.strip()
    return knobs


def format_knobs(knobs: Mapping[str, Any]) -> str:
    from ..models import format_knob_value

    return ",".join(f"{k}={format_knob_value(v)}" for k, v in knobs.items())


def print_json(payload: Any) -> None:
    """One JSON document on stdout (for machines: nothing else goes to stdout)."""
    sys.stdout.write(json.dumps(payload, indent=None, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def stdout_console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and console.width < 160:
        console = Console(highlight=False, width=160)  # pipes and logs: keep tables on one line each
    return console


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, justify_right: Iterable[int] = ()) -> None:
    """A rich table on stdout."""
    from rich.table import Table

    right = set(justify_right)
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index in right else "left")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    stdout_console().print(table)


def human_count(value: float) -> str:
    """1234567 -> '1.23 M'."""
    from .._units import si

    return si(value)


def study_config(handle):
    """The study's config: the original file (relative paths resolve from its folder), else the copy in the study folder."""
    from pathlib import Path

    from ..config import load_config
    from ..errors import OptisegError

    info_file = handle.paths.study_file
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    for path in [Path(info["config"])] if info.get("config") else []:
        if path.is_file():
            try:
                return load_config(path).config
            except OptisegError:
                continue
    return load_config(handle.config_path).config if handle.config_path is not None and handle.config_path.is_file() else None
