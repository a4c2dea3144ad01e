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


@pytest.fixture(scope="session")
def browser():
    """The system's headless Chromium (Debian's `chromium`), driven by Playwright; never a downloaded browser."""
    from _browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is not installed (looked for {CHROMIUM}): install Debian's package with "
                    "`apt-get install chromium` (CI's .ci/run does), or point OPTISEG_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package `playwright` is missing: pip install -e '.[dev]' (never `playwright install`; "
                    "the tests drive the system's Chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
