"""Decoding image and mask files with OpenCV, failing loudly on anything unreadable."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from .._paths import NotRegularFile, read_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type of palette ("P" mode) PNGs

# Corrupt files are reported by optiseg with their path; OpenCV's own warnings on stderr would only add noise.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class UnreadableFile(Exception):
    """A file that is missing, truncated, not an image or not a regular file; the message says which."""


def read_image(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array (H, W, 3); grey and 16-bit images are converted."""
    data = _read_bytes(path)
    return _decode(path, data, cv2.IMREAD_COLOR_RGB)


def read_mask(path: Path) -> np.ndarray:
    """A mask file as stored: (H, W) uint8/uint16 values, or (H, W, 3) RGB for colour masks.

    Palette PNGs keep their indices (OpenCV would turn them into colours), and
    colour files whose channels are all equal are read as one channel.
    """
    data = _read_bytes(path)
    if _is_palette_png(data):
        return _read_palette_png(data)
    mask = _decode(path, data, cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3:
        mask = cv2.cvtColor(mask[..., :3], cv2.COLOR_BGR2RGB)
        if (mask[..., 0] == mask[..., 1]).all() and (mask[..., 0] == mask[..., 2]).all():
            mask = np.ascontiguousarray(mask[..., 0])
    if mask.dtype not in (np.uint8, np.uint16):
        raise UnreadableFile(f"mask pixels are {mask.dtype}, not 8- or 16-bit integers")
    return mask


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.frombuffer(read_regular(path), dtype=np.uint8)
    except NotRegularFile as exc:
        raise UnreadableFile(str(exc)) from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read the file: {exc.strerror or exc}") from None


def _decode(path: Path, data: np.ndarray, flags: int) -> np.ndarray:
    try:
        decoded = cv2.imdecode(data, flags) if data.size else None
    except cv2.error:
        decoded = None
    if decoded is None:
        raise UnreadableFile(_undecodable(path, data))
    return decoded


def _undecodable(path: Path, data: np.ndarray) -> str:
    if data.size == 0:
        return "the file is empty"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"{path.suffix or 'a file without extension'} is not an image format"
    return "the file is truncated or not a valid image"


def _is_palette_png(data: np.ndarray) -> bool:
    return data.size > 25 and data[:8].tobytes() == _PNG_SIGNATURE and int(data[25]) == _PNG_PALETTE


def _read_palette_png(data: np.ndarray) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise UnreadableFile(
            "palette PNG: its class indices can only be read with Pillow (pip install pillow), "
            "or save the masks as greyscale PNGs"
        ) from None
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            return np.asarray(image.convert("P") if image.mode != "P" else image, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise UnreadableFile(f"the file is truncated or not a valid PNG ({exc})") from None
