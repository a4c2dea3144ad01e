"""Routers: what predicts, per image, the small model's IoU, and the one graph that runs it on the device.

Two routers, both reading the small model as it is deployed and predicting how
well it does on the image (its pixel accuracy by default, see :mod:`._scores`):

* the **baseline** (:class:`RidgeRouter`): a ridge regression (numpy, the
  penalty chosen by cross-validation over source images) on the small model's
  output statistics (:mod:`._features`);
* the **decision network** (:class:`DecisionNetwork`): the small network's own
  frozen features (the tensor its classifier reads, found from its stage list),
  a two-level spatial pyramid pooling, the same output statistics, and fully
  connected layers predicting that and each class's IoU (the decision-network
  study's design; the class outputs only help training).

:class:`RoutedModel` puts the small network and a router into one module:
image -> ``(logits, quality)``; exported, it is the device's one model file, so
the small model's output and its router's score come from one run. ``quality``
is the predicted pixel accuracy of the small model on the image (or its IoU,
with the ``iou`` target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models._stages import INPUT, OUTPUT, Stage, run_stages
from ._features import OutputStatistics

RIDGE_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
SPP_LEVELS = (1, 2)
SCALE_FLOOR, SCALE_FLOOR_RELATIVE = 1e-4, 1e-3


# ---------------------------------------------------------------- the baseline: ridge on output statistics

@dataclass(frozen=True, eq=False)
class RidgeRouter:
    """``quality = ((x - mean) / scale) . weights + bias`` on the output statistics ``x``."""

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    alpha: float

    def predict(self, statistics: np.ndarray) -> np.ndarray:
        return ((np.asarray(statistics, np.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def as_dict(self) -> dict[str, Any]:
        return {"feature_names": list(self.feature_names), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RidgeRouter:
        return cls(feature_names=tuple(data["feature_names"]), mean=np.array(data["mean"], np.float64),
                   scale=np.array(data["scale"], np.float64), weights=np.array(data["weights"], np.float64),
                   bias=float(data["bias"]), alpha=float(data["alpha"]))


def fit_ridge(statistics: np.ndarray, target: np.ndarray, groups: np.ndarray, *, feature_names: Sequence[str],
              alphas: Sequence[float] = RIDGE_ALPHAS, folds: int = 5, seed: int = 0) -> RidgeRouter:
    """Ridge regression of ``target`` on standardized ``statistics``; the penalty by grouped K-fold cross-validation.

    Rows of one ``groups`` value (an image and its mirror image) are always in the same fold,
    so the penalty is chosen on images the fit did not see.
    """
    x = np.asarray(statistics, np.float64)
    y = np.asarray(target, np.float64)
    fold_of = group_folds(groups, folds, seed)
    errors = []
    for alpha in alphas:
        squared = 0.0
        for fold in np.unique(fold_of):
            train, held = fold_of != fold, fold_of == fold
            if train.sum() < 2:
                continue
            model = _ridge(x[train], y[train], alpha)
            squared += float(((model.predict(x[held]) - y[held]) ** 2).sum())
        errors.append(squared)
    best = alphas[int(np.argmin(errors))] if errors else alphas[len(alphas) // 2]
    fitted = _ridge(x, y, best)
    return RidgeRouter(feature_names=tuple(feature_names), mean=fitted.mean, scale=fitted.scale, weights=fitted.weights,
                       bias=fitted.bias, alpha=float(best))


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeRouter:
    mean = x.mean(axis=0)
    scale = standard_scale(x.std(axis=0), mean)
    z = (x - mean) / scale
    bias = float(y.mean())
    weights = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - bias))
    return RidgeRouter(feature_names=(), mean=mean, scale=scale, weights=weights, bias=bias, alpha=alpha)


def standard_scale(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The scale a feature is standardized with: its standard deviation, floored.

    A feature (nearly) constant over the training rows would otherwise be divided by
    almost nothing, and float rounding on the device would move the prediction.
    """
    return np.maximum(std, SCALE_FLOOR + SCALE_FLOOR_RELATIVE * np.abs(mean))


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number for every row; the rows of one group share it (groups spread over folds by a seeded shuffle)."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = {unique[i]: rank % max(1, min(folds, len(unique))) for rank, i in enumerate(order)}
    return np.array([fold_of_group[g] for g in groups], np.int64)


