"""The report's data without a browser: points, front, constraints, colour options, importance, escaping."""

from __future__ import annotations

import html
import json
import re
import shlex

import numpy as np
import pytest
from _report_study import EVIL, FRONT, MAX_LATENCY_MS, MIN_IOU, memory_study

from optiseg.report import default_report_path
from optiseg.report.data import (
    BASELINE_TIER,
    candidate_tier,
    device_groups,
    failed_rows,
    format_seconds,
    front_rows,
    history_series,
    hover_text,
    hypervolume_data,
    knob_effects,
    knob_importance,
    omega_squared,
    searched_knobs,
    timing_data,
    tradeoff_data,
    training_curves,
    value_key,
)
from optiseg.report.html import ReportPage, escape, render_page, script_json, tag
from optiseg.report.samples import display_size, jpeg_uri, overlay, spread
from optiseg.results import TrialRecord, hypervolume_history, load_records, pareto_front
from optiseg.search.space import load_knob_definitions

TIERS = {name: d["tier"] for name, d in load_knob_definitions("fastscnn").items()}


@pytest.fixture(scope="module")
def study():
    return memory_study()


@pytest.fixture(scope="module")
def records(study):
    return load_records(study)


@pytest.fixture(scope="module")
def settings(study):
    from optiseg import records

    return records.study_settings(study)


@pytest.fixture(scope="module")
def tradeoff(records, settings):
    return tradeoff_data(records, max_latency_ms=MAX_LATENCY_MS, min_iou=MIN_IOU, knobs=searched_knobs(settings, records),
                         baseline=settings["search_space"]["baseline"], tiers=TIERS)


# ----------------------------------------------------------------------------------- trade-off plot


def test_points_by_status(tradeoff):
    assert [p.number for p in tradeoff.trained] == [0, 1, 2, 4]
    assert [p.number for p in tradeoff.trained if not p.feasible] == [4]  # below min IoU
    assert [(p.number, p.status) for p in tradeoff.not_trained] == [(3, "too_slow"), (7, "failed")]
    assert tradeoff.unplaced == (5,)  # failed before it was measured: nowhere to draw it
    assert tradeoff.duplicates == 1
    drawn = [p.number for p in (*tradeoff.trained, *tradeoff.not_trained)]
    assert 6 not in drawn  # the duplicate of trial 1 is not drawn twice


def test_too_slow_and_failed_have_no_invented_iou(tradeoff):
    assert all(p.iou is None for p in tradeoff.not_trained)
    slow = next(p for p in tradeoff.not_trained if p.number == 3)
    assert slow.latency_ms == 8.0 and slow.fps == pytest.approx(125.0)
    assert "not trained (too slow)" in slow.hover


def test_front_line_is_the_results_front_sorted_by_latency(tradeoff, records):
    assert tuple(p.number for p in tradeoff.front) == FRONT
    assert [p.number for p in tradeoff.front] == [r.number for r in pareto_front(records)]
    latencies = [p.latency_ms for p in tradeoff.front]
    assert latencies == sorted(latencies)
    assert all(p.on_front for p in tradeoff.front)
    assert {p.number for p in tradeoff.trained if p.on_front} == set(FRONT)


def test_constraint_lines(tradeoff):
    lines = tradeoff.constraints
    assert lines.max_latency_ms == MAX_LATENCY_MS and lines.min_iou == MIN_IOU
    assert lines.min_fps == pytest.approx(1000 / MAX_LATENCY_MS)
    assert tradeoff_data([]).constraints.min_fps is None


def test_hover_shows_knobs_sizes_latency_and_iou(tradeoff):
    hover = next(p for p in tradeoff.trained if p.number == 1).hover
    for expected in ("trial 1", "fastscnn 64x64", "a=0.5, t=6, r=3, pp=1", "params 275,000", "MACs 20.0 M",
                     "latency 2.00 ms (p90 2.20)", "500.0 fps", "IoU 0.8800"):
        assert expected in hover


