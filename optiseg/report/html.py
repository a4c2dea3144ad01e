"""The report page: one self-contained HTML file, escaped by construction.

Markup is built with :func:`tag`, which escapes every string child and every
attribute value unless it is :class:`Markup` made here; so text from the user
(study and class names, paths, knob values, errors, the config) cannot turn
into markup. Figures travel as JSON in ``<script type="application/json">``
blocks with ``<``, ``>`` and ``&`` written as ``\\u`` escapes, so no string in
them can close the script; plotly.js is embedded once and a content security
policy forbids the page any network access.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .data import (
    CurvesData,
    DeviceGroup,
    Fact,
    FailedRow,
    FrontRow,
    HypervolumeData,
    ImportanceData,
    KnobEffect,
    LatencyCheckData,
    SpaceRow,
    SplitTable,
    TimingData,
    TradeoffData,
    format_seconds,
)
from .samples import SampleGrid

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
    "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


class Markup(str):
    """A string that is already HTML: :func:`tag` inserts it as it is."""


def escape(value: Any) -> Markup:
    """``value`` as HTML text (``Markup`` passes through unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def tag(name: str, *children: Any, **attributes: Any) -> Markup:
    """``<name attributes>children</name>``; children and attribute values escaped, None and False left out.

    Attribute names drop one trailing underscore and turn inner underscores into
    dashes: ``class_="x"``, ``data_figure="id"``.
    """
    attrs = []
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        attrs.append(f" {key}" if value is True else f' {key}="{escape(value)}"')
    inner = "".join(escape(child) for child in _flatten(children))
    return Markup(f"<{name}{''.join(attrs)}>{inner}</{name}>")


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if child is None:
            continue
        if isinstance(child, (list, tuple)):
            yield from _flatten(child)
        else:
            yield child


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script>``: ``<``, ``>``, ``&`` and line separators as ``\\u`` escapes."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return Markup(text)


def _clean(value: Any) -> Any:
    """NaN and infinities (not JSON) as null, recursively."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class ReportPage(NamedTuple):
    """Everything the page shows, already computed."""

    study: str
    generated: str
    optiseg_version: str
    search_version: str | None
    folder: str
    storage: str
    counts: Mapping[str, int]
    tradeoff: TradeoffData
    front: tuple[FrontRow, ...]
    failed: tuple[FailedRow, ...]
    importance: ImportanceData
    effects: tuple[KnobEffect, ...]
    samples: SampleGrid | None
    samples_note: str | None
    curves: CurvesData
    hypervolume: HypervolumeData
    timing: TimingData
    budget: tuple[Fact, ...]
    data: tuple[Fact, ...]
    devices: tuple[DeviceGroup, ...]
    space: tuple[SpaceRow, ...]
    settings: tuple[Fact, ...]
    config_name: str | None
    config_text: str | None
    notes: tuple[str, ...] = ()
    latency_checks: LatencyCheckData | None = None
    split: tuple[SplitTable, ...] = ()
    partial_front: tuple[FrontRow, ...] = ()  # multi-fidelity: partial networks that would join the front, marked


class _Figures:
    """Collects figures as (div id, JSON) and hands out their placeholders."""

    def __init__(self) -> None:
        self.blocks: list[Markup] = []
        self.template: Any = None

    def add(self, figure_id: str, figure, caption: str | None = None) -> Markup:
        spec = json.loads(figure.to_json())
        layout = spec.setdefault("layout", {})
        template = layout.pop("template", None)
        if self.template is None:
            self.template = template
        spec = _clean(spec)
        self.blocks.append(tag("script", script_json(spec), type="application/json", data_figure=figure_id))
        return tag("figure", tag("div", id=figure_id, class_="plot"), tag("figcaption", caption) if caption else None)


def render_page(page: ReportPage, plotly_js: str | None = None) -> str:
    """The whole HTML document of ``page``; ``plotly_js`` defaults to the bundle shipped with plotly."""
    from . import figures as fg

    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():
        raise ValueError("the plotly.js bundle contains '</script' and cannot be inlined")
    figs = _Figures()
    sections = [
        _summary(page),
        _tradeoff_section(page, figs, fg),
        _front_section(page),
        _mattered_section(page, figs, fg),
        _output_section(page, figs, fg),
        _context_section(page, figs, fg),
    ]
    head = Markup(
        '<meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CONTENT_SECURITY_POLICY)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
    )
    body = [
        tag("header", tag("h1", "optiseg report: ", tag("span", page.study, class_="study")), _nav()),
        tag("main", *sections),
        tag("footer", f"Generated {page.generated} by optiseg {page.optiseg_version}. "
            "This file works offline: plotly.js and every image are embedded."),
        *figs.blocks,
        tag("script", script_json(figs.template or {}), type="application/json", id="plot-template"),
        tag("script", script_json(PLOT_CONFIG), type="application/json", id="plot-config"),
        Markup("<script>" + plotly_js + "</script>"),
        Markup("<script>" + _BOOT_JS + "</script>"),
    ]
    return _document(head, f"optiseg report: {page.study}", body)


def _document(head: Markup, title: str, body: Sequence[Markup]) -> str:
    # Written out by hand so that the CSP meta element comes first in <head>, before anything it governs.
    return (
        '<!DOCTYPE html>\n<html lang="en"><head>' + head + tag("title", title) + tag("style", Markup(_CSS))
        + "</head>" + tag("body", *body) + "</html>\n"
    )


_NAV = (("tradeoff", "Trade-off"), ("front", "Pareto front"), ("mattered", "What mattered"),
        ("output", "Look at the output"), ("context", "Context"))


def _nav() -> Markup:
    return tag("nav", [tag("a", label, href=f"#{anchor}") for anchor, label in _NAV])


def _section(anchor: str, title: str, *content: Any) -> Markup:
    return tag("section", tag("h2", title), *content, id=anchor)


def _note(text: Any) -> Markup:
    return tag("p", text, class_="note")


def _table(header: Sequence[Any], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = (), class_: str | None = None) -> Markup:
    right = set(numeric)
    head = tag("thead", tag("tr", [tag("th", h, class_="num" if i in right else None) for i, h in enumerate(header)]))
    body = tag("tbody", [
        tag("tr", [tag("td", cell, class_="num" if i in right else None) for i, cell in enumerate(row)]) for row in rows
    ])
    return tag("div", tag("table", head, body, class_=class_), class_="table-wrap")


def _facts(facts: Iterable[Fact]) -> Markup:
    return tag("dl", [[tag("dt", f.label), tag("dd", f.value)] for f in facts], class_="facts")


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{unit}"


# ----------------------------------------------------------------------------------- sections


def _summary(page: ReportPage) -> Markup:
    counts = page.counts
    front = page.front
    parts = [f"{counts.get('complete', 0)} trained", f"{counts.get('too_slow', 0)} too slow", f"{counts.get('failed', 0)} failed"]
    if counts.get("running"):
        parts.append(f"{counts['running']} running")
    if counts.get("duplicate"):
        parts.append(f"{counts['duplicate']} of them reusing an earlier trial's result")
    items = [tag("li", tag("b", sum(counts.get(k, 0) for k in ("complete", "too_slow", "failed", "running"))), " trials: ", ", ".join(parts))]
    if front:
        fastest, best = front[0], max(front, key=lambda r: r.iou)
        items.append(tag("li", tag("b", len(front)), " models on the Pareto front"))
        items.append(tag("li", "fastest: trial ", fastest.number, f" at {fastest.latency_ms:.2f} ms ({fastest.fps:.1f} fps), IoU {fastest.iou:.4f}"))
        items.append(tag("li", "most accurate: trial ", best.number, f" with IoU {best.iou:.4f} at {best.latency_ms:.2f} ms ({best.fps:.1f} fps)"))
    else:
        items.append(tag("li", "no feasible trained model yet"))
    notes = [_note(n) for n in page.notes]
    return tag("section", tag("ul", items, class_="summary"), notes, id="summary")


def _tradeoff_section(page: ReportPage, figs: _Figures, fg) -> Markup:
    data = page.tradeoff
    content: list[Any] = []
    if data.trained or data.not_trained:
        content.append(figs.add("fig-tradeoff", fg.tradeoff_figure(data)))
        explain = ["Every measured candidate; the Pareto front is circled and joined; dashed red lines are the constraints. "
                   "Candidates that were not trained (too slow, or failed after measuring) have no IoU and sit in the strip "
                   "below. Hover a point for its knobs and figures; the menu at the top right colours the points by effort "
                   "tier or by any knob."]
        if data.duplicates:
            explain.append(f" {data.duplicates} trial(s) proposed a candidate already evaluated and reused its figures; they are not drawn twice.")
        if data.unplaced:
            explain.append(f" {len(data.unplaced)} failed trial(s) never got a latency and cannot be placed: see the table below.")
        content.append(_note("".join(explain)))
    else:
        content.append(_note("No candidate has been measured yet: run `optiseg search` and come back."))
    if page.failed:
        content.append(tag("h3", "Failed trials"))
        content.append(_table(
            ("trial", "candidate", "error", "worker", "retried by"),
            ((r.number, r.candidate or "", tag("code", r.error), r.worker or "", "" if r.retried_by is None else f"trial {r.retried_by}")
             for r in page.failed),
            numeric=(0,),
        ))
    return _section("tradeoff", "Trade-off: IoU against speed", *content)


def _split_tables(page: ReportPage) -> list[Any]:
    """For each front network with split plans: every way it was run, fastest marked, front members marked."""
    content: list[Any] = []
    if not page.split:
        return content
    content.append(tag("h3", "Split plans"))
    content.append(_note("A network cut in two: its head on the device, what crosses the cut sent over the link at the "
                         "given bits per value, its tail on the server (times per frame, each part measured on its "
                         "runner; the link's from its bandwidth and round-trip time). ★ = on the front; the fastest row "
                         "is bold."))

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for table in page.split:
        rows = []
        for row in table.rows:
            cells = [row.trial, ("★ " if row.on_front else "") + row.plan, "" if row.bits is None else row.bits,
                     ms(row.device_ms), ms(row.link_ms), ms(row.server_ms), ms(row.latency_ms),
                     "" if row.bytes_up is None else f"{row.bytes_up:,}", "" if row.iou is None else f"{row.iou:.4f}"]
            rows.append([tag("b", c) if row.trial == table.best else c for c in cells])
        content.append(tag("h4", table.network))
        content.append(_table(("trial", "plan", "bits", "device ms", "link ms", "server ms", "total ms", "bytes up", "IoU"),
                              rows, numeric=(0, 2, 3, 4, 5, 6, 7, 8)))
    return content


def _front_section(page: ReportPage) -> Markup:
    if not page.front:
        return _section("front", "Pareto front", _note("No feasible trained candidate yet: relax the constraints or give the search more trials."))
    header = ("trial", "model", "resolution", "knobs", "params", "MACs", "activations", "latency ms", "p90 ms", "fps", "IoU",
              "IoU per class")
    numeric = {0, 4, 5, 6, 7, 8, 9, 10}
    body = []
    for r in page.front:
        class_iou = [tag("div", f"{name}: {value:.3f}" if value is not None else f"{name}: n/a") for name, value in r.class_iou]
        cells = (
            r.number, r.model or "", r.resolution or "", r.knobs, _fmt(r.params, ","), _fmt(r.macs and r.macs / 1e6, ",.1f", " M"),
            _fmt(r.activation_mb, ".1f", " MB"),
            [_fmt(r.latency_ms, ".2f"), *([tag("div", "confirmed ", r.confirmed, class_="confirmed")] if r.confirmed else []),
             *([tag("div", "tied with trial " + ", ".join(str(n) for n in r.tied_with), class_="tied")] if r.tied_with else [])],
            _fmt(r.latency_p90_ms, ".2f"), _fmt(r.fps, ".1f"),
            tag("b", f"{r.iou:.4f}"), class_iou,
        )
        body.append(tag("tr", [tag("td", c, class_="num" if i in numeric else ("knobs" if i == 3 else None)) for i, c in enumerate(cells)],
                        class_="model"))
        body.append(tag("tr", tag("td"), tag("td", "deploy: ", tag("code", r.deploy_command, class_="cmd"), colspan=len(header) - 1),
                        class_="deploy"))
    head = tag("thead", tag("tr", [tag("th", h, class_="num" if i in numeric else None) for i, h in enumerate(header)]))
    table = tag("div", tag("table", head, tag("tbody", body), class_="front"), class_="table-wrap")
    return _section("front", "Pareto front", table, _note(
        "Fastest first. Latency is the median on the device (p90 beside it); a confirmed latency is the median of "
        "interleaved rounds with its confidence interval, and members whose intervals overlap are tied; activations are the float32 tensors of one "
        "forward pass. The deploy command writes the trained ONNX with predict.py and a README for the device."),
        *_partial_table(page), *_split_tables(page))


def _partial_table(page: ReportPage) -> list[Any]:
    """Networks a multi-fidelity study trained only to a lower rung that would stand on the front, marked."""
    if not page.partial_front:
        return []
    rows = [[r.number, r.resolution or "", r.knobs, r.partial, _fmt(r.latency_ms, ".2f"), _fmt(r.fps, ".1f"), f"{r.iou:.4f}",
             tag("code", r.deploy_command, class_="cmd")] for r in page.partial_front]
    return [tag("h3", "Partial networks that would join it"),
            _table(("trial", "resolution", "knobs", "trained", "latency ms", "fps", "IoU", "deploy"), rows, numeric=(0, 4, 5, 6)),
            _note("Not on the front above, which holds whole trainings only: each of these was trained to a lower rung of the "
                  "multi-fidelity search and not on, and would stand on the front beside the whole ones (optiseg front --partial). "
                  "Its IoU is its best weights so far on the test split; a whole training usually scores higher. Its deploy "
                  "command ships that very network, marked partial.")]


def _mattered_section(page: ReportPage, figs: _Figures, fg) -> Markup:
    content: list[Any] = []
    imp = page.importance
    if imp.iou or imp.latency:
        content.append(figs.add("fig-importance", fg.importance_figure(imp),
                                "How much of the spread in IoU and in log-latency each knob explains on its own: ω² of a one-way "
                                "analysis of variance over the distinct candidates, corrected for chance (0: no effect seen, 1: the knob "
                                "alone decides). Knobs sampled together can share credit; the plots below show each effect."))
        for what, note in (("IoU", imp.iou_note), ("latency", imp.latency_note)):
            if note:
                content.append(_note(f"Importance for {what}: {note}."))
    else:
        content.append(_note(f"Knob importance: {imp.iou_note or imp.latency_note}."))
    for index, effect in enumerate(page.effects):
        content.append(figs.add(f"fig-effect-{index}", fg.effect_figure(effect)))
    if page.effects:
        content.append(_note("Each point is one measured candidate (× = too slow, not trained), spread a little sideways; "
                             "diamonds are the medians per value."))
    else:
        content.append(_note("No knob has taken two values among the measured candidates yet."))
    return _section("mattered", "What mattered", *content)


def _output_section(page: ReportPage, figs: _Figures, fg) -> Markup:
    content: list[Any] = []
    grid = page.samples
    if grid is not None and grid.rows:
        legend = tag("p", "Overlays: ", [tag("span", tag("i", class_="swatch", style=f"background:{color}"), name, class_="legend-item")
                                          for name, color in grid.legend], class_="overlay-legend")
        # One row per model (ground truth first), one column per test image: three images fit the page's width.
        head = tag("tr", tag("th", ""), [tag("th", row.image, class_="image-name") for row in grid.rows])
        body = []
        for index, label in enumerate(grid.columns):
            cells = [tag("th", label, class_="model-name")]
            for row in grid.rows:
                cell = row.cells[index]
                if cell is None:
                    cells.append(tag("td", "not available", class_="missing"))
                else:
                    cells.append(tag("td", tag("img", src=cell.uri, alt=cell.caption), tag("div", cell.caption)))
            body.append(tag("tr", cells))
        content += [legend, tag("div", tag("table", tag("thead", head), tag("tbody", body), class_="samples"), class_="table-wrap")]
        content += [_note(n) for n in grid.notes]
    elif grid is not None:
        content += [_note(n) for n in grid.notes] or [_note("No test image could be shown.")]
    if page.samples_note:
        content.append(_note(page.samples_note))
    content.append(tag("h3", "Training curves"))
    if page.curves.curves:
        content.append(figs.add("fig-curves", fg.curves_figure(page.curves)))
    if page.curves.missing:
        content.append(_note("No training history found for trial(s) " + ", ".join(str(n) for n in page.curves.missing)
                             + " (train/metrics.json in the candidate's folder)."))
    if not page.curves.curves and not page.curves.missing:
        content.append(_note("No front model yet."))
    return _section("output", "Look at the output", *content)


def _context_section(page: ReportPage, figs: _Figures, fg) -> Markup:
    content: list[Any] = [
        tag("h3", "Study"),
        _facts([Fact("name", page.study), Fact("folder", page.folder), Fact("storage", page.storage),
                Fact("report by", f"optiseg {page.optiseg_version}"),
                *([Fact("search by", f"optiseg {page.search_version}")] if page.search_version else [])]),
        tag("h3", "Data set"),
        _facts(page.data) if page.data else _note("Not recorded."),
        tag("h3", "Device"),
    ]
    if page.devices:
        for group in page.devices:
            content.append(tag("h4", group.device, f" ({group.trials} measurements)"))
            content.append(_facts(group.facts))
    else:
        content.append(_note("No measurement yet."))
    content += [tag("h3", "Budget and time"), _facts(page.budget)]
    timing = page.timing
    if timing.numbers:
        totals = ", ".join(f"{label} {format_seconds(timing.totals.get(key, 0.0))}" for key, label in timing.stages if timing.totals.get(key))
        content.append(_note(f"Time by stage over the study: {totals}."))
        content.append(figs.add("fig-timing", fg.timing_figure(timing)))
    checks = page.latency_checks
    if checks is not None and (checks.numbers or checks.drifts or checks.predicted_too_slow or checks.revised):
        content.append(tag("h3", "Latency checks"))
        facts = [Fact("predicted before measuring", f"{len(checks.numbers)} plans, {checks.inside} inside the model's 99 % interval"),
                 Fact("measured again (outside the interval)", str(sum(checks.repeated))),
                 Fact("recorded too slow from the prediction", str(checks.predicted_too_slow)),
                 Fact("latency revised (confirmation, drift)", str(checks.revised))]
        content.append(_facts(facts))
        if checks.drifts:
            content += [tag("h4", "Drift of the device's speed"), _facts(checks.drifts)]
        if checks.numbers:
            content.append(figs.add("fig-latency-model", fg.latency_check_figure(checks),
                                    "Red: measured twice more because the first figure fell outside the interval."))
    if page.hypervolume.numbers:
        content.append(tag("h3", "Progress"))
        content.append(figs.add("fig-hypervolume", fg.hypervolume_figure(page.hypervolume),
                                "The area the feasible front dominates: it grows when a trial improves the front, and flattens when the search has converged."))
    if page.space:
        content += [tag("h3", "Search space"), _table(("knob", "tier", "choices", "baseline"),
                                                      ((r.knob, r.tier, r.choices, r.baseline) for r in page.space))]
    if page.settings:
        content += [tag("h3", "Settings that define the study"), tag("details", tag("summary", f"{len(page.settings)} settings"),
                                                                     _facts(page.settings))]
    if page.config_text is not None:
        content += [tag("h3", "Config"), tag("details", tag("summary", page.config_name or "config"),
                                             tag("pre", page.config_text, class_="config"))]
    return _section("context", "Context", *content)


_BOOT_JS = """
(function () {
  var template = JSON.parse(document.getElementById('plot-template').textContent);
  var config = JSON.parse(document.getElementById('plot-config').textContent);
  var blocks = document.querySelectorAll('script[type="application/json"][data-figure]');
  for (var i = 0; i < blocks.length; i++) {
    var spec = JSON.parse(blocks[i].textContent);
    spec.layout.template = template;
    Plotly.newPlot(blocks[i].getAttribute('data-figure'), spec.data, spec.layout, config);
  }
})();
"""

_CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #e3e3e6; --accent: #0b63c5; --bg: #fafafa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line); padding: 10px 24px; }
header h1 { font-size: 19px; margin: 0 0 4px; }
header .study { color: var(--accent); }
nav a { margin-right: 18px; color: var(--accent); text-decoration: none; font-size: 14px; }
main { max-width: 1400px; margin: 0 auto; padding: 8px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 20px; margin: 16px 0; scroll-margin-top: 80px; }
h2 { font-size: 18px; margin: 6px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 14px; margin: 10px 0 4px; font-weight: 600; }
figure { margin: 0 0 8px; }
figcaption, .note { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.plot { width: 100%; }
.summary { margin: 0; padding-left: 20px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f6; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code.cmd { white-space: nowrap; user-select: all; background: #f4f4f6; padding: 2px 4px; border-radius: 3px; }
table.samples img { display: block; margin: 0 auto 2px; max-width: 320px; height: auto; border-radius: 3px; }
table.samples td { text-align: center; font-size: 12px; color: var(--muted); }
table.samples th.image-name { text-align: center; font-weight: normal; color: var(--muted); }
table.samples th.model-name { text-align: left; white-space: normal; max-width: 180px; background: none; }
td.missing { color: #b00; }
table.front td.knobs { white-space: nowrap; }
table.front tr.model td { border-bottom: none; padding-bottom: 0; }
table.front tr.deploy td { padding-top: 2px; color: var(--muted); }
.legend-item { margin-right: 14px; white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; opacity: .75; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 6px; font-size: 13px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-word; }
pre.config { background: #f4f4f6; padding: 10px; overflow-x: auto; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 0 0 30px; }
"""
