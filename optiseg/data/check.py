"""`optiseg data check`: every problem of a data set, each with its file and its fix.

The check decodes every image and mask once: unreadable files, size
mismatches and undeclared mask values are found before any training starts,
and nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ._io import UnreadableFile, read_image, read_mask
from ._layout import SPLITS, Layout, Problem, Sample, discover
from ._masks import IGNORE, MaskCodec, MaskValueError

MIN_TRAIN = 2  # BatchNorm needs batches of two
MIN_EVAL = 5  # fewer validation or test images make the scores noise


@dataclass(frozen=True)
class DataReport:
    """What `data check` found: the splits, the class balance and the problems."""

    root: Path
    layout: str | None
    class_names: tuple[str, ...]
    splits: dict[str, tuple[Sample, ...]]
    class_pixels: dict[str, tuple[int, ...]]  # per split: pixels of each class (ignored pixels excluded)
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings do not stop training)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (used by `optiseg data check --json`)."""
        return {
            "root": str(self.root),
            "ok": self.ok,
            "layout": self.layout,
            "classes": list(self.class_names),
            "splits": {name: len(samples) for name, samples in self.splits.items()},
            "class_pixels": {name: list(counts) for name, counts in self.class_pixels.items()},
            "problems": [
                {"severity": p.severity, "file": p.file, "message": p.message, "fix": p.fix} for p in self.problems
            ],
        }


def check_dataset(cfg: DataConfig, workers: int = 2) -> DataReport:
    """Decode every file of the data set ``cfg`` describes and report every problem found."""
    codec = MaskCodec.from_config(cfg)
    layout = discover(cfg)
    problems = list(layout.problems)
    class_pixels = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decodes without holding the GIL
        for name in SPLITS:
            counts = np.zeros(codec.num_classes, dtype=np.int64)
            for sample_counts, sample_problems in pool.map(lambda s: _inspect_sample(s, codec), layout.splits[name]):
                counts += sample_counts
                problems += sample_problems
            class_pixels[name] = tuple(int(c) for c in counts)
    problems += _split_problems(cfg, layout)
    problems += _class_problems(cfg, layout, codec, class_pixels)
    return DataReport(
        root=cfg.root,
        layout=layout.kind,
        class_names=codec.class_names,
        splits=layout.splits,
        class_pixels=class_pixels,
        problems=tuple(problems),
    )


def _inspect_sample(sample: Sample, codec: MaskCodec) -> tuple[np.ndarray, list[Problem]]:
    counts = np.zeros(codec.num_classes, dtype=np.int64)
    problems = []
    image = mask = None
    try:
        image = read_image(sample.image)
    except UnreadableFile as exc:
        problems.append(Problem(str(sample.image), f"unreadable image: {exc}", "replace or remove the file (and its mask)"))
    try:
        mask = codec.decode(read_mask(sample.mask))
    except UnreadableFile as exc:
        problems.append(Problem(str(sample.mask), f"unreadable mask: {exc}", "replace or remove the file (and its image)"))
    except MaskValueError as exc:
        problems.append(Problem(str(sample.mask), str(exc), exc.fix))
    if image is not None and mask is not None:
        if image.shape[:2] != mask.shape:
            (ih, iw), (mh, mw) = image.shape[:2], mask.shape
            turned = " (turned by 90 degrees: check the image's EXIF orientation)" if (ih, iw) == (mw, mh) else ""
            problems.append(
                Problem(
                    str(sample.mask),
                    f"mask is {mw}x{mh} but its image {sample.image.name} is {iw}x{ih}{turned}",
                    "masks must have their image's width and height; re-export the mask at the image's size",
                )
            )
        else:
            counts = np.bincount(mask[mask != IGNORE].ravel(), minlength=codec.num_classes)[: codec.num_classes]
    return counts, problems


def _split_problems(cfg: DataConfig, layout: Layout) -> list[Problem]:
    if layout.kind is None:
        return []
    problems = []
    for name in SPLITS:
        if name in layout.missing:
            continue
        count = len(layout.splits[name])
        where = str(cfg.root / name) if layout.kind == "split" else f"{cfg.root} ({name} split)"
        minimum = MIN_TRAIN if name == "train" else 1
        if count < minimum:
            fix = "add images" + ("" if layout.kind == "split" else f" or change `split` (now {list(cfg.split)})")
            what = "is empty" if count == 0 else f"has {count} image(s); training needs at least {minimum}"
            problems.append(Problem(where, f"the {name} split {what}", fix))
        elif name != "train" and count < MIN_EVAL:
            problems.append(
                Problem(where, f"the {name} split has only {count} image(s): its scores will be noisy", f"give it at least {MIN_EVAL}", "warning")
            )
    return problems


def _class_problems(cfg: DataConfig, layout: Layout, codec: MaskCodec, class_pixels: dict[str, tuple[int, ...]]) -> list[Problem]:
    if not layout.splits["train"]:
        return []
    where = str(cfg.root / "train") if layout.kind == "split" else f"{cfg.root} (train split)"
    return [
        Problem(
            where,
            f"class {index} ({name!r}) appears in no training mask",
            "check the mask values declared in the config, or add images showing that class",
            "warning",
        )
        for index, (name, count) in enumerate(zip(codec.class_names, class_pixels["train"]))
        if count == 0
    ]


def summarize_problems(problems: Sequence[Problem], limit: int = 5) -> str:
    """The first ``limit`` problems on one line, and how many more there are."""
    shown = "; ".join(str(p) for p in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")
