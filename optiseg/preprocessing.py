"""How an image becomes the network's input: the one definition shared by training, export and deployment.

RGB models take ``(pixel / 255 - mean) / std`` per channel with the ImageNet
statistics. Luma models (one input channel) take the Y of YCbCr (ITU-R BT.601
weights) normalized with the statistics those weights give on ImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputSpec:
    """Channel order and normalization of a network's input (NCHW float32)."""

    channel_order: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return len(self.mean)


def input_spec(in_channels: int) -> InputSpec:
    """The input convention for 3 (RGB) or 1 (luma) input channels."""
    if in_channels == 3:
        return InputSpec("RGB", IMAGENET_MEAN, IMAGENET_STD)
    if in_channels == 1:
        mean = sum(w * m for w, m in zip(LUMA_WEIGHTS, IMAGENET_MEAN))
        std = sum(w * s for w, s in zip(LUMA_WEIGHTS, IMAGENET_STD))
        return InputSpec("Y", (round(mean, 4),), (round(std, 4),))
    raise ValueError(f"in_channels must be 3 (RGB) or 1 (luma), got {in_channels}")
