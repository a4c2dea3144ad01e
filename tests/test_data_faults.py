"""Bad data a new user meets: special files, odd paths, ambiguous stems, odd names, files that change.

Every fault ends in one clear error that names the file (exit 2, no traceback), never in a hang:
each test has a timeout, so a FIFO that is opened fails the test instead of blocking the suite.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from optiseg.cli import main

pytestmark = pytest.mark.timeout(60)


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


def write_config(tmp_path: Path, root: Path, extra: str = "", data: str = "") -> Path:
    """A config with ``data.root`` = ``root``, ``data`` more keys of that section and ``extra`` top-level lines."""
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  root: {str(root)!r}\n{data}{extra}")
    return config


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def check(capsys, tmp_path: Path, root: Path) -> tuple[int, str]:
    return cli(capsys, "data", "check", str(write_config(tmp_path, root)))


def train_folder(root: Path, what: str = "images") -> Path:
    return root / "train" / what


def make_special(path: Path, kind: str, tmp_path: Path) -> list[socket.socket]:
    """Put a ``kind`` of non-regular file at ``path``; returns sockets to keep open."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return [server]
    elif kind == "character-device":
        path.symlink_to("/dev/zero")  # a real device node; reading it would never end
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "elsewhere")
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "broken-link":
        path.symlink_to(tmp_path / "nowhere.png")
    else:
        raise AssertionError(kind)
    return []


SPECIAL = {"fifo": "FIFO", "socket": "socket", "character-device": "character device",
           "link-to-fifo": "FIFO", "broken-link": "broken symlink"}


# ------------------------------------------------------------------ special files


@pytest.mark.parametrize("kind", sorted(SPECIAL))
@pytest.mark.parametrize("folder", ["images", "masks"])
def test_special_files_among_the_data_are_named_never_opened(clean_data, tmp_path, capsys, kind, folder):
    root = data_copy(clean_data, tmp_path)
    special = train_folder(root, folder) / "odd.png"
    keep = make_special(special, kind, tmp_path)
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and "Traceback" not in out
    assert f"{special}: is a {SPECIAL[kind]}" in out and "not an image file" in out
    del keep


@pytest.mark.parametrize("command", ["train", "search"])
def test_train_and_search_refuse_a_fifo_among_the_images_before_any_work(clean_data, tmp_path, capsys, command):
    root = data_copy(clean_data, tmp_path)
    special = train_folder(root) / "odd.jpg"
    os.mkfifo(special)
    config = write_config(tmp_path, root, f"resolution: 64\noutput: {str(tmp_path / 'out')!r}\n")
    argv = ["train", str(config), "--epochs", "1"] if command == "train" else ["search", str(config)]
    code, out = cli(capsys, *argv)
    assert code == 2 and str(special) in out and "FIFO" in out and "Traceback" not in out
    assert not (tmp_path / "out").exists()  # no study folder (search.log, optuna.db) and no run folder


@pytest.mark.parametrize("kind", ["fifo", "character-device", "socket"])
def test_the_readers_never_open_a_special_file(tmp_path, kind):
    """A file swapped for a special file after the check is refused, not opened (which could block)."""
    from optiseg.data import UnreadableFile, read_image, read_mask

    special = tmp_path / "swapped.png"
    keep = make_special(special, kind, tmp_path)
    for read in (read_image, read_mask):
        with pytest.raises(UnreadableFile, match=SPECIAL[kind]):
            read(special)
    del keep


def test_a_sample_that_became_a_fifo_after_the_check_is_a_data_error(clean_data, tmp_path):
    from optiseg.config import load_config
    from optiseg.data import load_dataset
    from optiseg.errors import DataError

    root = data_copy(clean_data, tmp_path)
    dataset = load_dataset(load_config(write_config(tmp_path, root)).config.data)
    sample = dataset.train[0]
    sample.mask.unlink()
    os.mkfifo(sample.mask)
    with pytest.raises(DataError, match="FIFO") as caught:
        dataset.read_mask(sample)
    assert str(sample.mask) in str(caught.value) and "changed since" in str(caught.value)


