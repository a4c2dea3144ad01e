"""Finding the images and masks of a data set, pairing them by file stem and splitting them."""

from __future__ import annotations

import os

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import DataConfig
from ._io import IMAGE_SUFFIXES
from .._paths import path_kind, shown

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image and its mask, paired by file stem."""

    stem: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class Problem:
    """Something wrong with a data set: which file, what, and how to fix it."""

    file: str
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __post_init__(self) -> None:
        # File names need not be UTF-8: show their odd bytes as \xNN, so that printing never fails.
        for name in ("file", "message", "fix"):
            object.__setattr__(self, name, shown(getattr(self, name)))

    def __str__(self) -> str:
        return f"{self.file}: {self.message} ({self.fix})"


@dataclass(frozen=True)
class Layout:
    """The samples of each split, and the problems met while finding them."""

    kind: Literal["split", "single"] | None
    splits: dict[str, tuple[Sample, ...]]
    problems: tuple[Problem, ...] = field(default=())
    missing: frozenset[str] = frozenset()  # splits whose folders are missing (already reported)


def discover(cfg: DataConfig) -> Layout:
    """Find and pair the files of the data set ``cfg`` describes; missing folders are problems, not exceptions."""
    root = cfg.root
    empty = {name: () for name in SPLITS}
    if not root.is_dir():
        kind = path_kind(root)
        if kind == "does not exist":
            fix = "check data.root, or add a `synthetic:` section (or run `optiseg data synth`) to generate a data set there"
        else:
            fix = "point data.root at the folder that holds the data set" + (" (fix or remove the link)" if "symlink" in kind else "")
        return Layout(None, empty, (Problem(str(root), f"the data folder {_not_a_folder(kind)}", fix),))
    unlistable = _unlistable(root)
    if unlistable:
        return Layout(None, empty, (unlistable,))
    kind = _layout_kind(cfg)
    if kind is None:
        fix = (
            f"put the files in {{train,val,test}}/{cfg.images_dir} + {{train,val,test}}/{cfg.masks_dir} (split layout), "
            f"or in {cfg.images_dir}/ + {cfg.masks_dir}/ (single layout, split by `split`)"
        )
        return Layout(None, empty, (Problem(str(root), "neither split folders nor an images/masks pair found", fix),))
    problems: list[Problem] = []
    missing = set()
    if kind == "split":
        splits = {}
        for name in SPLITS:
            samples, found = _pair_folder(root / name, cfg)
            splits[name] = samples
            problems += found
            if not (root / name / cfg.images_dir).is_dir() or not (root / name / cfg.masks_dir).is_dir():
                missing.add(name)
        problems += _shared_stems(splits)
    else:
        samples, problems = _pair_folder(root, cfg)
        splits = split_samples(samples, cfg.split, cfg.split_seed)
        if problems and not samples:
            missing.update(SPLITS)
    return Layout(kind, splits, tuple(problems), frozenset(missing))


def split_samples(samples: tuple[Sample, ...], fractions: tuple[float, float, float], seed: int) -> dict[str, tuple[Sample, ...]]:
    """Shuffle ``samples`` with ``seed`` and cut them by ``fractions`` (train gets what rounding leaves)."""
    ordered = sorted(samples, key=lambda s: s.stem)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = round(len(ordered) * fractions[1])
    n_test = round(len(ordered) * fractions[2])
    n_train = len(ordered) - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(ordered))}
    return {
        name: tuple(sorted((ordered[i] for i in order[start:stop]), key=lambda s: s.stem))
        for name, (start, stop) in bounds.items()
    }


def _layout_kind(cfg: DataConfig) -> Literal["split", "single"] | None:
    if cfg.layout != "auto":
        return cfg.layout
    if any((cfg.root / name).is_dir() or (cfg.root / name).is_symlink() for name in SPLITS):
        return "split"
    if any((cfg.root / d).is_dir() or (cfg.root / d).is_symlink() for d in (cfg.images_dir, cfg.masks_dir)):
        return "single"
    return None


def _pair_folder(folder: Path, cfg: DataConfig) -> tuple[tuple[Sample, ...], list[Problem]]:
    image_dir, mask_dir = folder / cfg.images_dir, folder / cfg.masks_dir
    if not folder.is_dir():
        kind = path_kind(folder)
        if kind == "does not exist":
            fix = f"create {folder.name}/{cfg.images_dir} and {folder.name}/{cfg.masks_dir}, or use `layout: single` to split one folder"
            return (), [Problem(str(folder), "the split folder is missing", fix)]
        return (), [Problem(str(folder), f"the split folder {_not_a_folder(kind)}", f"make {folder} the folder of the {folder.name} split")]
    problems = [
        Problem(str(d), "the folder is missing", f"create it and put the {what} there")
        if path_kind(d) == "does not exist"
        else Problem(str(d), f"the {what} folder {_not_a_folder(path_kind(d))}", f"make {d} a folder holding the {what}")
        for d, what in ((image_dir, "images"), (mask_dir, "masks"))
        if not d.is_dir()
    ]
    problems += [p for p in (_unlistable(image_dir), _unlistable(mask_dir)) if p and not problems]
    if problems:
        return (), problems
    images, found, ambiguous = _by_stem(image_dir)
    problems += found
    masks, found, ambiguous_masks = _by_stem(mask_dir)
    problems += found
    ambiguous |= ambiguous_masks  # already reported once, naming every file: no second, misleading problem
    for stem in sorted(images.keys() - masks.keys() - ambiguous):
        problems.append(Problem(str(images[stem]), "image without a mask", f"add {mask_dir}/{stem}.png or remove the image"))
    for stem in sorted(masks.keys() - images.keys() - ambiguous):
        problems.append(Problem(str(masks[stem]), "mask without an image", f"add the image {image_dir}/{stem}.* or remove the mask"))
    samples = tuple(Sample(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys()))
    return samples, problems


def _not_a_folder(kind: str) -> str:
    """``kind`` (from :func:`path_kind`) completed for a path that should be a folder."""
    return f"{kind}, not a folder" if kind.startswith("is ") else kind


def _unlistable(folder: Path) -> Problem | None:
    """A problem when the files of ``folder`` cannot be listed (no read or search permission, I/O error)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                entry.is_dir()  # needs search (x) permission on the folder
                break
    except OSError as exc:
        return Problem(str(folder), f"the folder cannot be listed ({exc.strerror or exc})",
                       f"give your user read and search permission on it (chmod -R u+rX {folder})")
    return None