def test_colour_options_cover_every_searched_knob_and_tier(tradeoff, settings):
    options = {o.name: o for o in tradeoff.color_options}
    assert list(options) == ["tier", *settings["search_space"]["choices"]]
    drawn = {p.number for p in (*tradeoff.trained, *tradeoff.not_trained)}
    for option in options.values():
        assert set(option.codes) == drawn
        assert all(0 <= code < len(option.labels) for code in option.codes.values())
    assert options["a"].labels == ("0.25", "0.5", "1")
    assert options["resolution"].labels == ("64x64", "96x96")
    tier = options["tier"]
    assert tier.labels == ("baseline", "beginner", "intermediate")
    label = {n: tier.labels[c] for n, c in tier.codes.items()}
    assert label[0] == "baseline" and label[3] == "beginner" and label[1] == "intermediate" and label[7] == "intermediate"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"resolution": "64x64", "a": 1.0, "t": 6}, BASELINE_TIER),
        ({"resolution": "96x96", "a": 1.0, "t": 6}, "beginner"),
        ({"resolution": "64x64", "a": 0.5, "t": 6}, "intermediate"),
        ({"resolution": "96x96", "a": 1.0, "t": 6, "r": 1}, "expert"),
        ({"resolution": "64x64", "a": 1, "t": 6, "pp": True}, BASELINE_TIER),  # True == 1, "64" == "64x64"
    ],
)
def test_tier_is_the_highest_tier_among_changed_knobs(values, expected):
    baseline = {"resolution": 64, "a": 1.0, "t": 6, "r": 3, "pp": 1}
    assert candidate_tier(values, baseline, TIERS) == expected


def test_one_category_per_value_however_it_is_written():
    records = [TrialRecord.make(number=i, status="complete", resolution=res, iou=0.5, latency_ms=1.0 + i, feasible=True)
               for i, res in enumerate(["192", "192x192", "96x96"])]
    data = tradeoff_data(records, knobs=["resolution"])
    option = data.color_options[1]
    assert option.labels == ("96x96", "192x192") and option.codes == {0: 1, 1: 1, 2: 0}


def test_value_order_and_equality():
    assert value_key("resolution", 192) == value_key("resolution", "192x192") == value_key("resolution", "192")
    ordered = sorted(["544x960", "96", "192x192", 128], key=lambda v: value_key("resolution", v))
    assert ordered == ["96", 128, "192x192", "544x960"]
    assert sorted([1, 0.125, 0.5], key=lambda v: value_key("a", v)) == [0.125, 0.5, 1]


# ----------------------------------------------------------------------------------- tables


def test_front_rows_carry_a_runnable_deploy_command(records):
    study_arg = "runs/my study's \"x\""
    rows = front_rows(records, study_arg)
    assert tuple(r.number for r in rows) == FRONT
    row = rows[0]
    assert shlex.split(row.deploy_command) == ["optiseg", "deploy", study_arg, "--trial", "2", "-o", f"deploy/{row.candidate}"]
    assert dict(row.class_iou)[EVIL] == pytest.approx(0.70)
    assert row.params == 68_750 and row.fps == pytest.approx(1000.0)


def test_failed_rows_list_every_failure_with_its_error(records):
    rows = failed_rows(records)
    assert [r.number for r in rows] == [5, 7]
    assert EVIL in rows[0].error and rows[1].error == "training diverged"


# ----------------------------------------------------------------------------------- what mattered


def _rec(number, a, t, iou, latency, status="complete"):
    return TrialRecord.make(number=number, status=status, candidate=f"c{number}", knobs={"a": a, "t": t}, resolution="64x64",
                       in_channels=3, iou=iou, latency_ms=latency, feasible=status == "complete")


