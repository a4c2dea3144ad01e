"""The exit policy's arithmetic: per-exit table, operating curve over thresholds, best point. Pure functions.

The policy (``runners/early_exit.py``, :meth:`ExitChainRunner.run_policy`):
an image leaves at the first exit whose confidence reaches the threshold
(``confidence >= threshold``), else at the final output. Given, for every test
image, each exit's confidence and each output's confusion matrix
(:class:`ImageExits`, from :func:`optiseg.exits.exit_outputs`), a threshold's
operating point follows without running anything again:

* the share of images leaving at each output;
* the IoU of the split as optiseg computes it: the confusion matrices of the
  outputs the images left at, summed over images, then foreground IoU for
  binary data and mean IoU otherwise (:mod:`optiseg.training.metrics`);
* the expected latency: ``sum_k share_k x cumulative_ms_k``, the time to
  output k being the stage graphs 1..k measured on the device;
* the expected MACs, likewise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._runners.early_exit import CONFIDENCES
from ..errors import UsageError
from ..training.metrics import scores_from_confusion


@dataclass(frozen=True)
class ImageExits:
    """One image through every output: each exit's confidence by kind (``max_prob``, ``pixel_share``) and each output's confusion matrix.

    ``confidences[kind]`` has one value per exit (the final output has none: it
    always answers); ``confusions`` has one (C, C) matrix per output, exits then final.
    """

    confidences: Mapping[str, tuple[float, ...]]
    confusions: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class OperatingPoint:
    """The policy at one ``threshold``: share of images leaving at each output, IoU of the split, expected cost."""

    threshold: float
    shares: tuple[float, ...]
    iou: float | None
    expected_ms: float
    expected_macs: float

    def as_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        shares = dict(zip(names, self.shares)) if names is not None else list(self.shares)
        return {"threshold": self.threshold, "shares": shares, "iou": self.iou, "expected_ms": self.expected_ms,
                "expected_macs": self.expected_macs}


@dataclass(frozen=True)
class ExitRow:
    """One output as if every image left there: its IoU, and the MACs and device time from the image to it."""

    name: str
    iou: float | None
    macs: int
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "iou": self.iou, "macs": self.macs, "latency_ms": self.latency_ms}


def default_thresholds(confidence: str) -> tuple[float, ...]:
    """The thresholds swept when none are given: 0.50 to 1.00 by 0.01 (``max_prob``), 0.00 to 1.00 by 0.02 (``pixel_share``)."""
    check_confidence(confidence)
    grid = np.linspace(0.5, 1.0, 51) if confidence == "max_prob" else np.linspace(0.0, 1.0, 51)
    return tuple(round(float(t), 4) for t in grid)


def check_confidence(confidence: str) -> str:
    if confidence not in CONFIDENCES:
        raise UsageError(f"confidence {confidence!r} is unknown: use one of {', '.join(CONFIDENCES)}")
    return confidence


def exit_index(confidences: Sequence[float], threshold: float) -> int:
    """Where an image with these exit ``confidences`` leaves: the first exit with ``confidence >= threshold``, else the final output."""
    for index, sure in enumerate(confidences):
        if sure >= threshold:
            return index
    return len(confidences)


def _iou(confusion: np.ndarray, class_names: Sequence[str], binary: bool) -> float | None:
    return scores_from_confusion(confusion, tuple(class_names), binary).primary_iou


def operating_curve(
    per_image: Sequence[ImageExits],
    cumulative_ms: Sequence[float],
    thresholds: Sequence[float],
    *,
    class_names: Sequence[str],
    binary: bool,
    confidence: str = "max_prob",
    cumulative_macs: Sequence[int] | None = None,
) -> list[OperatingPoint]:
    """One :class:`OperatingPoint` per threshold, in the order given.

    ``cumulative_ms[k]`` (and ``cumulative_macs[k]``) is the cost from the
    image to output k (exits, then the final output).
    """
    check_confidence(confidence)
    if not per_image:
        raise UsageError("no images to run the exit policy on")
    outputs = len(per_image[0].confusions)
    if len(cumulative_ms) != outputs or (cumulative_macs is not None and len(cumulative_macs) != outputs):
        raise ValueError(f"{outputs} outputs but {len(cumulative_ms)} cumulative latencies")
    macs = np.asarray(cumulative_macs if cumulative_macs is not None else [0] * outputs, dtype=np.float64)
    latency = np.asarray(cumulative_ms, dtype=np.float64)
    curve = []
    for threshold in thresholds:
        counts = np.zeros(outputs, dtype=np.int64)
        confusion = np.zeros_like(per_image[0].confusions[0])
        for image in per_image:
            index = exit_index(image.confidences[confidence], threshold)
            counts[index] += 1
            confusion = confusion + image.confusions[index]
        shares = counts / len(per_image)
        curve.append(OperatingPoint(
            threshold=float(threshold),
            shares=tuple(float(s) for s in shares),
            iou=_iou(confusion, class_names, binary),
            expected_ms=float(shares @ latency),
            expected_macs=float(shares @ macs),
        ))
    return curve


def exit_table(
    per_image: Sequence[ImageExits],
    names: Sequence[str],
    cumulative_ms: Sequence[float],
    cumulative_macs: Sequence[int],
    *,
    class_names: Sequence[str],
    binary: bool,
) -> list[ExitRow]:
    """One :class:`ExitRow` per output (``names``: exits, then the final): the IoU if every image left there, and the cost to it."""
    rows = []
    for index, name in enumerate(names):
        confusion = sum(image.confusions[index] for image in per_image)
        rows.append(ExitRow(name, _iou(confusion, class_names, binary), int(cumulative_macs[index]), float(cumulative_ms[index])))
    return rows


def best_point(curve: Sequence[OperatingPoint], reference_iou: float, max_iou_loss: float = 0.01) -> OperatingPoint | None:
    """The operating point with the lowest expected latency whose IoU is at most ``max_iou_loss`` below ``reference_iou``.

    ``None`` when no point is that good. Ties go to the higher IoU.
    """
    good = [p for p in curve if p.iou is not None and p.iou >= reference_iou - max_iou_loss]
    if not good:
        return None
    return min(good, key=lambda p: (p.expected_ms, -p.iou))


def distinct_points(curve: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """``curve`` without the points whose shares repeat the previous point's (the same decisions, hence the same figures)."""
    kept: list[OperatingPoint] = []
    for point in curve:
        if not kept or point.shares != kept[-1].shares or point.iou != kept[-1].iou:
            kept.append(point)
    return kept
