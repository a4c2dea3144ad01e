"""Small data sets built inside tests: synthetic renders, or hand-drawn pairs to break on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from optiseg.config import DataConfig
from optiseg.data import generate_synthetic


def synthetic(root: Path, n: int = 16, classes: int = 2, size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """A rendered conveyor-belt data set (split layout, 75/10/15) at ``root``."""
    return generate_synthetic(root, n, classes, seed=seed, size=size)


def data_config(root: Path, **fields: Any) -> DataConfig:
    return DataConfig.model_validate({"root": str(root), **fields})


def write_pair(folder: Path, stem: str, mask: np.ndarray, *, image_ext: str = ".jpg", mask_ext: str = ".png",
               image: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write ``folder/images/STEM.jpg`` (a picture matching the mask) and ``folder/masks/STEM.png``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    if image is None:
        grey = mask if mask.ndim == 2 else mask[..., 0]
        image = np.dstack([(grey > 0).astype(np.uint8) * 180 + 40] * 3)
    image_path = folder / "images" / f"{stem}{image_ext}"
    mask_path = folder / "masks" / f"{stem}{mask_ext}"
    assert cv2.imwrite(str(image_path), image)
    assert cv2.imwrite(str(mask_path), mask if mask.ndim == 2 else cv2.cvtColor(mask, cv2.COLOR_RGB2BGR))
    return image_path, mask_path


def box_mask(height: int = 40, width: int = 48, value: int = 255, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    y, x = int(rng.integers(2, height // 2)), int(rng.integers(2, width // 2))
    mask[y : y + height // 3, x : x + width // 3] = value
    return mask


def split_dataset(root: Path, counts: tuple[int, int, int] = (6, 5, 5), value: int = 255) -> Path:
    """A valid binary data set in the split layout, with ``counts`` images per split."""
    for split, count in zip(("train", "val", "test"), counts):
        for index in range(count):
            write_pair(root / split, f"{split}{index:02d}", box_mask(value=value, seed=index))
    return root


def write_study(path: Path, data: dict[str, Any], training: dict[str, Any] | None = None, **top: Any) -> Path:
    """A study YAML file with the given sections."""
    document = {"data": data, **({"training": training} if training else {}), **top}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