class LinearHead(nn.Module):
    """A :class:`RidgeRouter` as a module: statistics ``(B, F)`` -> quality ``(B,)``."""

    def __init__(self, router: RidgeRouter):
        super().__init__()
        weights = router.weights / router.scale
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(router.bias - float(router.mean @ weights), dtype=torch.float32))

    def forward(self, statistics: torch.Tensor) -> torch.Tensor:
        return statistics @ self.weights + self.bias


# ---------------------------------------------------------------- the decision network: frozen features, SPP, FC

def logits_tensor(stages: Sequence[Stage]) -> str:
    """The logits before the network resizes them to its input size (cheaper to summarize, same content); else the output."""
    producer = {name: stage for stage in stages for name in stage.outputs}
    name = OUTPUT
    while producer[name].needs_input_size and producer[name].inputs[0] in producer:
        name = producer[name].inputs[0]
    return name


def feature_tensor(stages: Sequence[Stage]) -> str:
    """The tensor a network's classifier reads: the input of the stage that writes :func:`logits_tensor`."""
    producer = {name: stage for stage in stages for name in stage.outputs}
    stage = producer[logits_tensor(stages)]
    name = stage.inputs[0]
    if name == INPUT:
        raise ValueError(f"stage {stage.name!r} reads the image itself; the network has no features to tap")
    return name


def pyramid_pool(features: torch.Tensor, levels: Sequence[int] = SPP_LEVELS) -> torch.Tensor:
    """Spatial pyramid pooling: the average over an n x n grid for each level n, flattened and concatenated: ``(B, C * sum n^2)``."""
    return torch.cat([F.adaptive_avg_pool2d(features, level).flatten(1) for level in levels], dim=1)


