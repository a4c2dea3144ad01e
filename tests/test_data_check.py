"""`data check`: every kind of broken data set is reported with its file and a fix; nothing is dropped silently."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from _datasets import box_mask, data_config, split_dataset, write_pair, write_study
from optiseg.data import check_dataset, load_dataset
from optiseg.errors import DataError


def errors_of(report):
    return [(p.file, p.message, p.fix) for p in report.errors]


def only_error(report, needle: str):
    matches = [p for p in report.errors if needle in p.message]
    assert len(matches) == 1, report.problems
    assert matches[0].fix
    return matches[0]


def test_valid_data_set_has_no_problems(tmp_path):
    report = check_dataset(data_config(split_dataset(tmp_path)))
    assert report.ok and report.problems == ()
    assert {k: len(v) for k, v in report.splits.items()} == {"train": 6, "val": 5, "test": 5}
    assert report.class_pixels["train"][1] > 0


def test_images_and_masks_pair_by_stem_whatever_their_extensions(tmp_path):
    split_dataset(tmp_path)
    write_pair(tmp_path / "train", "png_image", box_mask(), image_ext=".png", mask_ext=".bmp")
    report = check_dataset(data_config(tmp_path))
    assert report.ok
    assert "png_image" in {s.stem for s in report.splits["train"]}


def test_missing_data_folder(tmp_path):
    report = check_dataset(data_config(tmp_path / "nowhere"))
    problem = only_error(report, "does not exist")
    assert problem.file == str(tmp_path / "nowhere")
    assert "synthetic" in problem.fix


def test_missing_split_and_masks_folders(tmp_path):
    split_dataset(tmp_path)
    shutil.rmtree(tmp_path / "val")
    shutil.rmtree(tmp_path / "test" / "masks")
    report = check_dataset(data_config(tmp_path))
    assert only_error(report, "split folder is missing").file == str(tmp_path / "val")
    assert only_error(report, "the folder is missing").file == str(tmp_path / "test" / "masks")
    assert len(report.errors) == 2  # no "empty split" errors on top


def test_folder_without_any_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    problem = only_error(check_dataset(data_config(tmp_path)), "neither split folders")
    assert "images" in problem.fix


def test_unpaired_files_are_each_listed(tmp_path):
    split_dataset(tmp_path)
    (tmp_path / "train" / "masks" / "train00.png").unlink()
    (tmp_path / "val" / "images" / "val01.jpg").unlink()
    report = check_dataset(data_config(tmp_path))
    files = {p.file: p.message for p in report.errors}
    assert files == {
        str(tmp_path / "train" / "images" / "train00.jpg"): "image without a mask",
        str(tmp_path / "val" / "masks" / "val01.png"): "mask without an image",
    }


def test_unreadable_and_corrupt_files(tmp_path):
    split_dataset(tmp_path)
    image = tmp_path / "train" / "images" / "train01.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])  # truncated JPEG
    (tmp_path / "train" / "masks" / "train02.png").write_bytes(b"")  # empty file
    (tmp_path / "val" / "masks" / "val00.png").write_bytes(b"not a png at all" * 20)
    report = check_dataset(data_config(tmp_path))
    found = {p.file: p.message for p in report.errors}
    assert found[str(image)].startswith("unreadable image: the file is truncated")
    assert found[str(tmp_path / "train" / "masks" / "train02.png")] == "unreadable mask: the file is empty"
    assert "unreadable mask" in found[str(tmp_path / "val" / "masks" / "val00.png")]
    assert len(report.errors) == 3


def test_image_and_mask_of_different_sizes(tmp_path):
    split_dataset(tmp_path)
    write_pair(tmp_path / "train", "odd", box_mask(), image=np.zeros((30, 48, 3), np.uint8))
    problem = only_error(check_dataset(data_config(tmp_path)), "but its image")
    assert problem.file.endswith("odd.png")
    assert "48x40" in problem.message and "48x30" in problem.message


def test_binary_mask_values_outside_the_declared_set(tmp_path):
    split_dataset(tmp_path)
    mask = box_mask()
    mask[0, 0], mask[0, 1] = 128, 7
    write_pair(tmp_path / "test", "soft", mask)
    problem = only_error(check_dataset(data_config(tmp_path)), "not declared")
    assert problem.file == str(tmp_path / "test" / "masks" / "soft.png")
    assert "7, 128" in problem.message
    assert "foreground_values" in problem.fix
    # Declaring the values makes the same data set valid.
    assert check_dataset(data_config(tmp_path, foreground_values=[255, 128], background_values=[0, 7])).ok


def test_index_mask_values_beyond_the_classes(tmp_path):
    for split in ("train", "val", "test"):
        for index in range(3):
            write_pair(tmp_path / split, f"{split}{index}", box_mask(value=2, seed=index))
    mask = box_mask(value=1)
    mask[-1, -1] = 5
    write_pair(tmp_path / "val", "bad", mask)
    report = check_dataset(data_config(tmp_path, masks="index", classes=["bg", "box", "label"]))
    problem = only_error(report, "not declared")
    assert problem.file.endswith("bad.png") and "5" in problem.message and "classes" in problem.fix


def test_rgb_mask_colours_outside_the_palette(tmp_path):
    palette = {"background": [0, 0, 0], "package": [255, 0, 0]}
    for split in ("train", "val", "test"):
        for index in range(2):
            rgb = np.zeros((40, 48, 3), np.uint8)
            rgb[5:20, 5:20] = (255, 0, 0)
            if split == "test" and index == 1:
                rgb[30:, 30:] = (0, 255, 0)
            write_pair(tmp_path / split, f"{split}{index}", rgb, image=np.full((40, 48, 3), 90, np.uint8))
    report = check_dataset(data_config(tmp_path, masks="rgb", palette=palette))
    problem = only_error(report, "not in the palette")
    assert problem.file.endswith("test1.png") and "[0, 255, 0]" in problem.message


def test_empty_and_tiny_splits(tmp_path):
    split_dataset(tmp_path, counts=(1, 2, 0))
    (tmp_path / "test" / "images").mkdir(parents=True)
    (tmp_path / "test" / "masks").mkdir(parents=True)
    report = check_dataset(data_config(tmp_path))
    assert only_error(report, "train split has 1 image").file == str(tmp_path / "train")
    assert only_error(report, "test split is empty").file == str(tmp_path / "test")
    assert any("val split has only 2" in p.message for p in report.warnings)


def test_single_layout_too_small_to_split(tmp_path):
    for index in range(4):
        write_pair(tmp_path, f"img{index}", box_mask(seed=index))
    report = check_dataset(data_config(tmp_path))  # 4 images: 10 % and 15 % round to 0
    assert report.layout == "single"
    problem = only_error(report, "val split is empty")
    assert "split" in problem.fix


def test_duplicate_stems_and_stray_files(tmp_path):
    split_dataset(tmp_path)
    write_pair(tmp_path / "train", "train03", box_mask(), image_ext=".png")  # train03.jpg exists too
    (tmp_path / "train" / "images" / "notes.txt").write_text("hello")
    (tmp_path / "train" / "images" / ".DS_Store").write_bytes(b"\0")
    report = check_dataset(data_config(tmp_path))
    problem = only_error(report, "share the stem")
    assert "train03.jpg" in problem.message and "train03.png" in problem.message
    stray = [p for p in report.warnings if p.file.endswith("notes.txt")]
    assert stray and "ignored" in stray[0].message
    assert not any(".DS_Store" in p.file for p in report.problems)


def test_same_image_in_two_splits_is_a_warning(tmp_path):
    split_dataset(tmp_path)
    write_pair(tmp_path / "test", "train00", box_mask())
    report = check_dataset(data_config(tmp_path))
    assert report.ok
    assert any("also in train" in p.message for p in report.warnings)


def test_load_dataset_refuses_a_broken_data_set_listing_the_problems(tmp_path):
    split_dataset(tmp_path)
    (tmp_path / "train" / "masks" / "train00.png").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset(data_config(tmp_path))
    text = str(caught.value)
    assert "1 problem(s)" in text and "train00.jpg: image without a mask" in text and "optiseg data check" in text


def test_data_check_command(tmp_path, cli):
    split_dataset(tmp_path / "data")
    mask = box_mask()
    mask[3, 3] = 99
    cv2.imwrite(str(tmp_path / "data" / "val" / "masks" / "val02.png"), mask)
    config = write_study(tmp_path / "study.yaml", {"root": "data"})

    result = cli("data", "check", str(config), "--json")
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["splits"] == {"train": 6, "val": 5, "test": 5}
    assert [p["file"] for p in report["problems"]] == [str(tmp_path / "data" / "val" / "masks" / "val02.png")]

    table = cli("data", "check", str(config))
    assert table.returncode == 2
    assert "val02.png" in table.stdout and "99" in table.stdout and "Traceback" not in table.stderr