def test_omega_squared_known_answers():
    assert omega_squared([[1.0, 1.0], [2.0, 2.0]]) == pytest.approx(1.0)
    assert omega_squared([[1.0, 2.0], [1.0, 2.0]]) == 0.0  # same spread in both groups: no effect
    assert omega_squared([[3.0, 3.0], [3.0]]) == 0.0
    assert omega_squared([[1.0], [2.0]]) is None  # one value per group: no within-group variance to judge by
    assert omega_squared([[1.0, 2.0, 3.0]]) is None


def test_importance_finds_the_knob_that_decides():
    # IoU depends on a only; latency on t only (log scale); every combination sampled twice
    records = [_rec(i * 4 + j, a, t, 0.6 + 0.3 * a + 0.001 * j, 10.0 * t * (1 + 0.01 * j))
               for i, (a, t) in enumerate([(0.25, 2), (0.25, 6), (1.0, 2), (1.0, 6)]) for j in range(2)]
    result = knob_importance(records, ["a", "t"])
    assert dict(result.iou)["a"] > 0.95 and dict(result.iou)["t"] < 0.05
    assert dict(result.latency)["t"] > 0.95 and dict(result.latency)["a"] < 0.05
    assert result.iou[0][0] == "a" and result.latency[0][0] == "t"
    assert result.iou_note is None and result.latency_note is None


def test_importance_counts_too_slow_candidates_for_latency_only():
    records = [_rec(0, 0.25, 2, 0.7, 1.0), _rec(1, 0.25, 2, 0.7, 1.1), _rec(2, 1.0, 2, None, 50.0, "too_slow"),
               _rec(3, 1.0, 2, None, 55.0, "too_slow")]
    result = knob_importance(records, ["a", "t"])
    assert result.iou == () and "2 trained" in result.iou_note
    assert dict(result.latency)["a"] > 0.9


@pytest.mark.parametrize("n", [0, 1, 2])
def test_importance_of_a_small_study_says_so(n):
    records = [_rec(i, 0.25 * (i + 1), 2, 0.7, 1.0 + i) for i in range(n)]
    result = knob_importance(records, ["a", "t"])
    assert result.iou == () and result.latency == ()
    assert result.iou_note.startswith("not enough trials yet") and result.latency_note.startswith("not enough trials yet")


def test_importance_without_variety_says_so():
    records = [_rec(i, 0.5, 2, 0.7 + 0.01 * i, 1.0 + i) for i in range(4)]
    result = knob_importance(records, ["a", "t"])
    assert result.iou == () and "no knob took two values" in result.iou_note


def test_knob_effects(records, settings):
    effects = {e.knob: e for e in knob_effects(records, searched_knobs(settings, records))}
    a = effects["a"]
    assert a.labels == ("0.25", "0.5", "1")
    assert sorted(p.number for p in a.latency) == [0, 1, 2, 3, 4]  # too slow included, duplicate and failures left out
    assert sorted(p.number for p in a.iou) == [0, 1, 2, 4]
    assert a.latency_median == (1.0, 2.5, 6.0)  # a=1: trial 0 (4 ms) and the too-slow trial 3 (8 ms)
    assert a.iou_median == (0.7, pytest.approx(0.64), 0.9)
    assert effects["resolution"].labels == ("64x64", "96x96")


# ----------------------------------------------------------------------------------- progress, cost, context


def test_hypervolume_history_uses_the_constraint_as_reference(records):
    data = hypervolume_data(records, MAX_LATENCY_MS)
    assert data.reference_latency_ms == MAX_LATENCY_MS
    assert list(zip(data.numbers, data.values)) == hypervolume_history(records, MAX_LATENCY_MS)
    assert list(data.values) == sorted(data.values)
    # front (1 ms, .70), (2 ms, .88), (4 ms, .90) up to 5 ms
    assert data.values[-1] == pytest.approx(1 * 0.70 + 2 * 0.88 + 1 * 0.90)