class DecisionHead(nn.Module):
    """Fully connected layers: pooled features and output statistics ``(B, D)`` -> ``(quality (B,), class IoU (B, K))``.

    The input is standardized with the training rows' mean and scale, and the quality
    learned standardized too (buffers, exported with the graph): a pixel accuracy of
    0.99 +- 0.005 would otherwise leave almost nothing to learn from.
    """

    def __init__(self, inputs: int, classes: int, *, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(inputs))
        self.register_buffer("scale", torch.ones(inputs))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))
        self.body = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden // 2), nn.ReLU())
        self.quality = nn.Linear(hidden // 2, 1)
        self.class_quality = nn.Linear(hidden // 2, classes)

    def forward(self, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body((vector - self.mean) / self.scale)
        return self.quality(hidden)[:, 0] * self.target_scale + self.target_mean, torch.sigmoid(self.class_quality(hidden))


class DecisionEnsemble(nn.Module):
    """Several :class:`DecisionHead` trained with other seeds and held-out images; their predictions averaged."""

    def __init__(self, heads: Sequence[DecisionHead]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [head(vector) for head in self.heads]
        return (torch.stack([q for q, _ in outputs]).mean(dim=0), torch.stack([c for _, c in outputs]).mean(dim=0))


class DecisionNetwork(nn.Module):
    """Frozen features ``(B, C, h, w)`` and output statistics ``(B, F)`` -> predicted image IoU ``(B,)``."""

    def __init__(self, head: nn.Module, levels: Sequence[int] = SPP_LEVELS):
        super().__init__()
        self.head = head
        self.levels = tuple(levels)

    def forward(self, features: torch.Tensor, statistics: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([pyramid_pool(features, self.levels), statistics], dim=1))[0]


@dataclass(frozen=True)
class HeadTraining:
    """How the decision heads are trained (full-batch Adam; each head's epoch count chosen on its own held-out source images)."""

    members: int = 5  # heads averaged; one alone varies a lot with its seed when there are few training images
    hidden: int = 128
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-3
    max_epochs: int = 300
    class_weight: float = 0.5
    holdout: float = 0.25
    seed: int = 0


def fit_decision_heads(vectors: np.ndarray, target: np.ndarray, class_iou: np.ndarray, groups: np.ndarray,
                       settings: HeadTraining = HeadTraining()) -> tuple[DecisionEnsemble, dict[str, Any]]:
    """Train ``settings.members`` heads to predict ``target`` from rows of pooled features + statistics.

    Returns their ensemble and what each fit chose.

    For each head (seed ``settings.seed + k``), a quarter of the source images (``groups``) is
    held out to choose the number of epochs (lowest held-out loss); the head is then trained on
    every row for that many epochs.
    """
    x = torch.tensor(np.asarray(vectors), dtype=torch.float32)
    y = torch.tensor(np.asarray(target), dtype=torch.float32)
    per_class = torch.tensor(np.nan_to_num(np.asarray(class_iou), nan=0.0), dtype=torch.float32)
    known = torch.tensor(~np.isnan(np.asarray(class_iou)), dtype=torch.float32)
    everything = torch.ones(len(x), dtype=torch.bool)
    heads, epochs = [], []
    for member in range(settings.members):
        seed = settings.seed + member
        held = torch.tensor(group_folds(groups, max(2, round(1 / settings.holdout)), seed) == 0)
        best_epoch = settings.max_epochs
        if 0 < int(held.sum()) < len(held):
            curve = _train_head(x, y, per_class, known, ~held, settings, seed, settings.max_epochs, evaluate=held)[1]
            best_epoch = min(curve, key=lambda item: item[1])[0]
        heads.append(_train_head(x, y, per_class, known, everything, settings, seed, best_epoch)[0])
        epochs.append(best_epoch)
    return DecisionEnsemble(heads).eval(), {"epochs": epochs, "rows": len(x)}


def _train_head(x, y, per_class, known, rows, settings: HeadTraining, seed: int, epochs: int, evaluate=None):
    torch.manual_seed(seed)
    head = DecisionHead(x.shape[1], per_class.shape[1], hidden=settings.hidden, dropout=settings.dropout)
    mean = x[rows].mean(dim=0)
    head.mean.copy_(mean)
    std = x[rows].std(dim=0) if int(rows.sum()) > 1 else torch.zeros(x.shape[1])
    head.scale.copy_(torch.from_numpy(standard_scale(std.numpy(), mean.numpy())))
    head.target_mean.copy_(y[rows].mean())
    head.target_scale.copy_(y[rows].std().clamp_min(1e-6) if int(rows.sum()) > 1 else torch.ones(()))
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    curve = []

    def loss_of(select) -> torch.Tensor:
        quality, classes = head(x[select])
        class_loss = ((classes - per_class[select]) ** 2 * known[select]).sum() / known[select].sum().clamp_min(1.0)
        return F.mse_loss(quality / head.target_scale, y[select] / head.target_scale) + settings.class_weight * class_loss

    for epoch in range(1, epochs + 1):
        head.train()
        optimizer.zero_grad()
        loss_of(rows).backward()
        optimizer.step()
        if evaluate is not None and epoch % 5 == 0:
            head.eval()
            with torch.no_grad():
                curve.append((epoch, float(loss_of(evaluate))))
    head.eval()
    return head, curve


# ---------------------------------------------------------------- the device's graph

class RoutedModel(nn.Module):
    """The small network and its router in one module: image ``(1, C, H, W)`` -> ``(logits, quality)``.

    ``router`` is a :class:`LinearHead` (reads the output statistics of the
    :func:`logits_tensor`) or a :class:`DecisionNetwork` (reads ``tapped``, the
    small network's features, too). The small network's weights are used as they are (frozen).
    """

    def __init__(self, small: nn.Module, router: nn.Module, *, num_logits: int, tapped: str | None = None):
        super().__init__()
        self.small = small
        self.router = router
        self.statistics = OutputStatistics(num_logits)
        self.tapped = tapped
        self.summarized = logits_tensor(small.stages())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = tuple(dict.fromkeys(name for name in (OUTPUT, self.summarized, self.tapped) if name is not None))
        tensors = run_stages(self.small.stages(), {INPUT: image}, image.shape[-2:], wanted)
        statistics = self.statistics(tensors[self.summarized])
        quality = self.router(statistics) if self.tapped is None else self.router(tensors[self.tapped], statistics)
        return tensors[OUTPUT], quality
