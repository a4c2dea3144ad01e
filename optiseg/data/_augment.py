"""Training augmentation with albumentations, and the batches it feeds.

The thesis's augmentations: a random crop (or a random-size crop resized to
the input), shift-scale-rotate, RGB shift and brightness/contrast. Masks are
always moved with nearest neighbour; pixels a rotation or shift uncovers are
marked ignored. Normalization is done on the whole batch as a tensor, by the
trainer, with :func:`optiseg.preprocessing.input_spec`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from ..config import AugmentConfig
from ._cache import ResizedSplit, resize_image
from ._masks import IGNORE

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def train_source_size(resolution: tuple[int, int], augment: AugmentConfig, label_scale: int = 1) -> tuple[int, int]:
    """The size training images are cached at: the input size (x ``crop_margin`` for crops) x ``label_scale``."""
    height, width = resolution
    if augment.crop != "none":
        height, width = math.ceil(height * augment.crop_margin), math.ceil(width * augment.crop_margin)
    return (height * label_scale, width * label_scale)


def build_train_transform(resolution: tuple[int, int], augment: AugmentConfig, label_scale: int = 1) -> "SeededTransform":
    """The training augmentation for input ``resolution`` = (height, width), applied to uint8 RGB + class mask.

    The geometric steps run at ``label_scale`` x the input size; the image is then
    shrunk to the input size while the mask keeps the larger size, so the loss can
    check the upsampled logits against finer masks (as the scores do at full size).
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call at import
    import albumentations as A

    height, width = resolution[0] * label_scale, resolution[1] * label_scale
    geometric = []
    if augment.crop == "random":
        geometric.append(A.RandomCrop(height=height, width=width))
    elif augment.crop == "scale":
        aspect = width / height
        geometric.append(
            A.RandomResizedCrop(
                size=(height, width),
                scale=(augment.min_scale, 1.0),
                ratio=(aspect * 0.8, aspect * 1.25),
                area_for_downscale="image",
            )
        )
    if augment.hflip:
        geometric.append(A.HorizontalFlip(p=augment.hflip))
    if augment.affine:
        geometric.append(
            A.Affine(
                scale=(1 - augment.scale, 1 + augment.scale),
                translate_percent=(-augment.shift, augment.shift),
                rotate=(-augment.rotate, augment.rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE,
                p=augment.affine,
            )
        )
    photometric = []
    if augment.rgb_shift:
        limit = augment.rgb_shift / 255  # a fraction, so albumentations does not guess the scale
        photometric.append(A.RGBShift(r_shift_limit=limit, g_shift_limit=limit, b_shift_limit=limit, p=0.5))
    if augment.brightness or augment.contrast:
        photometric.append(A.RandomBrightnessContrast(brightness_limit=augment.brightness, contrast_limit=augment.contrast, p=0.5))
    return SeededTransform(A.Compose(geometric), A.Compose(photometric), resolution)


class SeededTransform:
    """Geometric steps on image + mask, the image shrunk to the input size, then photometric steps on the image.

    The random state is set per epoch (:meth:`reseed`), so runs and resumed runs repeat exactly.
    """

    def __init__(self, geometric, photometric, resolution: tuple[int, int]):
        self._geometric = geometric
        self._photometric = photometric
        self._resolution = resolution

    def reseed(self, seed: int) -> None:
        self._geometric.set_random_seed(seed)
        self._photometric.set_random_seed(seed + 1)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved = self._geometric(image=image, mask=mask)
        image = resize_image(moved["image"], self._resolution)
        return self._photometric(image=image)["image"], moved["mask"]


def epoch_batches(
    source: ResizedSplit,
    transform: Transform | None,
    batch_size: int,
    rng: np.random.Generator,
    *,
    drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled batches of one epoch: uint8 images (B, H, W, 3) and masks (B, H, W).

    The incomplete last batch is dropped when ``drop_last`` (BatchNorm cannot
    train on a batch of one).
    """
    order = rng.permutation(len(source))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        pairs = [source[int(i)] for i in order[start : start + batch_size]]
        if transform is not None:
            pairs = [transform(image, mask) for image, mask in pairs]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
