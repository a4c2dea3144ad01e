"""The whole early-exit analysis of one trained network: chain, device latency, per-exit table, operating curve, best point."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data import DatasetCache
from ..network import Network
from .chain import ExitChain, export_exit_chain
from .collect import exit_outputs
from .latency import ChainLatency, measure_chain
from .policy import (
    ExitRow,
    ImageExits,
    OperatingPoint,
    best_point,
    check_confidence,
    exit_table,
    operating_curve,
    sweep_thresholds,
)

WHOLE = "whole.onnx"


@dataclass(frozen=True)
class Reference:
    """The network run whole, without its exits: test IoU of its final output, one graph's latency on the device, MACs."""

    iou: float | None
    latency_ms: float
    macs: int

    def as_dict(self) -> dict[str, Any]:
        return {"iou": self.iou, "latency_ms": self.latency_ms, "macs": self.macs}


@dataclass(frozen=True)
class ExitReport:
    """What ``optiseg exits`` prints: every figure measured, nothing estimated.

    ``per_image`` (not in :meth:`as_dict`) holds what the curve was computed
    from, so another threshold's point is one :func:`operating_curve` call away.
    """

    network: Network
    chain: ExitChain
    latency: ChainLatency
    split: str
    images: int
    confidence: str
    pixel_probability: float
    table: tuple[ExitRow, ...]
    curve: tuple[OperatingPoint, ...]
    reference: Reference
    max_iou_loss: float
    best: OperatingPoint | None
    per_image: tuple[ImageExits, ...] = ()

    @property
    def saving(self) -> float | None:
        """The best point's expected latency saved against the whole network, as a fraction (None without a best point)."""
        if self.best is None or not self.reference.latency_ms > 0:
            return None
        return 1.0 - self.best.expected_ms / self.reference.latency_ms

    def as_dict(self) -> dict[str, Any]:
        names = self.chain.exits
        return {
            "network": self.network.as_dict(),
            "network_key": self.network.key,
            "split": self.split,
            "images": self.images,
            "device_key": self.latency.device_key,
            "chain": {"folder": str(self.chain.folder), "max_abs_diff": self.chain.max_abs_diff,
                      "stages": [s.as_dict() for s in self.chain.stages]},
            "latency": self.latency.as_dict(),
            "confidence": self.confidence,
            "pixel_probability": self.pixel_probability,
            "exits": [row.as_dict() for row in self.table],
            "reference": self.reference.as_dict(),
            "curve": [point.as_dict(names) for point in self.curve],
            "max_iou_loss": self.max_iou_loss,
            "best": None if self.best is None else self.best.as_dict(names),
            "saving": self.saving,
        }


def analyse_exits(
    model: nn.Module,
    network: Network,
    *,
    cache: DatasetCache,
    runner,
    folder: str | os.PathLike,
    thresholds: Sequence[float] | None = None,
    confidence: str = "max_prob",
    pixel_probability: float = 0.9,
    max_iou_loss: float = 0.01,
    split: str = "test",
) -> ExitReport:
    """Export ``model``'s exit chain into ``folder``, time it and the whole network on ``runner``, run the policy on ``split``.

    The reference is the same network run whole (``folder/whole.onnx``, no
    exit heads): its IoU is the chain's final output's, its latency one graph
    timed on ``runner``. ``thresholds`` default to every threshold at which a
    decision changes (:func:`sweep_thresholds`). ``best`` is the fastest
    operating point that loses at most ``max_iou_loss`` of IoU against it.
    """
    from ..export import export_onnx
    from ..profile import profile_model

    check_confidence(confidence)
    dataset = cache.dataset
    folder = Path(folder)
    chain = export_exit_chain(model, network, folder, pixel_probability=pixel_probability)
    latency = measure_chain(chain, runner)
    whole = export_onnx(model, folder / WHOLE, network, class_names=dataset.class_names)
    whole_ms = runner.measure(whole.path).median_ms
    per_image = exit_outputs(chain, cache.resized(split, network.resolution), cache.original_masks(split),
                             num_classes=len(dataset.class_names),
                             in_channels=network.in_channels)
    scoring = {"class_names": dataset.class_names, "binary": dataset.binary}
    table = exit_table(per_image, chain.exits, latency.cumulative_ms, chain.cumulative_macs, **scoring)
    curve = operating_curve(per_image, latency.cumulative_ms, thresholds or sweep_thresholds(per_image, confidence),
                            confidence=confidence, cumulative_macs=chain.cumulative_macs, **scoring)
    reference = Reference(table[-1].iou, whole_ms, profile_model(model, network.input_shape).macs)
    best = best_point(curve, reference.iou, max_iou_loss) if reference.iou is not None else None
    return ExitReport(
        network=network, chain=chain, latency=latency, split=split, images=len(per_image), confidence=confidence,
        pixel_probability=pixel_probability, table=tuple(table), curve=tuple(curve), reference=reference,
        max_iou_loss=max_iou_loss, best=best, per_image=tuple(per_image),
    )
