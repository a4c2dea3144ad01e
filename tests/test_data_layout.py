"""Data set layouts, seeded splits, mask decoding and the `data:` config section."""

from __future__ import annotations

import numpy as np
import pytest

from _datasets import box_mask, data_config, split_dataset, write_pair, write_study
from optiseg.config import load_config
from optiseg.data import IGNORE, MaskCodec, MaskValueError, check_dataset, load_dataset, read_mask
from optiseg.errors import ConfigError


def single_folder(root, n=20):
    for index in range(n):
        write_pair(root, f"img{index:02d}", box_mask(seed=index))
    return root


def stems(report):
    return {name: [s.stem for s in samples] for name, samples in report.splits.items()}


def test_single_folder_is_split_75_10_15_by_a_seeded_shuffle(tmp_path):
    single_folder(tmp_path)
    first = stems(check_dataset(data_config(tmp_path)))
    assert {k: len(v) for k, v in first.items()} == {"train": 15, "val": 2, "test": 3}
    assert sorted(sum(first.values(), [])) == [f"img{i:02d}" for i in range(20)]  # disjoint and complete
    assert stems(check_dataset(data_config(tmp_path))) == first  # same seed, same split
    assert stems(check_dataset(data_config(tmp_path, split_seed=1))) != first
    other = stems(check_dataset(data_config(tmp_path, split=[0.5, 0.25, 0.25])))
    assert {k: len(v) for k, v in other.items()} == {"train": 10, "val": 5, "test": 5}


def test_layout_auto_detects_split_folders_and_can_be_forced(tmp_path):
    split_dataset(tmp_path)
    assert check_dataset(data_config(tmp_path)).layout == "split"
    forced = check_dataset(data_config(tmp_path, layout="single"))
    assert not forced.ok and any(str(tmp_path / "images") == p.file for p in forced.errors)


def test_custom_folder_names(tmp_path):
    split_dataset(tmp_path)
    for split in ("train", "val", "test"):
        (tmp_path / split / "masks").rename(tmp_path / split / "labels")
    assert check_dataset(data_config(tmp_path, masks_dir="labels")).ok


@pytest.mark.parametrize(
    ("stored", "fields", "expected"),
    [
        ([0, 255], {}, [0, 1]),
        ([0, 1], {}, [0, 1]),
        ([10, 200], {"background_values": [10], "foreground_values": [200]}, [0, 1]),
        ([0, 255, 128], {"ignore_index": 128}, [0, 1, IGNORE]),
        ([0, 1, 2, 255], {"masks": "index", "classes": ["a", "b", "c"], "ignore_index": 255}, [0, 1, 2, IGNORE]),
    ],
)
def test_single_channel_masks_decode_to_class_indices(tmp_path, stored, fields, expected):
    codec = MaskCodec.from_config(data_config(tmp_path, **fields))
    raw = np.array([stored], dtype=np.uint8)
    assert codec.decode(raw).tolist() == [expected]


def test_sixteen_bit_index_masks(tmp_path):
    codec = MaskCodec.from_config(data_config(tmp_path, masks="index", classes=["a", "b"], ignore_index=65535))
    assert codec.decode(np.array([[0, 1, 65535]], np.uint16)).tolist() == [[0, 1, IGNORE]]
    with pytest.raises(MaskValueError, match="300"):
        codec.decode(np.array([[0, 300]], np.uint16))


def test_rgb_masks_decode_with_the_palette(tmp_path):
    cfg = data_config(tmp_path, masks="rgb", palette={"bg": [0, 0, 0], "box": [255, 0, 0], "tag": [0, 0, 255]}, ignore_color=[255, 255, 255])
    codec = MaskCodec.from_config(cfg)
    raw = np.array([[[0, 0, 0], [255, 0, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    assert codec.decode(raw).tolist() == [[0, 1, 2, IGNORE]]
    assert cfg.class_names == ("bg", "box", "tag")
    with pytest.raises(MaskValueError, match=r"\[1, 2, 3\]"):
        codec.decode(np.array([[[1, 2, 3]]], np.uint8))


def test_colour_mask_where_single_channel_is_declared(tmp_path):
    codec = MaskCodec.from_config(data_config(tmp_path))
    with pytest.raises(MaskValueError) as caught:
        codec.decode(np.zeros((2, 2, 3), np.uint8))
    assert "masks: rgb" in caught.value.fix


def test_grey_masks_saved_as_rgb_and_palette_pngs_are_read_as_values(tmp_path):
    mask = box_mask(value=255)
    _, path = write_pair(tmp_path, "grey", np.dstack([mask] * 3))
    assert read_mask(path).tolist() == mask.tolist()
    pil = pytest.importorskip("PIL.Image")
    indices = box_mask(value=2)
    palette_image = pil.fromarray(indices, mode="P")
    palette_image.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9))
    palette_image.save(tmp_path / "palette.png")
    assert read_mask(tmp_path / "palette.png").tolist() == indices.tolist()


def test_dataset_properties(tmp_path):
    split_dataset(tmp_path)
    binary = load_dataset(data_config(tmp_path))
    assert (binary.num_classes, binary.class_names, binary.ignore_index) == (1, ("background", "foreground"), None)
    indexed = load_dataset(data_config(tmp_path, masks="index", classes=["bg", "fg"], ignore_index=255))
    assert (indexed.num_classes, indexed.ignore_index) == (2, IGNORE)
    assert binary.fingerprint() == load_dataset(data_config(tmp_path)).fingerprint()
    write_pair(tmp_path / "train", "extra", box_mask())
    assert binary.fingerprint() != load_dataset(data_config(tmp_path)).fingerprint()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"root": "d", "masks": "index"}, "classes"),
        ({"root": "d", "split": [0.8, 0.1, 0.2]}, "data.split"),
        ({"root": "d", "masks": "rgb", "palette": {"a": [0, 0, 0], "b": [0, 0, 0]}}, "palette"),
        ({"root": "d", "masks": "rgb", "palette": {"a": [0, 0, 0], "b": [300, 0, 0]}}, "data.palette"),
        ({"root": "d", "masks": "index", "classes": ["a", "b"], "ignore_index": 1}, "ignore_index"),
        ({"root": "d", "foreground_values": [0]}, "foreground_values"),
        ({"root": "d", "synthetic": {"classes": 3}, "masks": "binary"}, "masks"),
        ({"root": "d", "synthetic": {"classes": 9}}, "data.synthetic.classes"),
        ({"root": "d", "mask": "binary"}, "did you mean 'masks'"),
    ],
)
def test_config_errors_name_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError) as caught:
        load_config(write_study(tmp_path / "study.yaml", data))
    assert key in str(caught.value)
    assert str(tmp_path / "study.yaml") in str(caught.value)


def test_synthetic_section_sets_mask_kind_and_classes(tmp_path):
    cfg = load_config(write_study(tmp_path / "s.yaml", {"root": "d", "synthetic": {"classes": 3}})).config.data
    assert cfg.masks == "index" and cfg.class_names == ("background", "package", "label")
    assert cfg.root == tmp_path / "d"
