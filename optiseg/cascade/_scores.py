"""Per-image quality: each image's confusion matrix under one model, and the IoU and pixel accuracy that follow from it.

A split's IoU is taken from the sum of its images' confusion matrices (see
:mod:`optiseg.training.metrics`); keeping the matrices per image lets a
cascade score every image with the model that handled it and still report the
IoU optiseg reports for every other plan.

An image's own IoU (:attr:`PerImageScores.iou`) is its headline IoU: the
foreground IoU for binary data, the mean IoU over the classes present in its
truth or prediction otherwise. An image where that is undefined (binary: no
foreground in truth nor prediction) scores 1.0: nothing to find, nothing found.
Its pixel accuracy (:attr:`PerImageScores.accuracy`) is the share of its
counted pixels the model gets right: what the split's summed IoU loses when it
is low (an image's IoU can be low with few wrong pixels, on a small object).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_json_atomic
from ..training.metrics import SegmentationScores, scores_from_confusion

SCORES_FORMAT = "optiseg-per-image-scores-1"
TARGETS = ("accuracy", "iou")  # what a router may predict of the small model, per image


@dataclass(frozen=True, eq=False)
class PerImageScores:
    """One model's confusion matrix of every image of one split (rows: truth, columns: prediction)."""

    split: str
    class_names: tuple[str, ...]
    binary: bool
    confusions: np.ndarray  # (images, classes, classes) int64
    names: tuple[str, ...]  # each image's file stem, in split order

    def __post_init__(self) -> None:
        classes = len(self.class_names)
        if self.confusions.ndim != 3 or self.confusions.shape[1:] != (classes, classes):
            raise ValueError(f"confusions of shape {self.confusions.shape} do not match {classes} classes")
        if len(self.names) != len(self.confusions):
            raise ValueError(f"{len(self.names)} names for {len(self.confusions)} confusion matrices")

    def __len__(self) -> int:
        return len(self.confusions)

    @property
    def class_iou(self) -> np.ndarray:
        """``(images, classes)`` IoU of each class in each image; NaN where the class is in neither truth nor prediction."""
        return class_iou_of(self.confusions)

    @property
    def iou(self) -> np.ndarray:
        """``(images,)`` headline IoU of each image (foreground IoU for binary data, else mean IoU); 1.0 where undefined."""
        values = headline_iou(self.class_iou, self.binary)
        return np.where(np.isnan(values), 1.0, values)

    @property
    def correct(self) -> np.ndarray:
        """``(images,)`` pixels each image has right (ignored pixels not counted)."""
        return np.trace(self.confusions, axis1=1, axis2=2)

    @property
    def accuracy(self) -> np.ndarray:
        """``(images,)`` share of each image's counted pixels that are right; 1.0 for an image with none counted."""
        pixels = self.confusions.sum(axis=(1, 2))
        return np.where(pixels > 0, self.correct / np.maximum(pixels, 1), 1.0)

    def target(self, name: str) -> np.ndarray:
        """:attr:`accuracy` or :attr:`iou`, by name (what a router predicts)."""
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
        return getattr(self, name)

    def pooled(self, confusions: np.ndarray | None = None) -> SegmentationScores:
        """Scores of the summed matrices (of ``confusions`` if given, e.g. a cascade's mix of two models)."""
        stack = self.confusions if confusions is None else confusions
        return scores_from_confusion(stack.sum(axis=0), self.class_names, self.binary)

    def mixed_with(self, other: PerImageScores, sent: np.ndarray) -> np.ndarray:
        """The confusions of a cascade: ``other``'s for the images where ``sent`` is True, this model's elsewhere."""
        if other.names != self.names or other.class_names != self.class_names:
            raise ValueError(f"the per-image scores of split {self.split!r} and {other.split!r} are not of the same images and classes")
        return np.where(np.asarray(sent, bool)[:, None, None], other.confusions, self.confusions)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: every image's name, IoU, pixel accuracy, per-class IoU and confusion matrix."""
        class_iou = self.class_iou
        return {
            "format": SCORES_FORMAT,
            "split": self.split,
            "class_names": list(self.class_names),
            "binary": self.binary,
            "images": [
                {"name": name, "iou": float(iou), "accuracy": float(accuracy),
                 "class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.class_names, row)},
                 "confusion": confusion.tolist()}
                for name, iou, accuracy, row, confusion in zip(self.names, self.iou, self.accuracy, class_iou, self.confusions)
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerImageScores:
        if data.get("format") != SCORES_FORMAT:
            raise ValueError(f"not per-image scores (format {data.get('format')!r}, expected {SCORES_FORMAT!r})")
        classes = len(data["class_names"])
        images = data["images"]
        confusions = np.array([image["confusion"] for image in images], np.int64).reshape(len(images), classes, classes)
        return cls(split=data["split"], class_names=tuple(data["class_names"]), binary=bool(data["binary"]),
                   confusions=confusions, names=tuple(image["name"] for image in images))


def class_iou_of(confusions: np.ndarray) -> np.ndarray:
    """IoU of each class of each matrix of a stack ``(n, classes, classes)`` -> ``(n, classes)``; NaN where a class is absent."""
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    union = confusions.sum(axis=1) + confusions.sum(axis=2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def headline_iou(class_iou: np.ndarray, binary: bool) -> np.ndarray:
    """``(n,)`` the foreground IoU (binary) or the mean over the classes present, of each row of ``class_iou``; NaN if none."""
    return class_iou[:, 1] if binary else mean_present(class_iou)


def mean_present(values: np.ndarray) -> np.ndarray:
    """The mean of each row over its non-NaN entries; NaN for a row without any."""
    present = ~np.isnan(values)
    return np.where(present.any(axis=1), np.nansum(values, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan)


def score_per_image(onnx_path: str | Path, *, split: str, cache, in_channels: int, resolution: tuple[int, int],
                    threads: int = 0) -> PerImageScores:
    """The per-image scores of the ONNX model at ``onnx_path`` on ``split`` of ``cache``'s data set, run by onnxruntime.

    Each image is resized whole to ``resolution``, its logits resized back to the
    image's original size, exactly as the model's IoU is measured everywhere else.
    """
    from ..training.evaluate import onnx_predictor, per_image_confusions

    dataset = cache.dataset
    confusions = per_image_confusions(
        onnx_predictor(onnx_path, threads), cache.resized(split, resolution), cache.original_masks(split),
        num_classes=len(dataset.class_names), in_channels=in_channels,
    )
    return PerImageScores(split=split, class_names=tuple(dataset.class_names), binary=dataset.binary,
                          confusions=confusions, names=sample_names(dataset.split(split)))


def stored_per_image(path: Path, onnx_path: str | Path, *, split: str, cache, in_channels: int,
                     resolution: tuple[int, int], threads: int = 0) -> PerImageScores:
    """:func:`score_per_image`, kept in ``path`` and read back while the model file and the data set are the same."""
    key = {"model_sha256": file_sha256(onnx_path), "data": cache.dataset.fingerprint(), "split": split,
           "resolution": list(resolution)}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                return PerImageScores.from_dict(stored["scores"])
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: score again
    scores = score_per_image(onnx_path, split=split, cache=cache, in_channels=in_channels, resolution=resolution, threads=threads)
    write_json_atomic(path, {"key": key, "scores": scores.as_dict()})
    return scores


def sample_names(samples: Sequence[Any]) -> tuple[str, ...]:
    """The file stem of each sample."""
    return tuple(sample.stem for sample in samples)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
