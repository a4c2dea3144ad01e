"""The `data:` section: where the images and masks are and how to read the masks.

Three kinds of masks are understood (``masks:``):

* ``binary``: one channel, pixels in ``background_values`` are background and
  pixels in ``foreground_values`` foreground (0/255 and 0/1 both work by default);
* ``index``: one channel holding the class index 0..C-1, with ``classes`` naming them;
* ``rgb``: colour masks, ``palette`` maps each class name to its colour.

``ignore_index`` (``ignore_color`` for rgb) marks pixels left out of the loss and the metrics.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from ._base import ConfigPath, Section

# Class names of the synthetic conveyor-belt data set, in class-index order; `classes: C` takes the first C.
SYNTHETIC_CLASSES = ("background", "package", "label", "tape", "barcode", "rail")
MAX_CLASSES = 255  # decoded masks are uint8 class indices, 255 being "ignored"

RGB = tuple[int, int, int]


class SyntheticData(Section):
    """Generate a synthetic conveyor-belt data set at ``data.root`` when that folder does not exist yet."""

    n: PositiveInt = Field(200, description="number of images (split 75/10/15 into train/val/test)")
    classes: int = Field(
        2,
        ge=2,
        le=len(SYNTHETIC_CLASSES),
        description="2 = package / background (0/255 masks); 3..6 add label, tape, barcode, rail (index masks)",
    )
    width: int = Field(480, ge=64, le=4096, description="image width in pixels")
    height: int = Field(270, ge=64, le=4096, description="image height in pixels")
    seed: int = Field(0, description="seed of the generator: same seed, same images")

    @property
    def class_names(self) -> tuple[str, ...]:
        return SYNTHETIC_CLASSES[: self.classes]


class DataConfig(Section):
    """Where the data set is and how its masks encode classes."""

    root: ConfigPath = Field(description="folder holding the data set (relative paths: from the config file's folder)")
    layout: Literal["auto", "split", "single"] = Field(
        "auto",
        description="split: {train,val,test}/{images,masks}; single: one images/ + masks/ pair split by `split`; "
        "auto: whichever is present",
    )
    images_dir: str = Field("images", min_length=1, description="name of the image folders")
    masks_dir: str = Field("masks", min_length=1, description="name of the mask folders")
    split: tuple[float, float, float] = Field(
        (0.75, 0.10, 0.15), description="train/val/test fractions for the single layout; they must sum to 1"
    )
    split_seed: int = Field(0, description="seed of the shuffle that assigns images to splits (single layout)")
    masks: Literal["binary", "index", "rgb"] = Field("binary", description="how masks encode classes")
    background_values: tuple[int, ...] = Field((0,), min_length=1, description="binary masks: background pixel values")
    foreground_values: tuple[int, ...] = Field(
        (1, 255), min_length=1, description="binary masks: foreground pixel values"
    )
    classes: tuple[str, ...] | None = Field(
        None, description="class names, index 0 first; required for index masks; binary default: background, foreground"
    )
    ignore_index: int | None = Field(
        None, ge=0, le=65535, description="mask value excluded from loss and metrics (binary and index masks)"
    )
    palette: dict[str, RGB] | None = Field(None, description="rgb masks: class name -> [R, G, B], first class = index 0")
    ignore_color: RGB | None = Field(None, description="rgb masks: colour excluded from loss and metrics")
    cache_mb: PositiveInt = Field(2048, description="memory for decoded, resized images and masks (MB)")
    synthetic: SyntheticData | None = Field(
        None, description="generate a synthetic data set at `root` if it does not exist (masks and classes follow)"
    )

    @model_validator(mode="before")
    @classmethod
    def _synthetic_defaults(cls, raw: Any) -> Any:
        """A synthetic data set decides the mask kind and class names unless the user wrote them."""
        if not isinstance(raw, dict) or not isinstance(raw.get("synthetic"), dict):
            return raw
        classes = raw["synthetic"].get("classes", 2)
        if not isinstance(classes, int) or not 2 <= classes <= len(SYNTHETIC_CLASSES):
            return raw  # the field validator reports it
        filled = dict(raw)
        filled.setdefault("masks", "binary" if classes == 2 else "index")
        filled.setdefault("classes", list(SYNTHETIC_CLASSES[:classes]))
        return filled

    @field_validator("split")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(part < 0 for part in value) or value[0] <= 0:
            raise ValueError("the train fraction must be positive and none negative, e.g. [0.75, 0.10, 0.15]")
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"the fractions sum to {sum(value):g}, not 1; e.g. [0.75, 0.10, 0.15]")
        return value

    @field_validator("background_values", "foreground_values")
    @classmethod
    def _pixel_values(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [v for v in value if not 0 <= v <= 65535]
        if bad:
            raise ValueError(f"mask values must be 0..65535 (8- or 16-bit PNG), got {bad}")
        return value

    @field_validator("palette", "ignore_color")
    @classmethod
    def _colours(cls, value: Any) -> Any:
        colours = value.values() if isinstance(value, dict) else [value] if value is not None else []
        for colour in colours:
            if not all(0 <= c <= 255 for c in colour):
                raise ValueError(f"colour {list(colour)} must have three values 0..255")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        problems = _inconsistencies(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names, index 0 first (binary: background, then foreground)."""
        if self.masks == "rgb":
            return tuple(self.palette or {})
        return self.classes or ("background", "foreground")


