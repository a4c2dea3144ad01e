"""Shared fixtures. Service fixtures (sshd, PostgreSQL, Chromium) live next to the tests that use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "datasets" / "packages"


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `python -m optiseg ARGS` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "optiseg", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        cwd=cwd,
    )


@pytest.fixture
def cli():
    return run_cli
