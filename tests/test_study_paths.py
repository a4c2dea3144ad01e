"""Paths a new user gives: each wrong one is one line naming the path and what it is, exit status 2, checked
before any work (before a device is reached: 127.0.0.1:9 has nothing listening); commands that read a study
never create one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _report_study import study_folder

from optiseg.cli import main

pytestmark = pytest.mark.timeout(120)  # a FIFO that is opened would hang: fail instead

DATA = "data: {root: data, synthetic: {n: 12, width: 96, height: 64}}\n"
READERS = {
    "front": [],
    "report": ["--no-samples"],
    "deploy": ["--trial", "0", "-o", "deployed"],
    "confirm": [],
}


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return study_folder(tmp_path_factory.mktemp("study"), name="demo")


def everything_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------ reading a study never makes one


@pytest.mark.parametrize("storage", [None, "sqlite:///db/study.db", "journal:journals/study.journal"])
@pytest.mark.parametrize("command", sorted(READERS))
def test_reading_a_study_never_run_creates_nothing(tmp_path, capsys, monkeypatch, command, storage):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "never.yaml"
    config.write_text(DATA + (f"storage: {storage}\n" if storage else ""))
    code, out = run(capsys, command, str(config), *READERS[command])
    assert code == 2 and "no study yet: study 'never' is not in " in out and f"run `optiseg search {config}` first" in out
    assert everything_below(tmp_path) == {"never.yaml"}  # no runs/, optuna.db, journal, deploy or report folder


def test_a_study_folder_whose_storage_is_gone_is_said_and_not_recreated(tmp_path, capsys, study):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "study.json").write_text((study / "study.json").read_text().replace(str(study), str(folder)))
    code, out = run(capsys, "front", str(folder))
    assert code == 2 and "no study yet" in out and everything_below(folder) == {"study.json"}


# ------------------------------------------------------------------ a path that is no study: exit 2, one message


NOT_A_STUDY = {
    "missing": (lambda p: None, "does not exist: give a study folder"),
    "empty-folder": (lambda p: p.mkdir(), "is not a study folder (no study.json)"),
    "fifo": (os.mkfifo, "is a FIFO (named pipe): give a study folder"),
    "symlink-loop": (lambda p: p.symlink_to(p), "is a symlink loop: give a study folder"),
}


@pytest.mark.parametrize("kind", sorted(NOT_A_STUDY))
def test_a_path_that_is_no_study_is_bad_input_for_every_command(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    make, words = NOT_A_STUDY[kind]
    target = tmp_path / "target"
    make(target)
    errors = set()
    for command in sorted(READERS):
        code, out = run(capsys, command, str(target), *READERS[command])
        assert code == 2 and f"error: {target} {words}" in out and "Traceback" not in out, command
        errors.add(out)
    assert len(errors) == 1  # the same message whichever command reads it
    assert not (tmp_path / "deployed").exists() and not (tmp_path / "reports").exists()


def test_the_study_file_itself_is_answered_with_its_folder(capsys, study):
    code, out = run(capsys, "front", str(study / "study.json"))
    assert code == 2 and f"{study / 'study.json'} is the study's own file, not its config: give its folder, {study}" in out
    assert "valid keys" not in out and len(out.strip().splitlines()) == 2  # the error and its hint


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"study": "demo"}'])
def test_a_damaged_study_file_is_named(tmp_path, capsys, content):
    (tmp_path / "study.json").write_text(content)
    code, out = run(capsys, "front", str(tmp_path))
    assert code == 2 and f"{tmp_path} is not a study folder: {tmp_path / 'study.json'} cannot be read" in out
    assert "Traceback" not in out


# ------------------------------------------------------------------ output paths: one helper, checked first


def _loop(path: Path, tmp_path: Path) -> None:
    path.symlink_to(path)


OUTPUTS = {
    "below-a-file": (lambda p, t: p.parent.write_text("mine"), "taken (above {name}) is a file, not a folder"),
    "symlink-loop": (_loop, "is a symlink loop, not a {want}"),
    "fifo": (lambda p, t: os.mkfifo(p), "is a FIFO (named pipe), not a {want}"),
    "unwritable": (None, "/proc is a folder optiseg cannot write in"),
}
WRITERS = {  # command line before -o, what -o is
    "deploy": (lambda study: ["deploy", str(study), "--trial", "0"], "folder"),
    "report": (lambda study: ["report", str(study), "--no-samples"], "file"),
    "export": (lambda study: ["export", "--model", "fastscnn", "--resolution", "64"], "file"),
}


@pytest.mark.parametrize("kind", sorted(OUTPUTS))
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_an_output_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys, study, command, kind):
    make, words = OUTPUTS[kind]
    argv, want = WRITERS[command]
    target = Path("/proc/optiseg-nowhere") if make is None else tmp_path / ("taken/out" if kind == "below-a-file" else "taken")
    if make is not None:
        make(target, tmp_path)
    before = everything_below(tmp_path)
    code, out = run(capsys, *argv(study), "-o", str(target))
    assert code == 2 and f"error: -o {target} cannot be written: " in out, out
    assert words.format(name=target.name, want=want) in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 2 and everything_below(tmp_path) == before


def test_export_onto_a_folder_is_refused(tmp_path, capsys):
    code, out = run(capsys, "export", "--model", "fastscnn", "--resolution", "64", "-o", str(tmp_path))
    assert code == 2 and f"{tmp_path} is a folder, not a file" in out and not list(tmp_path.iterdir())


# ------------------------------------------------------------------ input files: regular files only, said what they are


INPUTS = {
    "fifo": (os.mkfifo, "is a FIFO (named pipe), not a regular file"),
    "folder": (os.mkdir, "is a folder, not a regular file"),
    "broken-link": (lambda p: p.symlink_to(p.parent / "gone"), "is a broken symlink"),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("argv,what", [
    (["bench", "{path}"], "model file"),
    (["export", "--checkpoint", "{path}", "--resolution", "64", "-o", "{out}"], "checkpoint"),
    (["bench", "model.onnx", "--config", "{path}"], "config file"),
    (["device", "check", "127.0.0.1:9", "--ssh-config", "{path}"], "ssh config file"),
    (["device", "check", "127.0.0.1:9", "--key-file", "{path}"], "device.key_file:"),  # a FIFO used to hang here
    (["device", "check", "127.0.0.1:9", "--known-hosts", "{path}"], "device.known_hosts:"),
])
def test_an_input_that_is_not_a_regular_file_says_what_it_is(tmp_path, capsys, kind, argv, what):
    make, words = INPUTS[kind]
    path = tmp_path / "input"
    make(path)
    code, out = run(capsys, *(a.format(path=path, out=tmp_path / "m.onnx") for a in argv))
    assert code == 2 and f"{what} {path} {words}" in out and "Traceback" not in out
    assert not (tmp_path / "m.onnx").exists()


def test_a_file_that_is_no_checkpoint_is_bad_input(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("my notes, not weights")
    code, out = run(capsys, "export", "--checkpoint", str(bogus), "--resolution", "64", "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and f"checkpoint {bogus} cannot be read" in out and "Traceback" not in out
    assert not (tmp_path / "m.onnx").exists()
