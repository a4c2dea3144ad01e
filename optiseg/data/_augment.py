"""Training augmentation, and the batches it feeds.

The thesis's augmentations: a random crop (or a random-size crop resized to
the input), horizontal flip, shift-scale-rotate, RGB shift and
brightness/contrast. The geometric steps are composed into one affine map
and applied at two scales: the mask at ``label_scale`` x the input size
(nearest neighbour, so class indices never blend; pixels from outside the
cached source are marked ignored) and the image directly at the input size
(bilinear), from a source cached at that scale (x ``crop_margin`` for
crops). With a crop, a rotation or shift brings in the margin's real pixels
where a warp of the crop alone would leave a border. Warping the image once
at the small size costs 1/``label_scale``^2 of warping it at the mask's size
and shrinking it. The photometric steps (albumentations) follow on the
image. Normalization is done on the whole batch as a tensor, by the
trainer, with :func:`optiseg.preprocessing.input_spec`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

import cv2
import numpy as np

from ..config import AugmentConfig
from ._cache import ResizedSplit
from ._masks import IGNORE

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
_CROP_TRIES = 10


class SourceSizes(NamedTuple):
    """The (height, width) training images and masks are cached at; the mask's is ``label_scale`` x the image's."""

    image: tuple[int, int]
    mask: tuple[int, int]


def train_source_sizes(resolution: tuple[int, int], augment: AugmentConfig, label_scale: int = 1) -> SourceSizes:
    """The sizes the training split is cached at: images at the input size (x ``crop_margin`` for crops), masks
    ``label_scale`` x that."""
    height, width = resolution
    if augment.crop != "none":
        height, width = math.ceil(height * augment.crop_margin), math.ceil(width * augment.crop_margin)
    return SourceSizes((height, width), (height * label_scale, width * label_scale))


def build_train_transform(resolution: tuple[int, int], augment: AugmentConfig, label_scale: int = 1) -> "SeededTransform":
    """The training augmentation for input ``resolution`` = (height, width), applied to a uint8 RGB image and its
    class mask cached at :func:`train_source_sizes`: the image comes out at the input size, the mask at
    ``label_scale`` x it, so the loss can check the upsampled logits against finer masks (as the scores do at full
    size)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call at import
    import albumentations as A

    photometric = []
    if augment.rgb_shift:
        limit = augment.rgb_shift / 255  # a fraction, so albumentations does not guess the scale
        photometric.append(A.RGBShift(r_shift_limit=limit, g_shift_limit=limit, b_shift_limit=limit, p=0.5))
    if augment.brightness or augment.contrast:
        photometric.append(A.RandomBrightnessContrast(brightness_limit=augment.brightness, contrast_limit=augment.contrast, p=0.5))
    return SeededTransform(augment, resolution, label_scale, A.Compose(photometric))