def test_timing_breakdown(records):
    timing = timing_data(records)
    assert timing.numbers == (0, 1, 2, 3, 4, 5, 7)  # the duplicate (6) did no work of its own
    failed = timing.numbers.index(5)  # failed while building: its whole duration is "other"
    assert all(timing.seconds[key][failed] == 0 for key in ("profile_s", "export_s", "measure_s", "train_s"))
    assert timing.totals["train_s"] == pytest.approx(4 * 20.0)
    assert timing.totals["measure_s"] == pytest.approx(6 * 1.5)
    assert all(len(v) == len(timing.numbers) for v in timing.seconds.values())


def test_device_facts(records):
    (group,) = device_groups(records)
    facts = dict(group.facts)
    assert group.device == "local:bench" and group.trials == 6
    assert facts["CPU"] == "Test CPU <b>x</b>" and facts["threads"] == "2" and facts["onnxruntime"] == "1.31.1"
    assert facts["CPU governor"] == "performance" and facts["cores"] == "4 (2 usable)"


def test_history_series_reads_the_trainer_history_defensively():
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_iou": 0.7, "best": True},
               {"epoch": 2, "train_loss": 0.4, "val_loss": float("nan"), "val_iou": None, "best": False}]
    epochs, series, best = history_series(history)
    assert epochs == (1, 2) and best == 1
    assert series["train_loss"] == (0.5, 0.4) and series["val_loss"] == (0.6, None) and series["val_iou"] == (0.7, None)
    assert history_series({"epoch": [1, 2], "val_iou": [0.5, 0.6]})[1] == {"val_iou": (0.5, 0.6)}
    for junk in (None, [], "history", [1, 2], {"a": [1], "b": [1, 2]}, [{"epoch": 1, "note": "x"}]):
        assert history_series(junk) is None


def test_training_curves_note_missing_histories(records):
    front = pareto_front(records)
    curves = training_curves(front, {2: [{"epoch": 1, "val_iou": 0.5}]})
    assert [c.number for c in curves.curves] == [2] and curves.missing == (1, 0)


def test_format_seconds():
    assert format_seconds(5.25) == "5.2 s" and format_seconds(75) == "1 min 15 s" and format_seconds(4000) == "1 h 06 min"


# ----------------------------------------------------------------------------------- escaping


def test_hover_text_escapes_user_strings():
    record = TrialRecord.make(number=1, status="failed", model="m<i>", knobs={"a": EVIL}, resolution="64x64", error=EVIL)
    text = hover_text(record)
    assert "<script>" not in text and "<i>" not in text
    assert html.escape(EVIL) in text


def test_tag_escapes_children_and_attributes():
    markup = tag("td", EVIL, title=EVIL, class_="x", data_figure="f")
    assert "<script>" not in markup
    assert markup.startswith('<td title="&lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &#x27;x&#x27; &amp;amp;"')
    assert 'class="x"' in markup and 'data-figure="f"' in markup
    assert tag("p", tag("b", "1 < 2")) == "<p><b>1 &lt; 2</b></p>"  # markup made by tag() is kept, text inside escaped
    assert escape(None) == ""


