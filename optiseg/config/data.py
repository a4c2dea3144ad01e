"""The `data:` section: where the images and masks are and how to read the masks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ._base import ConfigPath, Section


class SyntheticData(Section):
    """Generate a synthetic conveyor-belt data set at `root` when it does not exist yet."""

    n: PositiveInt = 200
    classes: int = Field(2, ge=2, description="2 = binary (package / background); more adds classes")
    seed: int = 0


class DataConfig(Section):
    root: ConfigPath
    layout: Literal["auto", "split", "single"] = "auto"
    split: tuple[float, float, float] = (0.75, 0.10, 0.15)
    split_seed: int = 0
    masks: Literal["binary", "index", "rgb"] = "binary"
    foreground_values: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None
    ignore_index: int | None = None
    palette: dict[str, tuple[int, int, int]] | None = None
    cache_mb: PositiveInt = 2048
    synthetic: SyntheticData | None = None
