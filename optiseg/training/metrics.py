"""Segmentation metrics from a confusion matrix, as the thesis computed them.

A confusion matrix counts pixels: row = true class, column = predicted class;
ignored pixels are not counted. From it, per class ``c``:

* IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN);
* a class with no pixel in truth or prediction has no score (``None``) and is
  left out of the means;
* binary data: the IoU of the foreground class is *the* IoU (``primary_iou``);
  multi-class data: the mean IoU over classes is.

Matrices are summed over all images of a split before the scores are taken
(the IoU of the split, not the mean of per-image IoUs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def confusion_matrix(target: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts of (true, predicted) class pairs; ``ignore_index`` pixels skipped."""
    if target.shape != prediction.shape:
        raise ValueError(f"target {target.shape} and prediction {prediction.shape} differ in shape")
    target = target.ravel().astype(np.int64)
    prediction = prediction.ravel().astype(np.int64)
    keep = target != ignore_index if ignore_index is not None else np.ones(target.shape, bool)
    target, prediction = target[keep], prediction[keep]
    if target.size and (target.max() >= num_classes or prediction.max() >= num_classes or min(target.min(), prediction.min()) < 0):
        raise ValueError(f"class indices must be in 0..{num_classes - 1}")
    return np.bincount(target * num_classes + prediction, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """IoU and Dice of every class, their means, and the headline IoU."""

    class_names: tuple[str, ...]
    iou: tuple[float | None, ...]
    dice: tuple[float | None, ...]
    binary: bool
    pixels: int

    @property
    def mean_iou(self) -> float | None:
        return _mean(self.iou)

    @property
    def mean_dice(self) -> float | None:
        return _mean(self.dice)

    @property
    def primary_iou(self) -> float | None:
        """Foreground IoU for binary data, mean IoU otherwise: the figure the search optimizes."""
        return self.iou[1] if self.binary else self.mean_iou

    @property
    def primary_dice(self) -> float | None:
        return self.dice[1] if self.binary else self.mean_dice

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        """Flat JSON-ready figures: ``{prefix}iou``, ``{prefix}miou``, ``{prefix}dice``, per-class IoU and Dice."""
        return {
            f"{prefix}iou": self.primary_iou,
            f"{prefix}miou": self.mean_iou,
            f"{prefix}dice": self.primary_dice,
            f"{prefix}class_iou": dict(zip(self.class_names, self.iou)),
            f"{prefix}class_dice": dict(zip(self.class_names, self.dice)),
        }


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str], binary: bool) -> SegmentationScores:
    """IoU and Dice per class from a confusion matrix (rows = truth, columns = prediction)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {confusion.shape} does not match {len(class_names)} classes")
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    iou = tuple(_ratio(t, t + p + n) for t, p, n in zip(tp, fp, fn))
    dice = tuple(_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(tp, fp, fn))
    return SegmentationScores(tuple(class_names), iou, dice, binary, int(confusion.sum()))


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None
