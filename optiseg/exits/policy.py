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
  output k being the graphs that give it, measured on the device;
* the expected MACs, likewise.

:func:`sweep_thresholds` gives every threshold at which a decision changes,
so the curve it gives is the whole curve; ``inf`` is the policy that never
leaves early (JSON: ``null``).
"""

from __future__ import annotations

import math
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
        """JSON-safe; the threshold that never leaves early (``inf``) is ``None``."""
        shares = dict(zip(names, self.shares)) if names is not None else list(self.shares)
        return {"threshold": None if math.isinf(self.threshold) else self.threshold, "shares": shares, "iou": self.iou,
                "expected_ms": self.expected_ms, "expected_macs": self.expected_macs}


@dataclass(frozen=True)
class ExitRow:
    """One output as if every image left there: its IoU, and the MACs and device time from the image to it."""

    name: str
    iou: float | None
    macs: int
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "iou": self.iou, "macs": self.macs, "latency_ms": self.latency_ms}


def sweep_thresholds(per_image: Sequence[ImageExits], confidence: str = "max_prob") -> tuple[float, ...]:
    """Every threshold at which some image's decision changes, and ``inf`` (no image leaves early).

    The lowest confidence seen (every image leaves at exit 1), then the
    midpoints between consecutive distinct confidences, so a threshold never
    sits on a confidence the split produced: an image of another split, or
    preprocessed a hair differently on the device, is not decided by rounding.
    """
    check_confidence(confidence)
    seen = sorted({c for image in per_image for c in image.confidences[confidence]})
    if not seen:
        return (math.inf,)
    return (seen[0], *((a + b) / 2 for a, b in zip(seen, seen[1:])), math.inf)


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


def efficient_points(curve: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """The points of ``curve`` that no other point beats (as good an IoU, as fast, one of them strictly), fastest first."""
    def key(point: OperatingPoint) -> tuple[float, float]:
        return (point.expected_ms, -(point.iou if point.iou is not None else -math.inf))

    kept: list[OperatingPoint] = []
    for point in sorted(curve, key=key):
        if point.iou is not None and (not kept or point.iou > kept[-1].iou):
            kept.append(point)
    return kept
