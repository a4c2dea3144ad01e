"""The loading pipeline (cache, resizing, augmentation, batches) and the synthetic data generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _datasets import data_config, synthetic
from optiseg.config import AugmentConfig
from optiseg.data import (
    IGNORE,
    DatasetCache,
    build_train_transform,
    epoch_batches,
    generate_synthetic,
    load_dataset,
    read_image,
    read_mask,
    resize_mask,
    train_source_sizes,
)
from optiseg.errors import UsageError


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    root = synthetic(tmp_path_factory.mktemp("synth") / "data", n=16, classes=3)
    return load_dataset(data_config(root, masks="index", classes=["background", "package", "label"]))


def test_cache_resizes_once_and_keeps_class_indices(three_class):
    cache = DatasetCache(three_class, budget_mb=64)
    train = cache.resized("train", (64, 96))
    assert train.in_memory and len(train) == len(three_class.train)
    image, mask = train[0]
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 1, 2}  # nearest neighbour: no blended values
    assert cache.resized("train", (64, 96)) is train
    assert cache.stats().hits == 1 and cache.stats().misses == 1
    originals = cache.original_masks("val")
    assert originals[0].shape == (64, 96)  # the stored size: width 96, height 64
    assert np.array_equal(originals[0], three_class.read_mask(three_class.val[0]))


@pytest.mark.parametrize("source, size", [((540, 240), (384, 96)), ((216, 250), (192, 96)), ((96, 64), (160, 128))])
def test_a_resized_mask_sits_where_the_resized_image_does(source, size):
    """Each pixel of a resized mask is the source pixel under its centre (the centre the image's area averaging
    uses), in both directions, shrinking and enlarging: no shift of the labels against the image."""
    for axis in (0, 1):
        index = np.broadcast_to(np.arange(source[axis], dtype=np.uint16).reshape((-1, 1) if axis == 0 else (1, -1)), source)
        resized = resize_mask(index.astype(np.uint16), size).astype(float)
        centres = (np.arange(size[axis]) + 0.5) * source[axis] / size[axis] - 0.5
        along = resized[:, 0] if axis == 0 else resized[0]
        assert np.abs(along - centres).max() <= 0.5 + 1e-6 and abs((along - centres).mean()) < 0.1


def test_cache_within_budget_evicts_and_decodes_lazily_when_too_big(three_class):
    one_entry_mb = len(three_class.train) * 64 * 64 * 4 / 2**20
    cache = DatasetCache(three_class, budget_mb=one_entry_mb * 1.5)
    first = cache.resized("train", (64, 64))
    cache.resized("train", (64, 48))  # does not fit beside the first: the first is evicted
    assert cache.stats().entries == 1 and cache.stats().used_mb <= one_entry_mb * 1.5
    lazy = DatasetCache(three_class, budget_mb=0.01).resized("train", (64, 64))
    assert not lazy.in_memory
    assert all(np.array_equal(a, b) for a, b in zip(lazy[2], first[2]))


def test_augmentation_is_seeded_and_keeps_masks_valid(three_class):
    augment = AugmentConfig(crop="scale", rotate=30, affine=1.0)
    source = DatasetCache(three_class).resized("train", *train_source_sizes((64, 64), augment))
    assert source.size == (80, 80)

    def epoch(seed):
        transform = build_train_transform((64, 64), augment)
        transform.reseed(seed)
        return list(epoch_batches(source, transform, 4, np.random.default_rng(seed)))

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert len(first) == len(three_class.train) // 4  # incomplete batch dropped
    images, masks = first[0]
    assert images.shape == (4, 64, 64, 3) and masks.shape == (4, 64, 64)
    assert set(np.unique(np.concatenate([m for _, m in first]))) <= {0, 1, 2, IGNORE}
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])


def test_label_scale_keeps_finer_masks_for_the_loss(three_class):
    augment = AugmentConfig(crop="random", crop_margin=1.25)
    assert train_source_sizes((32, 48), augment, label_scale=2) == ((40, 60), (80, 120))
    source = DatasetCache(three_class).resized("train", *train_source_sizes((32, 48), augment, 2))
    assert source[0][0].shape == (40, 60, 3) and source[0][1].shape == (80, 120)
    transform = build_train_transform((32, 48), augment, label_scale=2)
    transform.reseed(0)
    images, masks = next(epoch_batches(source, transform, 2, np.random.default_rng(0)))
    assert images.shape == (2, 32, 48, 3) and masks.shape == (2, 64, 96)


@pytest.mark.parametrize("label_scale", [1, 2, 3])
@pytest.mark.parametrize("crop", ["none", "random", "scale"])
def test_each_image_pixel_lands_on_its_mask_block(crop, label_scale):
    """Every geometric step moves the image (input size) and the mask (label_scale x) alike, to a fraction of a pixel:
    an image whose pixels hold their own centre (in mask pixels) and masks holding each pixel's column and row come
    out with every image pixel holding the mean centre of the label_scale x label_scale mask block under it."""
    scale, resolution = label_scale, (21, 33)
    augment = AugmentConfig(crop=crop, affine=0.5, rotate=25, hflip=0.5, rgb_shift=0, brightness=0, contrast=0)
    (image_h, image_w), (mask_h, mask_w) = train_source_sizes(resolution, augment, scale)
    assert (mask_h, mask_w) == (image_h * scale, image_w * scale) and mask_w < IGNORE
    ys, xs = np.mgrid[0:image_h, 0:image_w].astype(np.float32)
    image = np.stack([(xs + 0.5) * scale, (ys + 0.5) * scale, np.zeros_like(xs)], axis=-1)
    columns = np.broadcast_to(np.arange(mask_w, dtype=np.uint8), (mask_h, mask_w)).copy()
    rows = np.broadcast_to(np.arange(mask_h, dtype=np.uint8)[:, None], (mask_h, mask_w)).copy()
    transform = build_train_transform(resolution, augment, label_scale=scale)
    flipped = rotated = 0
    errors = ([], [])
    for seed in range(16):
        transform.reseed(seed)
        moved, moved_columns = transform(image, columns)
        transform.reseed(seed)
        _, moved_rows = transform(image, rows)
        assert moved.shape == (*resolution, 3) and moved_columns.shape == (resolution[0] * scale, resolution[1] * scale)
        blocks = [m.reshape(resolution[0], scale, resolution[1], scale).transpose(0, 2, 1, 3).reshape(*resolution, -1)
                  for m in (moved_columns, moved_rows)]
        inside = np.pad((blocks[0] != IGNORE).all(axis=-1) & (blocks[1] != IGNORE).all(axis=-1), 1)
        valid = np.ones(resolution, bool)  # away from the source's edge, where the image blends in its border
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                valid &= inside[dy : dy + resolution[0], dx : dx + resolution[1]]
        assert valid.mean() > 0.3
        for channel, block in enumerate(blocks):  # nearest neighbour rounds each mask pixel by up to half a pixel
            error = (moved[..., channel] - (block.mean(axis=-1) + 0.5))[valid]
            assert np.abs(error).max() < 0.56, (seed, channel, np.abs(error).max())
            errors[channel].append(error)
        flipped += bool(moved[valid.any(axis=1)][:, :, 0].mean(axis=0)[0] > moved[valid.any(axis=1)][:, :, 0].mean(axis=0)[-1])
        rotated += any(np.ptp(moved[r, valid[r], 1]) > 0.5 for r in range(resolution[0]) if valid[r].sum() > 1)
    assert all(abs(np.concatenate(e).mean()) < 0.05 for e in errors)  # no shift hides in the rounding
    assert flipped and rotated  # the seeds exercised both a flip and a rotation


def test_batches_keep_the_incomplete_batch_when_asked(three_class):
    source = DatasetCache(three_class).resized("val", (64, 64))
    sizes = [len(b[0]) for b in epoch_batches(source, None, 4, np.random.default_rng(0), drop_last=False)]
    assert sum(sizes) == len(three_class.val)


def test_synthetic_data_set_layout_and_masks(tmp_path):
    root = synthetic(tmp_path / "bin", n=20, size=(96, 64))
    counts = {s: len(list((root / s / "images").glob("*.jpg"))) for s in ("train", "val", "test")}
    assert counts == {"train": 15, "val": 2, "test": 3}
    mask_path = next((root / "train" / "masks").glob("*.png"))
    mask = read_mask(mask_path)
    assert mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 255}
    assert read_image(root / "train" / "images" / f"{mask_path.stem}.jpg").shape == (64, 96, 3)
    assert json.loads((root / "optiseg-synthetic.json").read_text())["n"] == 20
    # Every image shows a package.
    masks = [read_mask(p) for p in (root / "train" / "masks").glob("*.png")]
    assert all((m == 255).mean() > 0.01 for m in masks)


def test_synthetic_data_is_reproducible_and_multi_class(tmp_path):
    a = synthetic(tmp_path / "a", n=8, classes=6, seed=3)
    b = synthetic(tmp_path / "b", n=8, classes=6, seed=3)
    for path in (a / "train" / "masks").glob("*.png"):
        assert np.array_equal(read_mask(path), read_mask(b / "train" / "masks" / path.name))
    values = set()
    for path in a.glob("*/masks/*.png"):
        values |= set(np.unique(read_mask(path)).tolist())
    assert values <= set(range(6)) and {0, 1, 2, 5} <= values


def test_synthetic_refuses_to_overwrite_and_bad_arguments(tmp_path):
    synthetic(tmp_path / "d", n=4)
    with pytest.raises(UsageError, match="already exists"):
        generate_synthetic(tmp_path / "d", 4)
    with pytest.raises(UsageError, match="--classes 9"):
        generate_synthetic(tmp_path / "e", 4, classes=9)
    assert not (tmp_path / "e").exists()


def test_load_dataset_generates_the_synthetic_data_once(tmp_path):
    cfg = data_config(tmp_path / "gen", synthetic={"n": 8, "width": 64, "height": 64})
    dataset = load_dataset(cfg)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 8
    mtime = (tmp_path / "gen" / "optiseg-synthetic.json").stat().st_mtime
    load_dataset(cfg)
    assert (tmp_path / "gen" / "optiseg-synthetic.json").stat().st_mtime == mtime
    with pytest.raises(Exception, match="other settings: n: 8"):
        load_dataset(data_config(tmp_path / "gen", synthetic={"n": 9, "width": 64, "height": 64}))


def test_data_synth_command(tmp_path, cli):
    result = cli("data", "synth", str(tmp_path / "s"), "--n", "6", "--classes", "3", "--size", "80x64", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == ["background", "package", "label"] and sum(report["splits"].values()) == 6
    bad = cli("data", "synth", str(tmp_path / "t"), "--size", "80by64")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --size '80by64' is invalid")
