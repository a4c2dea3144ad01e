"""Input resolutions the architectures accept: multiples of 32 from 64 to 1024."""

from __future__ import annotations

from ..errors import UsageError

STRIDE = 32
MIN_SIDE = 64
MAX_SIDE = 1024


def parse_resolution(text: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"192"``, ``192``, ``"544x960"`` or ``(544, 960)`` -> ``(height, width)``, validated."""
    if isinstance(text, bool):
        raise UsageError(f"resolution {text!r} is invalid: write HxW (e.g. 544x960) or one side for a square (e.g. 192)")
    if isinstance(text, int):
        size = (text, text)
    elif isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(v, int) for v in text):
        size = (int(text[0]), int(text[1]))
    else:
        parts = str(text).lower().replace(" ", "").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2):
            raise UsageError(
                f"resolution {text!r} is invalid: write HxW (e.g. 544x960) or one side for a square (e.g. 192)"
            )
        size = (numbers[0], numbers[-1])
    return check_resolution(size)


def check_resolution(size: tuple[int, int]) -> tuple[int, int]:
    """Raise :class:`UsageError` unless both sides are multiples of 32 in [64, 1024]."""
    for side_name, side in zip(("height", "width"), size):
        if side % STRIDE or not MIN_SIDE <= side <= MAX_SIDE:
            lower = max(MIN_SIDE, min(MAX_SIDE, side - side % STRIDE))
            upper = max(MIN_SIDE, min(MAX_SIDE, lower + STRIDE if side % STRIDE else lower))
            nearest = f"{lower}" if lower == upper else f"{lower} or {upper}"
            raise UsageError(
                f"resolution {size[0]}x{size[1]} is invalid: {side_name} {side} must be a multiple of {STRIDE} "
                f"from {MIN_SIDE} to {MAX_SIDE} (nearest valid: {nearest})"
            )
    return (int(size[0]), int(size[1]))


def format_resolution(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
