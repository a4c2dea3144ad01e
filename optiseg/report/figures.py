"""Plotly figures drawn from the data of :mod:`optiseg.report.data`; no computation of figures happens here.

Hover labels arrive escaped from the data functions; every other string that
may come from the user (knob values on tick labels, class names) is escaped
here, because plotly renders a subset of HTML in all of its text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from .data import (
    ColorOption,
    ConstraintLines,
    CurvesData,
    HypervolumeData,
    ImportanceData,
    KnobEffect,
    LatencyCheckData,
    PlotPoint,
    TimingData,
    TradeoffData,
)

FRONT_COLOR = "#111111"
CONSTRAINT_COLOR = "#c0392b"
MODEL_COLORS = qualitative.D3
STAGE_COLORS = {"profile_s": "#8c8c8c", "export_s": "#9467bd", "measure_s": "#1f77b4", "train_s": "#ff7f0e", "other": "#d0d0d0"}
HOVER = "%{text}<extra></extra>"
STRIP_ROWS = ("failed", "too slow")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _compact(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(template="plotly_white", height=height, margin=dict(l=60, r=20, t=50, b=50), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0, xanchor="left"))
    return fig


# ----------------------------------------------------------------------------------- trade-off


def _discrete_scale(n: int) -> list[list]:
    """A stepped colour scale with ``n`` flat bands, for category codes 0..n-1 on cmin=-0.5, cmax=n-0.5."""
    colors = sample_colorscale("Viridis", [0.9 * i / (n - 1) for i in range(n)]) if n > 1 else ["#3b528b"]
    scale = []
    for index, color in enumerate(colors):
        scale += [[index / n, color], [(index + 1) / n, color]]
    return scale


def _coloraxis(option: ColorOption) -> dict:
    n = max(1, len(option.labels))
    return dict(
        colorscale=_discrete_scale(n), cmin=-0.5, cmax=n - 0.5,
        colorbar=dict(title=dict(text=_esc(option.name)), tickvals=list(range(n)),
                      ticktext=[_esc(label) for label in option.labels], len=0.8, y=0.55, thickness=14),
    )


def _codes(option: ColorOption | None, points: Sequence[PlotPoint]) -> list:
    if option is None:
        return [0] * len(points)
    return [option.codes.get(p.number) for p in points]


def tradeoff_figure(data: TradeoffData) -> go.Figure:
    """IoU against fps (left) and against latency on a log axis (right); trials that were not trained in a strip below."""
    strip = bool(data.not_trained)
    rows = 2 if strip else 1
    fig = make_subplots(
        rows=rows, cols=2, shared_xaxes="columns", shared_yaxes="rows", horizontal_spacing=0.06,
        vertical_spacing=0.04, row_heights=[0.84, 0.16] if strip else None,
        subplot_titles=("IoU vs frames per second", "IoU vs latency (log scale)"),
    )
    option = data.color_options[0] if data.color_options else None
    colored: list[int] = []  # indices of the traces the "colour by" switch recolours
    feasible = [p for p in data.trained if p.feasible]
    infeasible = [p for p in data.trained if not p.feasible]
    for col, axis in ((1, "fps"), (2, "latency_ms")):
        first = col == 1

        def x(points: Sequence[PlotPoint]) -> list[float]:
            return [getattr(p, axis) for p in points]

        for points, name, symbol in ((feasible, "trained", "circle"), (infeasible, "trained, below min IoU", "circle-open")):
            if not points:
                continue
            fig.add_trace(go.Scatter(
                x=x(points), y=[p.iou for p in points], mode="markers", name=name, legendgroup=name, showlegend=first,
                text=[p.hover for p in points], hovertemplate=HOVER, customdata=[p.number for p in points],
                marker=dict(symbol=symbol, size=9, color=_codes(option, points), coloraxis="coloraxis",
                            line=dict(width=1.5 if symbol.endswith("open") else 0.5, color="white")),
            ), row=1, col=col)
            colored.append(len(fig.data) - 1)
        if data.front:
            fig.add_trace(go.Scatter(
                x=x(data.front), y=[p.iou for p in data.front], mode="lines+markers", name="Pareto front",
                legendgroup="front", showlegend=first, text=[p.hover for p in data.front], hovertemplate=HOVER,
                customdata=[p.number for p in data.front], line=dict(color=FRONT_COLOR, width=1.5),
                marker=dict(symbol="circle-open", size=16, line=dict(width=2, color=FRONT_COLOR)),
            ), row=1, col=col)
        if strip:
            points = data.not_trained
            fig.add_trace(go.Scatter(
                x=x(points), y=["too slow" if p.status == "too_slow" else "failed" for p in points], mode="markers",
                name="not trained (too slow or failed)", legendgroup="not trained", showlegend=first,
                text=[p.hover for p in points], hovertemplate=HOVER, customdata=[p.number for p in points],
                marker=dict(symbol=["x" if p.status == "too_slow" else "triangle-down" for p in points], size=9,
                            color=_codes(option, points), coloraxis="coloraxis", line=dict(width=0)),
            ), row=2, col=col)
            colored.append(len(fig.data) - 1)
    _constraint_lines(fig, data.constraints, rows)
    fig.update_xaxes(type="log", col=2)
    fig.update_xaxes(title_text="frames per second (1000 / median latency)", row=rows, col=1)
    fig.update_xaxes(title_text="median latency on the device (ms)", row=rows, col=2)
    fig.update_yaxes(range=_iou_range(data), row=1)
    fig.update_yaxes(title_text="test IoU", row=1, col=1)
    if strip:
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(STRIP_ROWS), row=2)
        fig.update_yaxes(title_text="no IoU", row=2, col=1)
    if option is not None:
        fig.update_layout(coloraxis=_coloraxis(option))
        fig.update_layout(updatemenus=[_color_switch(data.color_options, data, colored, fig)],
                          annotations=[*fig.layout.annotations, go.layout.Annotation(
                              text="colour by", xref="paper", yref="paper", x=0, y=1.17, xanchor="left",
                              yanchor="bottom", showarrow=False, yshift=4)])
    return _compact(fig, 620 if strip else 540).update_layout(margin=dict(t=90))


def _iou_range(data: TradeoffData) -> list[float] | None:
    """The IoU axis: the trained trials and the min-IoU line with a margin, not much beyond 0 and 1."""
    values = [p.iou for p in data.trained if p.iou is not None]
    if data.constraints.min_iou is not None:
        values.append(data.constraints.min_iou)
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(0.02, 0.08 * (high - low))
    return [max(-0.02, low - pad), min(1.02, high + pad)]


def _constraint_lines(fig: go.Figure, constraints: ConstraintLines, rows: int) -> None:
    style = dict(color=CONSTRAINT_COLOR, width=1.5, dash="dash")
    names = []
    if constraints.max_latency_ms:
        for row in range(1, rows + 1):
            fig.add_vline(x=constraints.min_fps, line=style, row=row, col=1)
            fig.add_vline(x=constraints.max_latency_ms, line=style, row=row, col=2)
        names.append(f"max latency {constraints.max_latency_ms:g} ms = {constraints.min_fps:.1f} fps")
    if constraints.min_iou is not None:
        fig.add_hline(y=constraints.min_iou, line=style, row=1, col="all")
        names.append(f"min IoU {constraints.min_iou:g}")
    if names:  # a legend entry for the dashed lines (shapes have none)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=style, name="constraint: " + ", ".join(names),
                                 hoverinfo="skip"), row=1, col=1)


def _color_switch(options: Sequence[ColorOption], data: TradeoffData, colored: list[int], fig: go.Figure) -> dict:
    points_of = {}
    for index in colored:
        numbers = fig.data[index].customdata
        points_of[index] = [int(n) for n in numbers]
    buttons = []
    for option in options:
        colors = [[option.codes.get(n) for n in points_of[index]] for index in colored]
        axis = _coloraxis(option)
        layout = {f"coloraxis.{key}": value for key, value in axis.items() if key != "colorbar"}
        layout.update({f"coloraxis.colorbar.{key}": value for key, value in axis["colorbar"].items()})
        buttons.append(dict(label=_esc(option.name), method="update", args=[{"marker.color": colors}, layout, colored]))
    # Top left, clear of plotly's mode bar at the top right.
    return dict(buttons=buttons, direction="down", x=0, xanchor="left", y=1.17, yanchor="bottom", showactive=True,
                pad=dict(l=70, t=0))


# ----------------------------------------------------------------------------------- what mattered


def importance_figure(data: ImportanceData) -> go.Figure:
    """Horizontal bars of each knob's importance for IoU and for latency; a note where there is none."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("importance for IoU", "importance for latency"),
                        horizontal_spacing=0.15)
    for col, ranked, note, color in ((1, data.iou, data.iou_note, "#2ca02c"), (2, data.latency, data.latency_note, "#1f77b4")):
        if ranked:
            ordered = list(reversed(ranked))
            fig.add_trace(go.Bar(
                x=[v for _, v in ordered], y=[_esc(k) for k, _ in ordered], orientation="h", marker_color=color,
                showlegend=False, hovertemplate="%{y}: %{x:.2f}<extra></extra>",
            ), row=1, col=col)
        if note:
            fig.add_annotation(text=_esc(note), xref=f"x{'' if col == 1 else col} domain", yref=f"y{'' if col == 1 else col} domain",
                               x=0.5, y=0.5, showarrow=False, font=dict(color="#666"))
    fig.update_xaxes(range=[0, 1], title_text="share of the spread the knob explains alone (ω²)")
    return _compact(fig, 300)


