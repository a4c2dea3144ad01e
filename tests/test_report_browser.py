"""The report in a real headless Chromium: loaded from file:// with the network blocked.

Needs Debian's `chromium` (`apt-get install chromium`; CI installs it) and the
Python `playwright` package (the `dev` extra), which drives that browser:
never run `playwright install`, which downloads a browser of its own.
Without them these tests fail and say what to install.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from _report_study import EVIL, FRONT, study_folder
from _browser import Visit
from conftest import run_cli

MAX_BYTES = 10 * 2**20

EXPECTED_FIGURES = {"fig-tradeoff", "fig-importance", "fig-effect-0", "fig-effect-1", "fig-effect-2", "fig-curves",
                    "fig-timing", "fig-hypervolume"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return study_folder(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(study) -> tuple[Path, dict]:
    """The report written by `optiseg report` in a fresh process, as a user runs it."""
    out = study.parent.parent / "out" / "report.html"
    done = run_cli("report", str(study), "-o", str(out), "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


@pytest.fixture(scope="module")
def visit(browser, report):
    visit = Visit(browser, report[0])
    visit.wait_for_plots()
    yield visit
    visit.close()


def test_cli_reports_size_and_time(report):
    path, result = report
    assert Path(result["path"]) == path and path.is_file()
    assert result["size_mb"] == pytest.approx(path.stat().st_size / 2**20, abs=0.01)
    assert path.stat().st_size < MAX_BYTES
    assert result["front"] == len(FRONT) and result["trials"] == 8 and result["notes"] == []


def test_every_plot_renders_as_svg_without_errors(visit):
    ids = visit.page.evaluate("() => Array.from(document.querySelectorAll('div.plot')).map(p => p.id)")
    assert set(ids) == EXPECTED_FIGURES
    svgs = visit.page.evaluate("() => Array.from(document.querySelectorAll('div.plot')).map(p => p.querySelectorAll('svg.main-svg').length)")
    assert all(n >= 1 for n in svgs)
    points = visit.page.evaluate("() => document.querySelectorAll('#fig-tradeoff .scatterlayer .point').length")
    assert points >= 2 * (4 + 3 + 2)  # both panels: trained points, front markers, not-trained strip
    assert visit.console_errors == [] and visit.page_errors == []


def test_nothing_leaves_the_machine(visit):
    assert visit.blocked == []
    assert all(url.startswith(("file:", "data:", "blob:")) for url in visit.requests)


def test_hover_shows_the_trial(visit):
    texts = visit.page.evaluate("() => document.getElementById('fig-tradeoff').data.map(t => t.text || []).flat()")
    assert any("trial 0" in t and "latency 4.00 ms" in t and "IoU 0.9000" in t for t in texts)
    assert any("trial 3" in t and "not trained (too slow)" in t for t in texts)
    # a real hover: move the mouse onto the fastest front model in the latency panel
    box = visit.page.evaluate(
        """() => {
            const gd = document.getElementById('fig-tradeoff');
            const index = gd.data.findIndex(t => t.name === 'Pareto front' && t.xaxis === 'x2');
            const trace = gd.querySelectorAll('.scatterlayer .trace')[index];
            const r = trace.querySelector('.point').getBoundingClientRect();
            return {x: r.x + r.width / 2, y: r.y + r.height / 2};
        }"""
    )
    visit.page.mouse.move(box["x"], box["y"])
    visit.page.wait_for_selector("#fig-tradeoff .hoverlayer .hovertext", timeout=5_000)
    label = visit.page.text_content("#fig-tradeoff .hoverlayer")
    assert "trial 2" in label and "params 68,750" in label and "latency 1.00 ms" in label


def test_colour_switch_recolours_by_a_knob(visit):
    page = visit.page
    page.click("#fig-tradeoff .updatemenu-header-group")
    page.locator("#fig-tradeoff .updatemenu-dropdown-button-group").get_by_text("a", exact=True).click()
    page.wait_for_function("() => document.getElementById('fig-tradeoff').layout.coloraxis.colorbar.title.text === 'a'")
    ticks = page.evaluate("() => document.getElementById('fig-tradeoff').layout.coloraxis.colorbar.ticktext")
    assert ticks == ["0.25", "0.5", "1"]
    assert visit.console_errors == [] and visit.page_errors == []


def test_user_strings_show_as_text_and_never_run(visit):
    page = visit.page
    assert visit.dialogs == []
    assert page.evaluate("() => document.querySelectorAll('script:not([type])').length") == 2  # plotly.js and the boot script
    assert page.locator("h1 .study").inner_text() == EVIL
    assert page.title() == f"optiseg report: {EVIL}"
    assert EVIL in page.locator(".overlay-legend").inner_text()  # the class name in the overlay legend
    assert EVIL in page.locator("#front").inner_text()  # per-class IoU
    assert EVIL in page.locator("#tradeoff table").inner_text()  # the failed trial's error
    assert html.escape(EVIL) not in page.locator("body").inner_text()  # escaped once, not twice


def test_sample_predictions_and_curves_are_shown(visit):
    page = visit.page
    images = page.evaluate("() => Array.from(document.querySelectorAll('table.samples img')).map(i => [i.src.slice(0, 23), i.naturalWidth])")
    assert len(images) == 3 * (1 + len(FRONT))  # 3 test images: ground truth + one prediction per front model
    assert all(src == "data:image/jpeg;base64," and width > 0 for src, width in images)
    names = page.evaluate("() => document.getElementById('fig-curves').data.map(t => t.name)")
    assert any("trial 2" in name for name in names)


def test_a_study_without_trials_renders_too(browser, tmp_path):
    import optuna

    from optiseg.report import build_report
    from optiseg.layout import StudyLayout
    from optiseg.search.storage import StorageSpec
    from optiseg.search.study import StudyHandle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="empty")
    handle = StudyHandle("empty", StudyLayout(tmp_path), StorageSpec("sqlite", "sqlite:///none.db"), study, None)
    result = build_report(handle, tmp_path / "empty.html")
    visit = Visit(browser, result.path)
    try:
        body = visit.page.locator("body").inner_text()
        assert "No candidate has been measured yet" in body
        assert visit.console_errors == [] and visit.page_errors == [] and visit.blocked == []
    finally:
        visit.close()


def test_cli_errors_name_the_problem(tmp_path):
    done = run_cli("report", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_samples_say_why_a_model_is_missing(study, tmp_path):
    from optiseg.config import load_config
    from optiseg.data import load_dataset
    from optiseg.report.samples import sample_grid
    from optiseg.results import load_records, pareto_front
    from optiseg.search import open_existing_study

    handle = open_existing_study(study)
    front = pareto_front(load_records(handle.study))
    dataset = load_dataset(load_config(study.parent.parent / "study.yaml").config.data)
    grid = sample_grid(dataset, front, tmp_path, images=2, models=2)  # a folder without the checkpoints
    assert len(grid.columns) == 3 and len(grid.rows) == 2
    assert all(row.cells[0] is not None and row.cells[1:] == (None, None) for row in grid.rows)
    assert len(grid.notes) == 3 and "2 of the 3 front models are shown" in grid.notes[0]
    assert all("no checkpoint at" in note for note in grid.notes[1:])


def test_no_samples_leaves_the_images_out(study, tmp_path):
    from optiseg.report import ReportOptions, build_report
    from optiseg.search import open_existing_study

    result = build_report(open_existing_study(study), tmp_path / "r.html", options=ReportOptions(samples=False))
    text = result.path.read_text(encoding="utf-8")
    assert "<img" not in text and "left out (--no-samples)" in text and result.front == len(FRONT)