class SeededTransform:
    """The geometric steps as one affine map applied to the mask (at ``label_scale``) and the image (at the input
    size), then the photometric steps on the image.

    The random state is set per epoch (:meth:`reseed`), so runs and resumed runs repeat exactly.
    """

    def __init__(self, augment: AugmentConfig, resolution: tuple[int, int], label_scale: int, photometric):
        self._augment = augment
        self._resolution = resolution
        self._label_scale = label_scale
        self._photometric = photometric
        self._rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._photometric.set_random_seed(seed + 1)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = self._label_scale
        height, width = self._resolution
        if image.shape[0] * scale != mask.shape[0] or image.shape[1] * scale != mask.shape[1]:
            raise ValueError(f"the image {image.shape[:2]} must be 1/{scale} of the mask {mask.shape[:2]} (train_source_sizes)")
        moves = self._sample(image.shape[:2])
        if moves.matrix is None:  # an integer crop on the image's grid, maybe flipped: plain slicing, exact
            top, left = moves.offset
            image = image[top : top + height, left : left + width]
            mask = mask[top * scale : (top + height) * scale, left * scale : (left + width) * scale]
            if moves.flip:
                image, mask = image[:, ::-1], mask[:, ::-1]
            image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        else:
            mask = cv2.warpAffine(mask, _pixel_map(moves.matrix, 1, 1), (width * scale, height * scale),
                                  flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
            image = cv2.warpAffine(image, _pixel_map(moves.matrix, scale, scale), (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return self.photometric(image), mask

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """The photometric steps alone, on a uint8 RGB image."""
        return self._photometric(image=image)["image"]

    def _sample(self, image_source: tuple[int, int]) -> "_Moves":
        """One sample's geometric steps: a crop offset on the image's grid and a flip, and the 3x3 map from source
        to output mask coordinates (continuous: pixel i spans [i, i + 1)) when more than that is asked."""
        augment, rng, scale = self._augment, self._rng, self._label_scale
        flip = bool(augment.hflip) and rng.random() < augment.hflip
        offset = (0, 0)
        if augment.crop == "random":
            offset = tuple(int(rng.integers(0, s - o + 1)) for s, o in zip(image_source, self._resolution))
        warped = bool(augment.affine) and rng.random() < augment.affine
        if augment.crop != "scale" and not warped:
            return _Moves(offset, flip, None)
        output = (self._resolution[0] * scale, self._resolution[1] * scale)
        if augment.crop == "scale":
            matrix = _crop_map((image_source[0] * scale, image_source[1] * scale), output, augment, rng)
        else:
            matrix = _translation(-offset[1] * scale, -offset[0] * scale)
        if flip:
            matrix = np.array([[-1.0, 0, output[1]], [0, 1, 0], [0, 0, 1]]) @ matrix
        if warped:
            matrix = _affine_map(output, augment, rng) @ matrix
        return _Moves(offset, flip, matrix)


class _Moves(NamedTuple):
    offset: tuple[int, int]
    flip: bool
    matrix: np.ndarray | None


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])


def _crop_map(source: tuple[int, int], output: tuple[int, int], augment: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A random-size crop (area ``min_scale``..1 of the source, aspect 0.8..1.25 of the output's) stretched to the
    output; the largest centred crop of the output's aspect when ten tries do not fit."""
    (source_h, source_w), (out_h, out_w) = source, output
    aspect = out_w / out_h
    for _ in range(_CROP_TRIES):
        area = source_h * source_w * rng.uniform(augment.min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(aspect * 0.8), math.log(aspect * 1.25)))
        crop_w, crop_h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if crop_w <= source_w and crop_h <= source_h:
            left, top = rng.uniform(0, source_w - crop_w), rng.uniform(0, source_h - crop_h)
            break
    else:
        crop_w = min(source_w, source_h * aspect)
        crop_h = crop_w / aspect
        left, top = (source_w - crop_w) / 2, (source_h - crop_h) / 2
    return np.diag([out_w / crop_w, out_h / crop_h, 1.0]) @ _translation(-left, -top)


def _affine_map(output: tuple[int, int], augment: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Shift-scale-rotate about the output's centre: each axis zoomed by 1 +- ``scale``, rotated by +- ``rotate``
    degrees, shifted by +- ``shift`` of its side."""
    height, width = output
    zoom_x, zoom_y = rng.uniform(1 - augment.scale, 1 + augment.scale, size=2)
    angle = math.radians(rng.uniform(-augment.rotate, augment.rotate))
    shift_x, shift_y = rng.uniform(-augment.shift, augment.shift, size=2) * (width, height)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos * zoom_x, -sin * zoom_y, 0], [sin * zoom_x, cos * zoom_y, 0], [0, 0, 1]])
    return _translation(width / 2 + shift_x, height / 2 + shift_y) @ rotation @ _translation(-width / 2, -height / 2)


def _pixel_map(matrix: np.ndarray, source_step: float, output_step: float) -> np.ndarray:
    """``matrix`` (continuous mask coordinates) as the 2x3 map of pixel indices :func:`cv2.warpAffine` takes, for a
    source and an output whose pixels are ``source_step`` and ``output_step`` mask pixels wide (centre i + 0.5)."""
    to_continuous = np.array([[source_step, 0, 0.5 * source_step], [0, source_step, 0.5 * source_step], [0, 0, 1]])
    to_pixels = np.array([[1 / output_step, 0, -0.5], [0, 1 / output_step, -0.5], [0, 0, 1]])
    return (to_pixels @ matrix @ to_continuous)[:2]


def epoch_batches(
    source: ResizedSplit,
    transform: Transform | None,
    batch_size: int,
    rng: np.random.Generator,
    *,
    drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled batches of one epoch: uint8 images (B, H, W, 3) and masks (B, h, w) (the masks at ``label_scale`` x
    the images' size when ``transform`` is the training augmentation).

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
