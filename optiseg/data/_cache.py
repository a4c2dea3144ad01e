"""Decoded images and masks, resized once per input size and kept in memory within a budget.

Decoding a JPEG costs more than a training step's share of a small network
on a CPU, so every image is decoded once per size and kept as uint8. RGB
and luma candidates share the entries (luma is computed after augmentation).
Least recently used entries are dropped when a new size needs the room; a
split too large for the whole budget is decoded on each access instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ._dataset import Dataset

MB = 1024 * 1024


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` = (height, width): area averaging when shrinking, bilinear when enlarging."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized to ``size`` = (height, width) with nearest neighbour (class indices never blend): each new pixel
    takes the source pixel under its centre, so the mask sits where :func:`resize_image` puts the image (OpenCV's
    plain nearest neighbour would shift it by up to half a new pixel up and left)."""
    height, width = size
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


class ResizedSplit(Sequence):
    """The images (H, W, 3) and masks (H, W) of one split at one size, as uint8; ``split[i]`` -> (image, mask)."""

    def __init__(self, size: tuple[int, int], loader: Callable[[int], tuple[np.ndarray, np.ndarray]], count: int,
                 arrays: tuple[np.ndarray, np.ndarray] | None = None):
        self.size = size
        self._loader = loader
        self._count = count
        self._arrays = arrays

    @property
    def in_memory(self) -> bool:
        return self._arrays is not None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is not None:
            return self._arrays[0][index], self._arrays[1][index]
        return self._loader(index)


class OriginalMasks(Sequence):
    """The decoded masks of one split at their original size (for metrics at full resolution)."""

    def __init__(self, loader: Callable[[int], np.ndarray], count: int, masks: list[np.ndarray] | None = None):
        self._loader = loader
        self._count = count
        self._masks = masks

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        return self._masks[index] if self._masks is not None else self._loader(index)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    used_mb: float
    budget_mb: float
    hits: int
    misses: int


class DatasetCache:
    """Resized uint8 copies of a data set's splits, shared by every candidate trained in one process.

    ``resized(split, (h, w))`` decodes and resizes a split once and keeps it while
    it fits in ``budget_mb``; ``original_masks(split)`` keeps the full-size masks
    the metrics are computed on. Thread-safe.
    """

    def __init__(self, dataset: Dataset, budget_mb: float = 2048, workers: int = 2):
        self.dataset = dataset
        self.budget_bytes = int(budget_mb * MB)
        self.workers = workers
        self._entries: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def resized(self, split: str, size: tuple[int, int], mask_size: tuple[int, int] | None = None) -> ResizedSplit:
        """Images of ``split`` resized to ``size`` = (height, width), their masks to ``mask_size`` (default: ``size``)."""
        samples = self.dataset.split(split)
        size = (int(size[0]), int(size[1]))
        mask_size = size if mask_size is None else (int(mask_size[0]), int(mask_size[1]))

        def load(index: int) -> tuple[np.ndarray, np.ndarray]:
            sample = samples[index]
            return resize_image(self.dataset.read_image(sample), size), resize_mask(self.dataset.read_mask(sample), mask_size)

        def build() -> ResizedSplit:
            images = np.empty((len(samples), *size, 3), np.uint8)
            masks = np.empty((len(samples), *mask_size), np.uint8)
            for index, (image, mask) in enumerate(self._map(load, len(samples))):
                images[index], masks[index] = image, mask
            return ResizedSplit(size, load, len(samples), (images, masks))

        nbytes = len(samples) * (size[0] * size[1] * 3 + mask_size[0] * mask_size[1])
        return self._get(("resized", split, size, mask_size), nbytes, build, lambda: ResizedSplit(size, load, len(samples)))

    def original_masks(self, split: str) -> OriginalMasks:
        """The masks of ``split`` at their stored size, decoded to class indices."""
        samples = self.dataset.split(split)

        def load(index: int) -> np.ndarray:
            return self.dataset.read_mask(samples[index])

        def build() -> OriginalMasks:
            return OriginalMasks(load, len(samples), list(self._map(load, len(samples))))

        # The size is only known after decoding: estimate from the first mask.
        nbytes = int(load(0).nbytes * len(samples)) if samples else 0
        return self._get(("original", split), nbytes, build, lambda: OriginalMasks(load, len(samples)))

    def stats(self) -> CacheStats:
        with self._lock:
            used = sum(n for _, n in self._entries.values())
            return CacheStats(len(self._entries), used / MB, self.budget_bytes / MB, self._hits, self._misses)

    def _get(self, key: tuple, nbytes: int, build: Callable[[], object], lazy: Callable[[], object]):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._entries[key][0]
            self._misses += 1
            if nbytes > self.budget_bytes:
                return lazy()
            used = sum(n for _, n in self._entries.values())
            while self._entries and used + nbytes > self.budget_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                used -= freed
            value = build()
            self._entries[key] = (value, nbytes)
            return value

    def _map(self, function: Callable[[int], object], count: int):
        if self.workers <= 1 or count < 2:
            return map(function, range(count))
        with ThreadPoolExecutor(max_workers=self.workers) as pool:  # OpenCV releases the GIL while decoding
            return list(pool.map(function, range(count)))