def _jitter(number: int) -> float:
    return ((number * 0.6180339887) % 1.0 - 0.5) * 0.3


def effect_figure(effect: KnobEffect) -> go.Figure:
    """Latency (log) and IoU of every measured trial against one knob's values, with the medians joined."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"latency against {_esc(effect.knob)}", f"IoU against {_esc(effect.knob)}"),
                        horizontal_spacing=0.1)
    for col, points, medians, color in ((1, effect.latency, effect.latency_median, "#1f77b4"), (2, effect.iou, effect.iou_median, "#2ca02c")):
        if points:
            # A short label (trial and value): the knob's value is on the x axis, and the full
            # label of every trial is in the trade-off plot; this keeps big studies' pages small.
            fig.add_trace(go.Scatter(
                x=[round(p.position + _jitter(p.number), 3) for p in points], y=[p.value for p in points], mode="markers",
                marker=dict(size=7, color=color, opacity=0.75, symbol=["x" if p.status == "too_slow" else "circle" for p in points]),
                customdata=[p.number for p in points], showlegend=False, name="trials",
                hovertemplate=f"trial %{{customdata}}: %{{y:.4g}}{' ms' if col == 1 else ''}<extra></extra>",
            ), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=list(range(len(effect.labels))), y=list(medians), mode="lines+markers", connectgaps=True,
            line=dict(color="#333", width=1.5), marker=dict(symbol="diamond", size=9, color="#333"), name="median",
            showlegend=col == 1, hovertemplate="median %{y:.4g}<extra></extra>",
        ), row=1, col=col)
    ticks = dict(tickmode="array", tickvals=list(range(len(effect.labels))), ticktext=[_esc(v) for v in effect.labels],
                 range=[-0.5, len(effect.labels) - 0.5], title_text=_esc(effect.knob))
    fig.update_xaxes(**ticks)
    fig.update_yaxes(type="log", title_text="median latency (ms)", row=1, col=1)
    fig.update_yaxes(title_text="test IoU", row=1, col=2)
    return _compact(fig, 320)


# ----------------------------------------------------------------------------------- progress and cost


def _integer_ticks(values: Sequence[int]) -> dict:
    """Axis settings for whole numbers (trials, epochs): at most about ten ticks, never between two numbers."""
    span = (max(values) - min(values)) if values else 0
    return dict(tick0=min(values) if values else 0, dtick=max(1, math.ceil(span / 10)))


def hypervolume_figure(data: HypervolumeData) -> go.Figure:
    """The hypervolume of the feasible front after each trial."""
    fig = go.Figure(go.Scatter(
        x=list(data.numbers), y=list(data.values), mode="lines+markers", line_shape="hv", name="hypervolume",
        hovertemplate="after trial %{x}: %{y:.4g}<extra></extra>", marker=dict(size=5),
    ))
    fig.update_layout(title=dict(text=f"hypervolume ({data.unit} up to {data.reference_text})", font=dict(size=14)))
    fig.update_xaxes(title_text="trial", **_integer_ticks(data.numbers))
    fig.update_yaxes(title_text="hypervolume", rangemode="tozero")
    return _compact(fig, 300)


def timing_figure(data: TimingData) -> go.Figure:
    """Seconds per stage of each trial, stacked."""
    fig = go.Figure()
    for key, label in data.stages:
        values = data.seconds.get(key, ())
        if not any(values):
            continue
        fig.add_trace(go.Bar(x=list(data.numbers), y=list(values), name=label, marker_color=STAGE_COLORS.get(key),
                             hovertemplate=f"trial %{{x}}: {label} %{{y:.1f}} s<extra></extra>"))
    fig.update_layout(barmode="stack", title=dict(text="time per trial and stage", font=dict(size=14)))
    fig.update_xaxes(title_text="trial", **_integer_ticks(data.numbers))
    fig.update_yaxes(title_text="seconds")
    return _compact(fig, 300).update_layout(margin=dict(t=80))


def curves_figure(data: CurvesData) -> go.Figure:
    """Training and validation loss, and validation IoU, per epoch of each front model."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss (solid: training, dotted: validation)", "validation IoU (◆ best epoch)"),
                        horizontal_spacing=0.1)
    for index, curve in enumerate(data.curves):
        color = MODEL_COLORS[index % len(MODEL_COLORS)]
        label = _esc(curve.label)
        group = f"trial{curve.number}"
        shown = False
        for key, col, dash in (("train_loss", 1, "solid"), ("val_loss", 1, "dot"), ("val_iou", 2, "solid")):
            values = curve.series.get(key)
            if not values:
                continue
            fig.add_trace(go.Scatter(
                x=list(curve.epochs), y=list(values), mode="lines", name=label, legendgroup=group, showlegend=not shown,
                line=dict(color=color, dash=dash, width=1.8),
                hovertemplate=f"{label}<br>epoch %{{x}}: {key.replace('_', ' ')} %{{y:.4f}}<extra></extra>",
            ), row=1, col=col)
            shown = True
        ious = curve.series.get("val_iou")
        if curve.best_epoch is not None and ious and curve.best_epoch in curve.epochs:
            value = ious[curve.epochs.index(curve.best_epoch)]
            if value is not None and math.isfinite(value):
                fig.add_trace(go.Scatter(x=[curve.best_epoch], y=[value], mode="markers", legendgroup=group, showlegend=False,
                                         marker=dict(symbol="diamond", size=10, color=color),
                                         hovertemplate=f"{label}<br>best epoch %{{x}}: val IoU %{{y:.4f}}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="epoch", **_integer_ticks([e for c in data.curves for e in c.epochs]))
    fig.update_yaxes(type="log", row=1, col=1)
    return _compact(fig, 380).update_layout(legend=dict(y=-0.25, yanchor="top"), margin=dict(b=120))


def latency_check_figure(data: LatencyCheckData) -> go.Figure:
    """Each fresh measurement against the latency model's prediction (its 99 % interval as error bars)."""
    fig = go.Figure()
    colors = ["#d62728" if r else "#1f77b4" for r in data.repeated]
    fig.add_trace(go.Scatter(
        x=list(data.predicted_ms), y=list(data.measured_ms), mode="markers", name="measured",
        marker=dict(size=7, color=colors),
        error_x=dict(type="data", symmetric=False, color="#9ab",
                     array=[h - p for h, p in zip(data.high_ms, data.predicted_ms)],
                     arrayminus=[p - lo for p, lo in zip(data.predicted_ms, data.low_ms)]),
        text=[_esc(label) for label in data.labels],
        hovertemplate="%{text}<br>predicted %{x:.3g} ms, measured %{y:.3g} ms<extra></extra>",
    ))
    values = [v for v in (*data.low_ms, *data.high_ms, *data.measured_ms) if v > 0]
    if values:
        low, high = min(values), max(values)
        fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="measured = predicted",
                                 line=dict(color="#888", dash="dot"), hoverinfo="skip"))
    fig.update_layout(title=dict(text="latency model: predicted before measuring, and measured", font=dict(size=14)))
    fig.update_xaxes(title_text="predicted ms (99 % interval)", type="log")
    fig.update_yaxes(title_text="measured ms", type="log")
    return _compact(fig, 340)
