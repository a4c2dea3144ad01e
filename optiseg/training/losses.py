"""Training losses: BCE for one logit, cross-entropy for C logits, optionally plus soft Dice; ignored pixels skipped."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import IGNORE

_SMOOTH = 1.0


class SegmentationLoss(nn.Module):
    """``BCE`` (``num_logits == 1``) or ``cross-entropy`` (``num_logits >= 2``), plus ``dice_weight`` x soft Dice loss.

    ``target`` holds class indices (B, H, W); pixels equal to ``ignore_index``
    count in neither term. Logits smaller than the target are upsampled to it (bilinear). Computed in float32 even under mixed precision.
    """

    def __init__(self, num_logits: int, dice_weight: float = 0.0, ignore_index: int = IGNORE):
        super().__init__()
        self.num_logits = num_logits
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):  # sums over millions of pixels: never in half precision
            return self._loss(logits.float(), target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:  # finer masks: compare the upsampled logits, as scoring does
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        valid = target != self.ignore_index
        count = valid.sum()
        if int(count) == 0:
            return logits.sum() * 0.0  # nothing to learn from, but keep the graph
        if self.num_logits == 1:
            return self._binary(logits[:, 0], (target == 1).float(), valid.float(), count)
        return self._classes(logits, target.long(), valid)

    def _binary(self, logits: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """BCE over the valid pixels plus soft Dice, in as few passes over the pixels as the math allows: ignored
        pixels are weighed out, not gathered, and Dice takes its sums straight (``truth`` is 0 where ignored).
        Each pass is over B x H x W floats at the masks' size: the loss costs as much as a large part of the
        network's own step."""
        loss = F.binary_cross_entropy_with_logits(logits, truth, weight=weight, reduction="sum") / count
        if not self.dice_weight:
            return loss
        probability = torch.sigmoid(logits)
        intersection = (probability * truth).sum()
        total = (probability * weight).sum() + truth.sum()
        return loss + self.dice_weight * (1.0 - (2 * intersection + _SMOOTH) / (total + _SMOOTH))

    def _classes(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Cross-entropy plus the mean over classes of the soft Dice, without a one-hot tensor: a pixel's share of
        class c's intersection is its probability of its own class, added into c's sum (the value and gradient of
        :func:`soft_dice_loss` over one-hot masks)."""
        loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        if not self.dice_weight:
            return loss
        probability = torch.softmax(logits, dim=1)
        weight = valid.float()
        classes = torch.where(valid, target, 0)
        own = probability.gather(1, classes[:, None])[:, 0] * weight
        intersection = torch.zeros(self.num_logits, dtype=own.dtype, device=own.device).index_add(0, classes.flatten(), own.flatten())
        pixels = torch.bincount(classes.flatten(), weights=weight.flatten(), minlength=self.num_logits)
        total = torch.einsum("bchw,bhw->c", probability, weight) + pixels
        return loss + self.dice_weight * (1.0 - ((2 * intersection + _SMOOTH) / (total + _SMOOTH)).mean())


def soft_dice_loss(probability: torch.Tensor, one_hot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - mean over channels of the smoothed soft Dice, over the whole batch; ``weight`` 0 masks pixels out."""
    dims = (0, 2, 3)
    intersection = (probability * one_hot * weight).sum(dims)
    total = ((probability + one_hot) * weight).sum(dims)
    return 1.0 - ((2 * intersection + _SMOOTH) / (total + _SMOOTH)).mean()