def test_script_json_cannot_close_its_script():
    value = {"name": "</script><script>alert(1)</script>", "line": "a\u2028b", "amp": "&"}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def _page(records, settings, name=EVIL) -> ReportPage:
    from optiseg.report.data import budget_facts, flatten_settings, search_space_rows, status_counts
    from optiseg.report.samples import SampleCell, SampleGrid, SampleRow

    knobs = searched_knobs(settings, records)
    front = pareto_front(records)
    pixel = jpeg_uri(overlay(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8)))
    grid = SampleGrid(("ground truth", "trial 2"), (SampleRow(f"{EVIL}.jpg", (SampleCell(pixel, "ground truth"), None)),),
                      (("background", "#000000"), (EVIL, "#ff0000")), (f"note {EVIL}",))
    return ReportPage(
        study=name, generated="2026-01-01T00:00:00", optiseg_version="0.1.0", search_version="0.1.0",
        folder=f"/runs/{EVIL}", storage="sqlite:///x.db", counts=status_counts(records),
        tradeoff=tradeoff_data(records, max_latency_ms=MAX_LATENCY_MS, min_iou=MIN_IOU, knobs=knobs,
                               baseline=settings["search_space"]["baseline"], tiers=TIERS),
        front=front_rows(records, f"runs/{EVIL}"), failed=failed_rows(records), importance=knob_importance(records, knobs),
        effects=knob_effects(records, knobs), samples=grid, samples_note=None,
        curves=training_curves(front, {r.number: [{"epoch": 1, "val_iou": 0.5, "train_loss": 1.0}] for r in front}),
        hypervolume=hypervolume_data(records, MAX_LATENCY_MS), timing=timing_data(records),
        budget=budget_facts(records, {"n_trials": 12}, 60.0), data=(), devices=device_groups(records),
        space=search_space_rows(settings, TIERS), settings=flatten_settings(settings),
        config_name=f"{EVIL}.yaml", config_text=f"study: {EVIL}\n", notes=(f"a note about {EVIL}",),
    )


def test_page_escapes_every_user_string(records, settings):
    text = render_page(_page(records, settings), plotly_js="/* plotly.js */")
    scripts = re.findall(r"<script[^>]*>", text)
    figures = [s for s in scripts if "data-figure" in s]
    # the figures' JSON, the template, the config, plotly.js, the boot script: nothing else
    assert len(scripts) == len(figures) + 4
    assert "alert(1)" not in "".join(re.findall(r"<script>(.*?)</script>", text, re.S))
    assert "<script>alert(1)" not in text
    escaped = html.escape(EVIL)
    assert f"<title>optiseg report: {escaped}</title>" in text
    for where in (f'<span class="study">{escaped}</span>', f"study: {escaped}", f"a note about {escaped}", f"{escaped}.jpg"):
        assert where in text
    assert "http://" not in text and "https://" not in text
    assert "Content-Security-Policy" in text.split("<title>")[0]  # before anything it governs


def test_figures_carry_every_trial_and_the_colour_switch(records, settings):
    from optiseg.report.figures import tradeoff_figure

    data = tradeoff_data(records, max_latency_ms=MAX_LATENCY_MS, min_iou=MIN_IOU, knobs=searched_knobs(settings, records),
                         baseline=settings["search_space"]["baseline"], tiers=TIERS)
    fig = tradeoff_figure(data)
    names = {t.name for t in fig.data}
    assert {"trained", "trained, below min IoU", "Pareto front", "not trained (too slow or failed)"} <= names
    numbers = {int(n) for t in fig.data if t.customdata is not None for n in t.customdata}
    assert numbers == {0, 1, 2, 3, 4, 7}
    (menu,) = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == ["tier", "resolution", "a", "t"]
    recoloured = menu.buttons[2].args[2]
    for index, colours in zip(recoloured, menu.buttons[2].args[0]["marker.color"]):
        option = data.color_options[2]
        assert list(colours) == [option.codes[int(n)] for n in fig.data[index].customdata]
    assert len(fig.layout.shapes) == 2 * 2 + 2  # latency line in both rows of both columns, IoU line in both columns


def test_empty_study_renders(settings):
    text = render_page(_page([], settings, name="empty"), plotly_js="/* plotly.js */")
    assert "No candidate has been measured yet" in text and "No feasible trained candidate yet" in text


# ----------------------------------------------------------------------------------- samples and paths


def test_spread_keeps_both_ends():
    assert spread(list(range(10)), 3) == [0, 4, 9]
    assert spread([1, 2], 6) == [1, 2] and spread([1, 2, 3], 1) == [1] and spread([1], 0) == []


