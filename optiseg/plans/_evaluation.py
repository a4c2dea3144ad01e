"""What a plan scored: named metrics, and operating points of a runtime knob swept after training."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Metric:
    """A figure a plan can record: its direction (for objectives and constraints), unit and meaning.

    ``cost`` metrics are known before any training (they come from the
    untrained network and the device); the others need the trained network.
    """

    name: str
    direction: str  # "maximize" or "minimize"
    unit: str
    description: str
    cost: bool = False


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("iou", "maximize", "", "test IoU: foreground IoU for binary data, mean IoU otherwise"),
    Metric("miou", "maximize", "", "test mean IoU over every class"),
    Metric("val_iou", "maximize", "", "validation IoU of the best epoch"),
    Metric("latency_ms", "minimize", "ms", "end-to-end latency per frame: median on the device(s) plus any link time", cost=True),
    Metric("latency_p90_ms", "minimize", "ms", "90th percentile of the end-to-end latency (over runs; over images for "
           "plans whose images take different paths: early exits, cascades)", cost=True),
    Metric("device_latency_ms", "minimize", "ms", "latency of the part that runs on the device (median)", cost=True),
    Metric("server_latency_ms", "minimize", "ms", "latency of the part that runs on the server (median)", cost=True),
    Metric("link_bytes", "minimize", "B", "bytes per frame sent from the device to the server", cost=True),
    Metric("link_ms", "minimize", "ms", "time on the link per frame: upload, download of the result, one round trip", cost=True),
    Metric("uplink_mbps", "minimize", "Mbit/s", "uplink bitrate at the plan's own frame rate (link_bytes x 8 x fps / 10^6)", cost=True),
    Metric("device_mb", "minimize", "MB", "memory the device needs: its model file(s) plus float32 activations", cost=True),
    Metric("onnx_mb", "minimize", "MB", "size of the model file(s) deployed on the device", cost=True),
    Metric("params", "minimize", "", "trainable parameters of the network(s)", cost=True),
    Metric("macs", "minimize", "", "multiply-accumulates per frame", cost=True),
    Metric("activation_mb", "minimize", "MB", "float32 activations of one forward pass", cost=True),
    Metric("fps", "maximize", "1/s", "frames per second at the median end-to-end latency", cost=True),
    Metric("train_compute", "minimize", "MAC", "training compute of the plan's network: epochs run x training images x "
           "forward multiply-accumulates per image"),
    Metric("train_s", "minimize", "s", "wall seconds of the plan's network's training (its epochs, not the scoring)"),
)}


TAIL = 0.9  # the share of frames ``latency_p90_ms`` is the time of


def tail_latency_ms(times_ms, shares, share: float = TAIL) -> float:
    """``latency_p90_ms`` of a plan whose frames take different paths (the outputs of an exit chain, a cascade's
    device-only and sent frames): the least time within which at least ``share`` of the frames are done, when a share
    ``shares[k]`` of them takes ``times_ms[k]`` (each path's time at its parts' p90 over runs, summed)."""
    done = 0.0
    for ms, part in sorted(zip(times_ms, shares)):
        done += part
        if done >= share - 1e-9:
            return float(ms)
    return float(max(times_ms))


def get_metric(name: str, where: str = "metric") -> Metric:
    """The catalogue entry of ``name``; an unknown name lists the valid ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise UsageError(
            f"{where}: unknown metric {name!r}{did_you_mean(name, METRICS)}; recorded metrics: {', '.join(METRICS)}"
        ) from None


@dataclass(frozen=True)
class OperatingPoint:
    """One value of a runtime knob swept after training (e.g. a threshold), with the metrics it gives."""

    knob: str
    value: float
    metrics: Mapping[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "value": self.value, "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPoint:
        return cls(knob=data["knob"], value=float(data["value"]), metrics=dict(data.get("metrics") or {}))


@dataclass(frozen=True)
class Evaluation:
    """The named metrics of one plan (only names of :data:`METRICS`), per-class IoU, and free-form details.

    ``details`` holds what explains the figures without being one: each part's
    latency measurement, the quantization settings and the operators left in
    float, the training run's scores. Metrics are numbers or absent, never NaN.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    per_class_iou: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    operating_points: tuple[OperatingPoint, ...] = ()

    def __post_init__(self) -> None:
        for name, value in self.metrics.items():
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; add it to optiseg.plans.METRICS first")
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"metric {name} = {value!r} is not a finite number")

    def get(self, name: str) -> float | None:
        return self.metrics.get(name)

    def merged(self, metrics: Mapping[str, float | None] = (), per_class_iou: Mapping[str, float] | None = None,
               details: Mapping[str, Any] = (), operating_points: tuple[OperatingPoint, ...] | None = None) -> Evaluation:
        """A copy with more metrics and details (``None`` values are dropped)."""
        merged_metrics = {**self.metrics, **{k: v for k, v in dict(metrics).items() if v is not None}}
        return Evaluation(
            metrics=merged_metrics,
            per_class_iou=dict(per_class_iou if per_class_iou is not None else self.per_class_iou),
            details={**self.details, **dict(details)},
            operating_points=self.operating_points if operating_points is None else operating_points,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": dict(self.metrics),
            "per_class_iou": dict(self.per_class_iou),
            "details": dict(self.details),
            "operating_points": [p.as_dict() for p in self.operating_points],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            metrics={k: v for k, v in (data.get("metrics") or {}).items() if k in METRICS and v is not None},
            per_class_iou=dict(data.get("per_class_iou") or {}),
            details=dict(data.get("details") or {}),
            operating_points=tuple(OperatingPoint.from_dict(p) for p in data.get("operating_points") or ()),
        )