def test_a_fifo_in_place_of_the_synthetic_marker_is_not_opened(tmp_path, capsys):
    from optiseg.data import generate_synthetic

    root = generate_synthetic(tmp_path / "synth", 20, 2, seed=0, size=(64, 64))
    marker = root / "optiseg-synthetic.json"
    marker.unlink()
    os.mkfifo(marker)
    config = write_config(tmp_path, root, data="  synthetic: {n: 20, width: 64, height: 64}\n")
    code, out = cli(capsys, "data", "check", str(config))
    assert "Traceback" not in out and code in (0, 2)


# ------------------------------------------------------------------ what a path is


def _loop(path: Path, tmp_path: Path) -> None:
    path.symlink_to(path)


def _two_link_loop(path: Path, tmp_path: Path) -> None:
    path.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(path)


PATH_KINDS = {
    "symlink-loop": (_loop, "is a symlink loop"),
    "two-link-loop": (_two_link_loop, "is a symlink loop"),
    "broken-link": (lambda p, t: p.symlink_to(t / "gone"), "is a broken symlink"),
    "file": (lambda p, t: p.write_text("x"), "is a file, not a folder"),
    "fifo": (lambda p, t: os.mkfifo(p), "is a FIFO (named pipe), not a folder"),
}


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
def test_a_data_root_that_is_not_a_folder_says_what_it_is(tmp_path, capsys, kind):
    make, words = PATH_KINDS[kind]
    root = tmp_path / "data"
    make(root, tmp_path)
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and f"{root}: the data folder {words}" in out and "folder does not exist" not in out


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
@pytest.mark.parametrize("where", ["val", "val/images", "train/masks"])
def test_split_and_image_folders_that_are_not_folders_say_what_they_are(clean_data, tmp_path, capsys, kind, where):
    make, words = PATH_KINDS[kind]
    root = data_copy(clean_data, tmp_path)
    shutil.rmtree(root / where)
    make(root / where, tmp_path)
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and f"{root / where}: the " in out and words in out and "missing" not in out


