"""Data sets from folders: discovery, checks, decoding, caching, augmentation and synthetic data.

>>> from optiseg.data import load_dataset, check_dataset, DatasetCache
>>> dataset = load_dataset(config.data)          # checked; DataError lists every problem
>>> cache = DatasetCache(dataset, budget_mb=config.data.cache_mb)
>>> train = cache.resized("train", (192, 192))  # uint8 images and masks, decoded once
"""

from ._augment import SeededTransform, SourceSizes, build_train_transform, epoch_batches, train_source_sizes
from ._cache import CacheStats, DatasetCache, OriginalMasks, ResizedSplit, resize_image, resize_mask
from ._dataset import Dataset, load_dataset, prepare_synthetic
from ._io import IMAGE_SUFFIXES, UnreadableFile, read_image, read_mask
from ._layout import SPLITS, Problem, Sample, discover, split_samples
from ._masks import IGNORE, MaskCodec, MaskValueError
from .check import DataReport, check_dataset
from .synth import generate_synthetic, render_scene

__all__ = [
    "IGNORE",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "CacheStats",
    "DataReport",
    "Dataset",
    "DatasetCache",
    "MaskCodec",
    "MaskValueError",
    "OriginalMasks",
    "Problem",
    "ResizedSplit",
    "Sample",
    "SeededTransform",
    "SourceSizes",
    "UnreadableFile",
    "build_train_transform",
    "check_dataset",
    "discover",
    "epoch_batches",
    "generate_synthetic",
    "load_dataset",
    "prepare_synthetic",
    "read_image",
    "read_mask",
    "render_scene",
    "resize_image",
    "resize_mask",
    "split_samples",
    "train_source_sizes",
]