def _by_stem(folder: Path) -> tuple[dict[str, Path], list[Problem], set[str]]:
    """The image files of ``folder`` by stem, the problems, and the stems held by several files.

    Only regular files are ever opened: a FIFO, socket, device or broken link among them is an
    error naming it (opening a FIFO would block forever).
    """
    by_stem: dict[str, list[Path]] = defaultdict(list)
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_dir() and not path.is_file():
            kind = path_kind(path)
            problems.append(Problem(str(path), f"{kind}, not an image file" if kind.startswith("is ") else kind,
                                    "remove it from the data folder (only regular files are read)"))
        elif path.is_dir():
            problems.append(Problem(str(path), "sub-folder is not searched", "move its files up a level if they belong to the data set", "warning"))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(
                Problem(str(path), f"not an image ({path.suffix or 'no extension'}); ignored", f"image files end in {', '.join(IMAGE_SUFFIXES)}", "warning")
            )
        else:
            by_stem[path.stem].append(path)
    unique, ambiguous = {}, set()
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = " and ".join(p.name for p in paths)
            problems.append(Problem(str(folder / stem), f"{names} share the stem {stem!r}: which one is the sample is ambiguous",
                                    "keep one of them (or rename one if they are different images)"))
            ambiguous.add(stem)
        else:
            unique[stem] = paths[0]
    return unique, problems, ambiguous


def _shared_stems(splits: dict[str, tuple[Sample, ...]]) -> list[Problem]:
    seen: dict[str, str] = {}
    problems = []
    for name in SPLITS:
        for sample in splits[name]:
            if sample.stem in seen:
                problems.append(
                    Problem(
                        str(sample.image),
                        f"the stem {sample.stem!r} is also in {seen[sample.stem]}: the same image in two splits inflates the scores",
                        "keep each image in one split only (rename it if it is a different image)",
                        "warning",
                    )
                )
            else:
                seen[sample.stem] = name
    return problems