def test_overlay_paints_classes_but_not_background():
    image = np.full((2, 2, 3), 100, np.uint8)
    classes = np.array([[0, 1], [255, 0]], np.uint8)
    out = overlay(image, classes)
    assert (out[0, 0] == 100).all() and (out[1, 1] == 100).all()
    assert not (out[0, 1] == 100).all() and not (out[1, 0] == 100).all()
    assert display_size((540, 960, 3), 320) == (180, 320) and display_size((960, 540), 320) == (320, 180)
    assert display_size((64, 96), 320) == (64, 96)
    assert jpeg_uri(out).startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize(("name", "expected"), [("quickstart", "quickstart.html"), (EVIL, "script_alert_1_script_q_x_amp.html"),
                                                ("../..", "study.html")])
def test_default_report_path_is_a_safe_file_name(name, expected):
    path = default_report_path(name)
    assert path.parent.name == "reports" and path.name == expected


def test_the_page_of_the_whole_expert_space_stays_under_10_mb():
    """Every candidate of Fast-SCNN's expert space (2520) measured, half of them trained: the largest page there is."""
    import itertools

    from optiseg.search.space import build_search_space

    space = build_search_space("fastscnn", "expert", {}, 512)
    settings = {"search_space": space.as_dict(), "constraints": {"max_latency_ms": 30.0}}
    rng = np.random.default_rng(0)
    records = []
    for number, values in enumerate(itertools.product(*space.choices.values())):
        knobs = dict(zip(space.choices, values))
        latency = float(rng.uniform(0.5, 60.0))
        trained = latency <= 30.0
        records.append(TrialRecord.make(
            number=number, status="complete" if trained else "too_slow", candidate=f"c{number}", model="fastscnn",
            knobs={k: knobs[k] for k in ("a", "t", "r", "pp")}, resolution=f"{knobs['resolution']}x{knobs['resolution']}",
            in_channels=knobs["in_channels"], params=1_122_673, macs=829_591_552, activation_mb=100.1, latency_ms=latency,
            latency_p90_ms=latency * 1.1, iou=float(rng.uniform(0.5, 0.98)) if trained else None, feasible=trained,
            timings={"profile_s": 0.3, "export_s": 1.2, "measure_s": 4.0, **({"train_s": 600.0} if trained else {})},
            seconds=700.0, metrics={"test_class_iou": {"background": 0.99, "package": 0.9}},
            latency={"facts": {"cpu_model": "Cortex-A72"}, "threads": 4, "device_key": "pi"},
        ))
    assert len(records) == space.size == 2520
    text = render_page(_page(records, settings))
    # the sample images come on top: at most 6 models x 3 images + 3 ground truths, each within 320 x 320 pixels
    assert len(text.encode()) < 9 * 2**20


def test_the_front_table_shows_confirmed_intervals_and_ties():
    from optiseg.records import LatencyRevision, apply_revision
    from optiseg.report.data import front_rows

    def confirmed(number, size, iou, ms, low, high):
        record = TrialRecord.make(number, "complete", model="fastscnn", resolution=f"{size}x{size}", knobs={"a": 0.25},
                                  iou=iou, latency_ms=ms, fps=1000 / ms, feasible=True)
        return apply_revision(record, LatencyRevision(record.plan_key, ms, low, high, (ms, low, high), "confirm", first_ms=ms * 1.2))

    rows = front_rows([confirmed(0, 64, 0.80, 1.0, 0.9, 1.1), confirmed(1, 96, 0.85, 1.05, 0.95, 1.2),
                       confirmed(2, 128, 0.90, 2.0, 1.9, 2.1)], "runs/x")
    assert [r.number for r in rows] == [0, 1, 2]
    assert rows[0].tied_with == (1,) and rows[1].tied_with == (0,) and rows[2].tied_with == ()
    assert rows[0].confirmed == "[0.90, 1.10] ms, 3 rounds (first 1.20)"
