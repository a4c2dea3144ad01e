"""A checked data set: its samples per split, its classes and how to decode its masks."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ._io import UnreadableFile, read_image, read_mask
from ._layout import Problem, Sample
from ._masks import IGNORE, MaskCodec, MaskValueError
from .._paths import shown
from .check import check_dataset, summarize_problems
from .synth import generate_synthetic, read_spec


@dataclass(frozen=True)
class Dataset:
    """Samples of the train, val and test splits of a data set that passed :func:`check_dataset`.

    ``num_classes`` is the number of logits a network needs: 1 for binary masks
    (one sigmoid logit), C for C-class masks (softmax). Decoded masks hold class
    indices and ``ignore_index`` (255) for ignored pixels; ``ignore_index`` is
    None when the config declares no ignored value.
    """

    root: Path
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]
    class_names: tuple[str, ...]
    codec: MaskCodec
    warnings: tuple[Problem, ...] = ()

    @property
    def binary(self) -> bool:
        return self.codec.kind == "binary"

    @property
    def num_classes(self) -> int:
        return 1 if self.binary else len(self.class_names)

    @property
    def ignore_index(self) -> int | None:
        return IGNORE if self.codec.has_ignore else None

    def split(self, name: str) -> tuple[Sample, ...]:
        """The samples of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)

    def read_image(self, sample: Sample) -> np.ndarray:
        """The sample's image, RGB uint8 (H, W, 3); :class:`DataError` if it changed since the check and is unreadable."""
        try:
            return read_image(sample.image)
        except UnreadableFile as exc:
            raise _changed(sample.image, f"unreadable image: {exc}") from None

    def read_mask(self, sample: Sample) -> np.ndarray:
        """The sample's mask as class indices, uint8 (H, W), 255 = ignored; :class:`DataError` as for images."""
        try:
            return self.codec.decode(read_mask(sample.mask))
        except UnreadableFile as exc:
            raise _changed(sample.mask, f"unreadable mask: {exc}") from None
        except MaskValueError as exc:
            raise _changed(sample.mask, str(exc)) from None

    def fingerprint(self) -> str:
        """A short hash of the files (names and sizes) of each split and of the classes.

        Moving the data set keeps it; adding, removing, replacing or re-splitting files changes it.
        """
        digest = hashlib.sha256()
        for name in ("train", "val", "test"):
            digest.update(name.encode())
            for sample in self.split(name):
                for path in (sample.image, sample.mask):
                    try:
                        size = path.stat().st_size
                    except OSError as exc:
                        raise _changed(path, f"cannot be read ({exc.strerror or exc})") from None
                    digest.update(f"{path.name}\0{size}\0".encode("utf-8", "surrogateescape"))
        digest.update("\0".join(self.class_names).encode())
        return digest.hexdigest()[:16]


def _changed(path: Path, what: str) -> DataError:
    return DataError(
        f"{shown(str(path))}: {what} (it passed the data check, so it changed since)",
        hint="restore the file, or run `optiseg data check CONFIG` again to find every problem",
    )


def load_dataset(cfg: DataConfig) -> Dataset:
    """Check the data set ``cfg`` describes and return it; :class:`DataError` lists what is wrong.

    With ``cfg.synthetic`` set and no folder at ``cfg.root``, the synthetic data set is generated there first.
    """
    prepare_synthetic(cfg)
    report = check_dataset(cfg)
    if not report.ok:
        errors = report.errors
        raise DataError(
            f"data set {cfg.root} has {len(errors)} problem(s): {summarize_problems(errors)}",
            hint="run `optiseg data check CONFIG` to list every problem with its fix",
        )
    return Dataset(
        root=cfg.root,
        train=report.splits["train"],
        val=report.splits["val"],
        test=report.splits["test"],
        class_names=report.class_names,
        codec=MaskCodec.from_config(cfg),
        warnings=report.warnings,
    )


def prepare_synthetic(cfg: DataConfig) -> bool:
    """Generate the synthetic data set ``cfg.synthetic`` describes at ``cfg.root`` if that folder does not exist.

    Returns True when it was generated now. A folder holding a synthetic data set made
    with other settings is a :class:`DataError` (it is never silently reused or replaced).
    """
    synthetic = cfg.synthetic
    if synthetic is None:
        return False
    if not os.path.lexists(cfg.root):  # a broken link or a loop is reported by the check, never written through
        generate_synthetic(cfg.root, synthetic.n, synthetic.classes, seed=synthetic.seed, size=(synthetic.width, synthetic.height))
        return True
    wanted = {"n": synthetic.n, "classes": synthetic.classes, "seed": synthetic.seed, "width": synthetic.width, "height": synthetic.height}
    found = read_spec(cfg.root)
    if found is not None and found.to_dict() != wanted:
        diff = ", ".join(f"{k}: {v} (config: {wanted[k]})" for k, v in found.to_dict().items() if wanted[k] != v)
        raise DataError(
            f"{cfg.root} holds a synthetic data set generated with other settings: {diff}",
            hint="delete that folder to generate it again, or point data.root at a new folder",
        )
    return False
