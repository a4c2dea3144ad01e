"""Writing one top-level section of a study config, keeping the rest of the file (comments included) as it is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .._atomic import write_text_atomic
from ..errors import ConfigError


def write_section(path: str | Path, key: str, value: dict[str, Any]) -> None:
    """Set the top-level ``key:`` of the YAML file at ``path`` to ``value``: its block is replaced, or appended.

    The block of a top-level key runs to the next line that starts at the margin (another key, or a
    comment, which belongs to what follows it). The file is
    read back with the strict loader before it replaces the old one, so a file that no longer parses is
    never left behind.
    """
    from . import read_yaml

    path = Path(path)
    read_yaml(path)  # exists, parses, is a mapping: or a ConfigError naming what is wrong
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    block = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
    start = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(key)}\s*:", line)), None)
    if start is None:
        text = "".join(lines)
        text = text + ("" if not text or text.endswith("\n") else "\n") + block
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t" or lines[end].startswith("- ")):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():  # keep the blank lines before the next key
            end -= 1
        text = "".join(lines[:start]) + block + "".join(lines[end:])
    try:
        written = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # pragma: no cover - a block safe_dump wrote always parses
        raise ConfigError(f"{path}: writing {key}: would not parse ({exc})") from None
    if not isinstance(written, dict) or written.get(key) != value:
        raise ConfigError(f"{path}: cannot write the {key}: section safely (is it written in an unusual form?)",
                          hint=f"write it by hand: {key}: {value}")
    write_text_atomic(path, text)
