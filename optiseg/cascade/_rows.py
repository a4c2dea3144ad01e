"""What a router learns from: the small model's output on images it did not train on, and how well it did there.

A small model scored on its own training images looks better than it is, and a
router trained on those rows learns that every image is easy. Rows therefore
come from images the small model never trained on:

* :func:`rows_from_split` on the **validation split** (the default; it costs no
  training), optionally with each image's mirror image too (a horizontal flip,
  the one augmentation the small network was trained with; its mask is flipped
  with it). Photometric changes and vertical flips were tried and made the
  routers worse on the packages data: they change how hard an image is in ways
  real images do not;
* :func:`cross_fit_rows`: **K-fold cross-fitting** on the training split. The
  small network is trained again K times, each time without one fold, and
  scores that fold; this **costs K trainings** of the small network. The
  statistics and the scores of a row come from the fold's model (which never
  saw the image); the pooled features come from the deployed small network,
  whose features the decision network reads at run time.

Every row records its source image, whether it is the mirror image, and the model that scored it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import IGNORE
from ..models._stages import INPUT, OUTPUT, run_stages
from ..training.evaluate import predict_classes, to_model_input
from ..training.metrics import confusion_matrix
from ._features import OutputStatistics
from ._routers import logits_tensor, pyramid_pool
from ._scores import TARGETS, PerImageScores, sample_names

BATCH = 16


@dataclass(frozen=True, eq=False)
class RouterRows:
    """One row per image (and mirror image): the small model's output statistics, pooled features, true IoU and pixel accuracy."""

    statistics: np.ndarray  # (rows, statistics)
    pooled: np.ndarray  # (rows, pooled features)
    iou: np.ndarray  # (rows,) the image's IoU under the model that scored it
    accuracy: np.ndarray  # (rows,) the share of the image's pixels that model gets right
    class_iou: np.ndarray  # (rows, classes), NaN where a class is in neither truth nor prediction
    sources: tuple[str, ...]  # "<split>/<stem>" of each row's image
    mirrored: np.ndarray  # (rows,) True where the row is an image's mirror image
    scored_by: tuple[str, ...]  # the model whose output gave the statistics and the scores: "small", "fold-2", ...

    def __len__(self) -> int:
        return len(self.iou)

    def target(self, name: str) -> np.ndarray:
        """What a router learns to predict: ``accuracy`` or ``iou``."""
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
        return getattr(self, name)

    @property
    def groups(self) -> np.ndarray:
        """A number per source image (an image and its mirror image share it), for grouped cross-validation."""
        _, inverse = np.unique(np.array(self.sources), return_inverse=True)
        return inverse

    @property
    def vectors(self) -> np.ndarray:
        """What the decision head reads: pooled features, then statistics."""
        return np.concatenate([self.pooled, self.statistics], axis=1)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, statistics=self.statistics, pooled=self.pooled, iou=self.iou, accuracy=self.accuracy, class_iou=self.class_iou,
                 sources=np.array(self.sources), mirrored=self.mirrored, scored_by=np.array(self.scored_by))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RouterRows:
        with np.load(path, allow_pickle=False) as data:
            return cls(statistics=data["statistics"], pooled=data["pooled"], iou=data["iou"], accuracy=data["accuracy"],
                       class_iou=data["class_iou"], sources=tuple(str(s) for s in data["sources"]),
                       mirrored=data["mirrored"], scored_by=tuple(str(s) for s in data["scored_by"]))


def concat_rows(parts: Sequence[RouterRows]) -> RouterRows:
    """The rows of every part, in order."""
    return RouterRows(
        statistics=np.concatenate([p.statistics for p in parts]), pooled=np.concatenate([p.pooled for p in parts]),
        iou=np.concatenate([p.iou for p in parts]), accuracy=np.concatenate([p.accuracy for p in parts]), class_iou=np.concatenate([p.class_iou for p in parts]),
        sources=tuple(s for p in parts for s in p.sources), mirrored=np.concatenate([p.mirrored for p in parts]),
        scored_by=tuple(s for p in parts for s in p.scored_by),
    )


