"""The README's main command as a newcomer runs it: the quickstart to a Pareto front, and its report in Chromium.

The config is examples/quickstart.yaml itself, with only its output and data
folders moved to a temporary place; about four minutes on two cores.
"""

from __future__ import annotations

import json

import pytest
import yaml
from _browser import Visit
from conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2700)  # 4-5 minutes on two idle cores; much more on a busy machine
def test_quickstart_reaches_a_front_and_its_report_renders(tmp_path, browser):
    config = yaml.safe_load((REPO_ROOT / "examples" / "quickstart.yaml").read_text())
    config["data"]["root"] = str(tmp_path / "data" / "synthetic-conveyor")
    config["output"] = str(tmp_path / "runs")
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(config))

    searched = run_cli("search", str(path), "--json", timeout=2400)
    assert searched.returncode == 0, searched.stderr
    summary = json.loads(searched.stdout)
    assert summary["counts"]["complete"] == config["budget"]["n_trials"] and summary["counts"]["failed"] == 0
    front = summary["front"]
    assert len(front) >= 2
    assert [r["latency_ms"] for r in front] == sorted(r["latency_ms"] for r in front)
    assert [r["iou"] for r in front] == sorted(r["iou"] for r in front)  # slower models on the front are better
    assert front[-1]["iou"] >= 0.8, front  # a newcomer sees a network that learned something

    out = tmp_path / "quickstart.html"
    reported = run_cli("report", summary["folder"], "-o", str(out), "--json", timeout=600)
    assert reported.returncode == 0, reported.stderr
    assert out.stat().st_size < 10 * 2**20
    visit = Visit(browser, out)
    try:
        visit.wait_for_plots()
        assert visit.console_errors == [] and visit.page_errors == [] and visit.blocked == []
        assert visit.page.locator("svg.main-svg").count() >= 4
    finally:
        visit.close()
