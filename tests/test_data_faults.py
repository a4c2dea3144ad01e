"""Bad data a new user meets: special files, odd data roots, ambiguous stems, an output that is a file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from optiseg.cli import main

pytestmark = pytest.mark.timeout(120)  # a FIFO that is opened would hang: fail instead


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    from optiseg.data import generate_synthetic

    root = tmp_path_factory.mktemp("data") / "set"
    generate_synthetic(root, 12, 2, seed=0, size=(96, 64))
    return root


def data_copy(clean_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(clean_data, root)
    return root


def check(capsys, tmp_path: Path, root: Path) -> tuple[int, str]:
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{root: {str(root)!r}}}\n")
    code = main(["data", "check", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def first_split_images(root: Path) -> Path:
    return next(p for p in sorted(root.rglob("images")) if p.is_dir())


@pytest.mark.parametrize("kind", ["fifo", "socket", "broken-link"])
def test_special_files_among_the_images_are_named_never_opened(clean_data, tmp_path, capsys, kind):
    import socket

    root = data_copy(clean_data, tmp_path)
    special = first_split_images(root) / "odd.png"
    if kind == "fifo":
        os.mkfifo(special)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    else:
        special.symlink_to(tmp_path / "nowhere.png")
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and "odd.png" in out and "not an image file" in out and "Traceback" not in out
    assert {"fifo": "FIFO", "socket": "socket", "broken-link": "broken symlink"}[kind] in out


def test_a_data_root_that_is_a_symlink_loop_says_so(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    code, out = check(capsys, tmp_path, loop)
    assert code == 2 and "symlink loop" in out and "does not exist" not in out


def test_two_images_with_one_stem_are_one_problem_naming_both(clean_data, tmp_path, capsys):
    root = data_copy(clean_data, tmp_path)
    images = first_split_images(root)
    image = next(p for p in sorted(images.iterdir()) if p.is_file())
    shutil.copyfile(image, image.with_suffix(".png" if image.suffix != ".png" else ".jpg"))
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and out.count(f"share the stem {image.stem!r}") == 1
    assert image.name in out and "mask without an image" not in out


def test_train_into_an_existing_file_is_one_line(clean_data, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine")
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{root: {str(clean_data)!r}}}\nresolution: 64\n")
    code = main(["train", str(config), "-o", str(target), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and str(target) in err and "is a file" in err and target.read_text() == "mine"