def test_a_data_root_below_a_file_says_so(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    code, out = check(capsys, tmp_path, tmp_path / "a-file" / "data")
    assert code == 2 and "a part of the path above it is a file" in out


def run_unprivileged(capsys, argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` as a user whom file permissions apply to: in-process, or forked as nobody when run as root."""
    if os.geteuid() != 0:
        return cli(capsys, *argv)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, send the output back
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stdout = sys.stderr = buffer = io.StringIO()
            code = main(argv)
            os.write(write, buffer.getvalue().encode("utf-8", "backslashreplace"))
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out


@pytest.mark.parametrize("where", ["", "train/images", "train/masks"])
def test_a_folder_that_cannot_be_listed_is_a_permission_problem(clean_data, tmp_path_factory, capsys, where):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="optiseg-perm-"))  # outside pytest's root-only folders
    try:
        base.chmod(0o755)
        root = base / "set"
        shutil.copytree(clean_data, root)
        for folder in (root, *root.rglob("*")):
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        config = write_config(base, root)
        assert cli(capsys, "data", "check", str(config))[0] == 0  # warm the imports the child needs
        (root / where).chmod(0o000)
        code, out = run_unprivileged(capsys, ["data", "check", str(config)])
        assert code == 2 and "Traceback" not in out
        assert f"{root / where}" in out and "Permission denied" in out, out
    finally:
        (root / where).chmod(0o755)
        shutil.rmtree(base)


# ------------------------------------------------------------------ one stem, several files


@pytest.mark.parametrize("folder", ["images", "masks"])
@pytest.mark.parametrize("suffixes", [(".png",), (".png", ".bmp")])
def test_several_files_with_one_stem_are_one_problem_naming_them_all(clean_data, tmp_path, capsys, folder, suffixes):
    root = data_copy(clean_data, tmp_path)
    original = sorted(train_folder(root, folder).iterdir())[0]
    copies = [original.with_suffix(s if s != original.suffix else ".jpg") for s in suffixes]
    for copy in copies:
        shutil.copyfile(original, copy)
    code, out = check(capsys, tmp_path, root)
    assert code == 2 and out.count(f"share the stem {original.stem!r}") == 1
    assert all(path.name in out for path in (original, *copies))
    assert "without an image" not in out and "without a mask" not in out


# ------------------------------------------------------------------ names that are not UTF-8


def test_file_names_that_are_not_utf8_are_shown_escaped(clean_data, tmp_path, capsys):
    root = data_copy(clean_data, tmp_path)
    image = sorted(train_folder(root).iterdir())[0]
    os.rename(image, os.path.join(os.fsencode(image.parent), b"caf\xe9" + os.fsencode(image.suffix)))
    code, out = check(capsys, tmp_path, root)  # capsys writes strict UTF-8, as a UTF-8 terminal does
    assert code == 2 and "caf\\xe9.jpg: image without a mask" in out and "Traceback" not in out


def test_paired_files_with_names_that_are_not_utf8_train(clean_data, tmp_path):
    from optiseg.config import load_config
    from optiseg.data import load_dataset

    root = data_copy(clean_data, tmp_path)
    for folder in ("images", "masks"):
        path = sorted(train_folder(root, folder).iterdir())[0]
        os.rename(path, os.path.join(os.fsencode(path.parent), b"caf\xe9" + os.fsencode(path.suffix)))
    dataset = load_dataset(load_config(write_config(tmp_path, root)).config.data)
    sample = next(s for s in dataset.train if s.stem.startswith("caf"))
    assert dataset.read_image(sample).shape[:2] == dataset.read_mask(sample).shape
    assert len(dataset.fingerprint()) == 16


# ------------------------------------------------------------------ where things are written


PLACES = {
    "file": (lambda p, t: p.write_text("mine"), "is a file, not a folder"),
    "fifo": (lambda p, t: os.mkfifo(p), "is a FIFO (named pipe), not a folder"),
    "symlink-loop": (_loop, "is a symlink loop"),
    "below-a-file": (lambda p, t: p.parent.write_text("mine"), "is a file, not a folder"),
}


@pytest.mark.parametrize("kind", sorted(PLACES))
def test_train_into_something_that_is_not_a_folder_is_one_line(clean_data, tmp_path, capsys, kind):
    make, words = PLACES[kind]
    target = tmp_path / "taken" / "run" if kind == "below-a-file" else tmp_path / "taken"
    make(target, tmp_path)
    config = write_config(tmp_path, clean_data, "resolution: 64\n")
    code, out = cli(capsys, "train", str(config), "-o", str(target), "--epochs", "1")
    assert code == 2 and words in out and str(tmp_path / "taken") in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 2  # the error and its hint
    if kind in ("file", "below-a-file"):
        assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("kind", sorted(PLACES))
def test_synth_into_something_that_is_not_a_folder_is_one_line(tmp_path, capsys, kind):
    make, words = PLACES[kind]
    target = tmp_path / "taken" / "run" if kind == "below-a-file" else tmp_path / "taken"
    make(target, tmp_path)
    code, out = cli(capsys, "data", "synth", str(target), "--n", "20", "--size", "64x64")
    assert code == 2 and words in out and str(tmp_path / "taken") in out and "Traceback" not in out


def test_a_synthetic_root_that_is_a_symlink_loop_is_never_written_through(tmp_path, capsys):
    root = tmp_path / "synth"
    root.symlink_to(root)
    config = write_config(tmp_path, root, data="  synthetic: {n: 20}\n")
    code, out = cli(capsys, "data", "check", str(config))
    assert code == 2 and "is a symlink loop" in out and "Traceback" not in out
    assert {p.name for p in tmp_path.iterdir()} == {"synth", "c.yaml"}  # no half-made folder beside it
