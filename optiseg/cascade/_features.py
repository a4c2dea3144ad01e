"""What the small model's own output says about how well it did: dispersion statistics of its class probabilities.

They are taken on the logits before the network resizes them to its input size
(Fast-SCNN and BiSeNetV2: at 1/8 of it; a bilinear resize adds no information
and would cost the device 64 times the work).

Every statistic is a smooth function of the logits (soft counts instead of
thresholded ones), so the graph that computes them on the device agrees with
PyTorch to float precision and a pixel near a threshold cannot flip a figure.
Per image, with ``p`` the per-pixel class probabilities (sigmoid for one
logit, softmax otherwise) and ``margin`` the top-1 minus top-2 probability:

* ``entropy``: mean entropy of ``p``, divided by log(classes), 0..1;
* ``low_margin_50``, ``low_margin_90``: soft fraction of pixels with margin below 0.5 and 0.9;
* ``margin``: mean margin;
* ``boundary``: mean change of ``p`` between neighbouring pixels (soft length of the predicted outlines);
* ``area_<class>``: mean probability of each class but the first (the predicted area);
* ``low_margin_per_object``, ``boundary_per_object``: the two above over the predicted area of every class but the first
  (small objects with ragged outlines are where IoU drops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

SOFTNESS = 20.0  # slope of the soft step: a pixel 0.1 past a threshold counts 88 %
AREA_FLOOR = 0.01  # an image with no predicted object does not divide by zero


def statistic_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """The names of the statistics :class:`OutputStatistics` computes, in order."""
    areas = tuple(f"area_{name}" for name in class_names[1:])
    return ("entropy", "low_margin_50", "low_margin_90", "margin", "boundary", *areas,
            "low_margin_per_object", "boundary_per_object")


class OutputStatistics(nn.Module):
    """Logits ``(B, L, H, W)`` -> ``(B, statistics)``: see the module docstring. ``num_logits`` 1 = binary."""

    def __init__(self, num_logits: int):
        super().__init__()
        self.num_logits = num_logits
        self.classes = max(2, num_logits)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.num_logits == 1:
            foreground = torch.sigmoid(logits)
            probs = torch.cat([1.0 - foreground, foreground], dim=1)
        else:
            probs = torch.softmax(logits, dim=1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-6))).sum(dim=1) / math.log(self.classes)
        top = torch.topk(probs, 2, dim=1).values
        margin = top[:, 0] - top[:, 1]
        low_50 = torch.sigmoid(SOFTNESS * (0.5 - margin))
        low_90 = torch.sigmoid(SOFTNESS * (0.9 - margin))
        across = (probs[:, :, :, 1:] - probs[:, :, :, :-1]).abs().sum(dim=1).mean(dim=(1, 2))
        down = (probs[:, :, 1:, :] - probs[:, :, :-1, :]).abs().sum(dim=1).mean(dim=(1, 2))
        boundary = 0.25 * (across + down)
        areas = probs[:, 1:].mean(dim=(2, 3))
        objects = areas.sum(dim=1) + AREA_FLOOR
        low_50_mean = low_50.mean(dim=(1, 2))
        columns = [entropy.mean(dim=(1, 2)), low_50_mean, low_90.mean(dim=(1, 2)), margin.mean(dim=(1, 2)), boundary]
        return torch.cat([torch.stack(columns, dim=1), areas,
                          torch.stack([low_50_mean / objects, boundary / objects], dim=1)], dim=1)