@torch.no_grad()
def small_outputs(model: nn.Module, images: np.ndarray, *, in_channels: int, num_logits: int,
                  tapped: str | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """uint8 images ``(B, H, W, 3)`` -> the small network's logits, its output statistics and its pooled features.

    The statistics summarize the logits before the network resizes them (see :func:`logits_tensor`), as on the device.
    """
    model.eval()
    batch = to_model_input(images, in_channels, torch.device("cpu")).contiguous()
    stages = model.stages()
    summarized = logits_tensor(stages)
    wanted = tuple(dict.fromkeys(name for name in (OUTPUT, summarized, tapped) if name is not None))
    tensors = run_stages(stages, {INPUT: batch}, batch.shape[-2:], wanted)
    statistics = OutputStatistics(num_logits)(tensors[summarized]).numpy()
    pooled = None if tapped is None else pyramid_pool(tensors[tapped]).numpy()
    return tensors[OUTPUT], statistics, pooled


def rows_from_split(model: nn.Module, *, images, masks, names: Sequence[str], split: str, class_names: Sequence[str],
                    binary: bool, in_channels: int, num_logits: int, tapped: str | None, flip: bool = False,
                    scored_by: str = "small", features_model: nn.Module | None = None) -> RouterRows:
    """Rows from every image of a split (``images`` resized for ``model``, ``masks`` at original size), and its mirror image with ``flip``.

    ``model`` scores each image (statistics, IoU, pixel accuracy); ``features_model`` (default: ``model``)
    gives the pooled features of the ``tapped`` tensor.
    """
    classes = len(class_names)
    items = [(index, mirrored) for index in range(len(names)) for mirrored in (False, True)[: 2 if flip else 1]]
    statistics, pooled, confusions = [], [], []
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        pairs = [_mirrored(images[i][0], masks[i]) if mirrored else (images[i][0], masks[i]) for i, mirrored in chunk]
        batch = np.stack([image for image, _ in pairs])
        logits, stats, features = small_outputs(model, batch, in_channels=in_channels, num_logits=num_logits,
                                                tapped=tapped if features_model is None else None)
        if features_model is not None and tapped is not None:
            features = small_outputs(features_model, batch, in_channels=in_channels, num_logits=num_logits, tapped=tapped)[2]
        statistics.append(stats)
        pooled.append(features if features is not None else np.zeros((len(chunk), 0), np.float32))
        for row, (_, mask) in enumerate(pairs):
            prediction = predict_classes(logits[row], mask.shape[:2]).numpy()
            confusions.append(confusion_matrix(mask, prediction, classes, IGNORE))
    scores = PerImageScores(split=split, class_names=tuple(class_names), binary=binary,
                            confusions=np.array(confusions, np.int64).reshape(len(items), classes, classes),
                            names=tuple(f"{names[i]}{' (mirrored)' if mirrored else ''}" for i, mirrored in items))
    return RouterRows(
        statistics=np.concatenate(statistics).astype(np.float64), pooled=np.concatenate(pooled).astype(np.float64),
        iou=scores.iou, accuracy=scores.accuracy, class_iou=scores.class_iou, sources=tuple(f"{split}/{names[i]}" for i, _ in items),
        mirrored=np.array([mirrored for _, mirrored in items], bool), scored_by=(scored_by,) * len(items),
    )


def _mirrored(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


# ---------------------------------------------------------------- K-fold cross-fitting (costs K trainings)

@dataclass(frozen=True)
class CrossFit:
    """Rows from the training split by K-fold cross-fitting, and which images each fold's model trained on."""

    rows: RouterRows
    held_out: tuple[tuple[str, ...], ...]  # the stems each fold's model scored
    trained_on: tuple[tuple[str, ...], ...]  # the stems each fold's model was trained on


def fold_assignment(count: int, folds: int, seed: int) -> np.ndarray:
    """A fold number 0..folds-1 for each of ``count`` training images, by a seeded shuffle (fold sizes differ by at most one)."""
    if folds < 2 or folds > count:
        raise ValueError(f"cross-fitting needs 2 to {count} folds (one image per fold at least), not {folds}")
    fold_of = np.empty(count, np.int64)
    fold_of[np.random.default_rng(seed).permutation(count)] = np.arange(count) % folds
    return fold_of


def cross_fit_rows(network, *, dataset, training, folds: int, folder: Path, deployed: nn.Module, tapped: str | None,
                   flip: bool = False, seed: int = 0, cache_mb: float = 1024,
                   train: Callable[..., Any] | None = None) -> CrossFit:
    """Train ``network`` ``folds`` times (each without one fold of the training split, into ``folder/fold-k``) and score each held-out fold.

    ``train`` is :func:`optiseg.training.train_network` unless given; finished fold runs are reused.
    """
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data import DatasetCache
    from ..training import train_network

    train = train or train_network
    training = training.for_split(len(dataset.train))  # every fold as the deployed network: its batch and rate
    samples = dataset.train
    fold_of = fold_assignment(len(samples), folds, seed)
    parts, held_out, trained_on = [], [], []
    for fold in range(folds):
        kept = tuple(s for s, f in zip(samples, fold_of) if f != fold)
        held = tuple(s for s, f in zip(samples, fold_of) if f == fold)
        subset = dataclasses.replace(dataset, train=kept, test=held)
        result = train(network, dataset=subset, training=training, run_dir=folder / f"fold-{fold}", export_onnx=False)
        model = model_from_checkpoint(load_checkpoint(result.checkpoint))
        cache = DatasetCache(subset, budget_mb=cache_mb)
        parts.append(rows_from_split(
            model, images=cache.resized("test", network.resolution), masks=cache.original_masks("test"),
            names=sample_names(held), split="train", class_names=dataset.class_names, binary=dataset.binary,
            in_channels=network.in_channels, num_logits=network.num_classes, tapped=tapped, flip=flip,
            scored_by=f"fold-{fold}", features_model=deployed,
        ))
        held_out.append(sample_names(held))
        trained_on.append(sample_names(kept))
    return CrossFit(rows=concat_rows(parts), held_out=tuple(held_out), trained_on=tuple(trained_on))
