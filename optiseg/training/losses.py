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
        if self.num_logits == 1:
            return self._binary(logits[:, 0], target)
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0  # nothing to learn from, but keep the graph
        return self._classes(logits, target.long(), valid)

    def _binary(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE over the valid pixels plus ``dice_weight`` x soft Dice, as one autograd step
        (:class:`_BinaryLoss`); the masks of the valid and the foreground pixels in float arithmetic (class
        indices 0 and 1, ``ignore_index`` above them)."""
        labels = target.to(logits.dtype, copy=True)
        weight = (self.ignore_index - labels).clamp_(0, 1)  # 1 where 0 or 1, 0 where ignored
        truth = labels.mul_(weight)
        count = weight.sum()
        if not bool(count):
            return logits.sum() * 0.0  # nothing to learn from, but keep the graph
        return _BinaryLoss.apply(logits, truth, weight, count, float(self.dice_weight))

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


class _BinaryLoss(torch.autograd.Function):
    """``sum(weight x BCE) / count + dice_weight x (1 - (2 I + 1) / (T + 1))`` with ``I = sum(p truth)``,
    ``T = sum(p weight) + sum(truth)``, ``p = sigmoid(logits)``; ``truth`` is 0 where ``weight`` is, both 0 or 1.
    Written out with its gradient, ``weight (p - truth) / count + p (1 - p) (the Dice terms)``, the loss takes
    a few passes over the B x H x W pixels at the masks' size in each direction instead of a dozen autograd
    nodes, each a pass with a saved tensor of its own: the value and gradient of the element-wise form (to
    float32 rounding), the loss of a Fast-SCNN step at batch 4 in 6.2 instead of 7.3 ms (upsampling included).
    The sums stay tensors (no wait for the GPU)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor, count: torch.Tensor,
                dice_weight: float) -> torch.Tensor:
        flat_truth, flat_weight = truth.reshape(-1), weight.reshape(-1)
        # BCE with logits z against y in {0, 1} is softplus((1 - 2 y) z): no difference of large sums
        signed = torch.addcmul(logits.reshape(-1), flat_truth, logits.reshape(-1), value=-2.0)
        bce = torch.dot(F.softplus(signed), flat_weight) / count
        probability = torch.sigmoid(logits)
        intersection = torch.dot(probability.reshape(-1), flat_truth)
        total = torch.dot(probability.reshape(-1), flat_weight) + flat_truth.sum()
        ctx.save_for_backward(probability, truth, weight, count, intersection, total)
        ctx.dice_weight = dice_weight
        return bce + dice_weight * (1.0 - (2 * intersection + _SMOOTH) / (total + _SMOOTH))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probability, truth, weight, count, intersection, total = ctx.saved_tensors
        denominator = total + _SMOOTH
        # d Dice-loss / dp = -2 truth / (T + 1) + (2 I + 1) weight / (T + 1)^2; dp / dz = p (1 - p); truth = truth x weight
        per_truth = -2.0 * ctx.dice_weight / denominator
        per_weight = ctx.dice_weight * (2 * intersection + _SMOOTH) / denominator**2
        slope = probability * (1.0 - probability)
        dice = slope.mul_(truth * per_truth + per_weight)
        result = (probability - truth).div_(count).add_(dice).mul_(weight).mul_(grad)
        return result, None, None, None, None


def soft_dice_loss(probability: torch.Tensor, one_hot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - mean over channels of the smoothed soft Dice, over the whole batch; ``weight`` 0 masks pixels out."""
    dims = (0, 2, 3)
    intersection = (probability * one_hot * weight).sum(dims)
    total = ((probability + one_hot) * weight).sum(dims)
    return 1.0 - ((2 * intersection + _SMOOTH) / (total + _SMOOTH)).mean()