def _inconsistencies(cfg: DataConfig) -> list[str]:
    problems = []
    if cfg.masks == "binary":
        if cfg.classes is not None and len(cfg.classes) != 2:
            problems.append(f"classes: binary masks have exactly 2 classes (background, foreground), got {len(cfg.classes)}")
        both = sorted(set(cfg.background_values) & set(cfg.foreground_values))
        if both:
            problems.append(f"foreground_values: {both} are also in background_values; a value belongs to one class")
        if cfg.ignore_index is not None and cfg.ignore_index in (*cfg.background_values, *cfg.foreground_values):
            problems.append(f"ignore_index: {cfg.ignore_index} is also a background or foreground value")
    if cfg.masks == "index":
        if cfg.classes is None:
            problems.append("classes: index masks need the class names, index 0 first, e.g. classes: [background, package]")
        elif cfg.ignore_index is not None and cfg.ignore_index < len(cfg.classes):
            problems.append(
                f"ignore_index: {cfg.ignore_index} is the index of class {cfg.classes[cfg.ignore_index]!r}; "
                f"use a value >= {len(cfg.classes)} (255 is usual)"
            )
    if cfg.masks == "rgb":
        if not cfg.palette or len(cfg.palette) < 2:
            problems.append("palette: rgb masks need a palette of at least 2 classes, e.g. palette: {background: [0, 0, 0], package: [255, 0, 0]}")
        else:
            colours = [tuple(c) for c in cfg.palette.values()]
            if len(set(colours)) != len(colours):
                problems.append("palette: two classes share a colour; every class needs its own")
            if cfg.ignore_color is not None and tuple(cfg.ignore_color) in colours:
                problems.append(f"ignore_color: {list(cfg.ignore_color)} is also a class colour in palette")
            if cfg.classes is not None and tuple(cfg.classes) != tuple(cfg.palette):
                problems.append("classes: with rgb masks the class names are the palette's keys; drop classes")
        if cfg.ignore_index is not None:
            problems.append("ignore_index: rgb masks mark ignored pixels with ignore_color: [R, G, B]")
    elif cfg.palette is not None or cfg.ignore_color is not None:
        problems.append(f"palette / ignore_color only apply to masks: rgb (masks is {cfg.masks!r})")
    names = cfg.class_names
    if len(set(names)) != len(names):
        problems.append(f"classes: names must be unique, got {list(names)}")
    if len(names) > MAX_CLASSES:
        problems.append(f"classes: at most {MAX_CLASSES} classes are supported, got {len(names)}")
    if cfg.synthetic is not None:
        expected = "binary" if cfg.synthetic.classes == 2 else "index"
        if cfg.masks != expected:
            problems.append(f"masks: the synthetic data set with {cfg.synthetic.classes} classes writes {expected} masks, not {cfg.masks}")
        if cfg.masks != "rgb" and len(names) != cfg.synthetic.classes:
            problems.append(f"classes: the synthetic data set has {cfg.synthetic.classes} classes, got {len(names)} names")
    return problems
