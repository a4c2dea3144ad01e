"""Turning stored masks (binary values, class indices or colours) into class-index masks.

A decoded mask is ``uint8`` (H, W): 0..C-1 are classes (binary: 0 background,
1 foreground) and :data:`IGNORE` (255) marks pixels left out of loss and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DataConfig

IGNORE = 255
_UNDECLARED = 256  # lookup-table entry of a value the config does not declare
_SHOWN_VALUES = 8


class MaskValueError(Exception):
    """A mask holding values (or colours) the config does not declare; ``fix`` says what to change."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class MaskCodec:
    """How one data set's masks encode classes (built from its :class:`DataConfig`)."""

    kind: str
    class_names: tuple[str, ...]
    values: dict[int, int]  # binary/index: stored value -> class index or IGNORE
    colours: dict[tuple[int, int, int], int]  # rgb: colour -> class index or IGNORE

    @classmethod
    def from_config(cls, cfg: DataConfig) -> "MaskCodec":
        values: dict[int, int] = {}
        colours: dict[tuple[int, int, int], int] = {}
        if cfg.masks == "binary":
            values = {**{v: 0 for v in cfg.background_values}, **{v: 1 for v in cfg.foreground_values}}
        elif cfg.masks == "index":
            values = {index: index for index in range(len(cfg.class_names))}
        else:
            colours = {tuple(c): index for index, c in enumerate((cfg.palette or {}).values())}
            if cfg.ignore_color is not None:
                colours[tuple(cfg.ignore_color)] = IGNORE
        if cfg.ignore_index is not None:
            values[cfg.ignore_index] = IGNORE
        return cls(kind=cfg.masks, class_names=cfg.class_names, values=values, colours=colours)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_ignore(self) -> bool:
        return IGNORE in self.values.values() or IGNORE in self.colours.values()

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """A stored mask (from :func:`read_mask`) as class indices; :class:`MaskValueError` on undeclared values."""
        if self.kind == "rgb":
            return self._decode_colours(raw)
        if raw.ndim == 3:
            raise MaskValueError(
                "the mask has colour pixels, but masks are declared single-channel",
                f"set `masks: rgb` with a `palette`, or save the masks as one-channel PNGs of {self._declared()}",
            )
        table = np.full(65536 if raw.dtype == np.uint16 else 256, _UNDECLARED, dtype=np.uint16)
        for value, index in self.values.items():
            if value < table.size:
                table[value] = index
        decoded = table[raw]
        undeclared = decoded == _UNDECLARED
        if undeclared.any():
            found = np.unique(raw[undeclared])
            raise MaskValueError(
                f"mask values {_listing(found.tolist())} are not declared ({self._declared()})",
                self._value_fix(found.tolist()),
            )
        return decoded.astype(np.uint8)

    def _decode_colours(self, raw: np.ndarray) -> np.ndarray:
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        if raw.dtype != np.uint8:
            raise MaskValueError("the colour mask is 16-bit", "save colour masks as 8-bit RGB PNGs")
        keys = _colour_keys(raw)
        known = np.array(sorted(_pack(c) for c in self.colours), dtype=np.int64)
        classes = np.array([self.colours[_unpack(k)] for k in known], dtype=np.uint8)
        position = np.clip(np.searchsorted(known, keys), 0, len(known) - 1)
        undeclared = known[position] != keys
        if undeclared.any():
            found = [list(_unpack(int(k))) for k in np.unique(keys[undeclared])]
            raise MaskValueError(
                f"mask colours {_listing(found)} are not in the palette",
                "add them to `palette` (or set `ignore_color`), or repaint those pixels; "
                "anti-aliased or JPEG-compressed masks must be saved as lossless PNG without smoothing",
            )
        return classes[position]

    def _declared(self) -> str:
        if self.kind == "binary":
            groups: dict[int, list[int]] = {}
            for value, index in sorted(self.values.items()):
                groups.setdefault(index, []).append(value)
            names = {0: "background", 1: "foreground", IGNORE: "ignored"}
            return ", ".join(f"{names[i]} {'/'.join(map(str, v))}" for i, v in groups.items())
        ignored = [v for v, i in self.values.items() if i == IGNORE]
        text = f"classes 0..{self.num_classes - 1}"
        return text + (f", ignored {ignored[0]}" if ignored else "")

    def _value_fix(self, found: list[int]) -> str:
        if self.kind == "binary":
            return (
                "declare them in `foreground_values` or `background_values` (or as `ignore_index`), "
                "or repaint those pixels; masks must be lossless PNGs without anti-aliasing"
            )
        return (
            f"add classes to `classes` (the largest value found is {max(found)}), set `ignore_index` "
            "for an 'unlabelled' value, or repaint those pixels"
        )


def _listing(values: list) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN_VALUES])
    more = len(values) - _SHOWN_VALUES
    return shown + (f" and {more} more" if more > 0 else "")


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _pack(colour: tuple[int, int, int]) -> int:
    return (colour[0] << 16) | (colour[1] << 8) | colour[2]


def _unpack(key: int) -> tuple[int, int, int]:
    return ((key >> 16) & 255, (key >> 8) & 255, key & 255)
