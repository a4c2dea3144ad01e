"""Bad configs a new user writes: each gets one clear line naming the file and key, exit status 2, nothing half-made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optiseg.cli import main
from optiseg.secrets import mask_credentials

DATA = "data: {root: data, synthetic: {n: 12, width: 96, height: 64}}\n"


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path, capsys):
    config = write(tmp_path, DATA + "budget:\n  n_trials: 3\n  n_trials: 30\n")
    code, err = run(capsys, "search", str(config))
    assert code == 2 and "'n_trials' appears twice" in err and ":4:" in err and "line 3" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text,key", [
    ("training: {epochs: true}\n", "epochs"),
    ("budget: {n_trials: yes}\n", "n_trials"),
    ("constraints: {max_latency_ms: true}\n", "max_latency_ms"),
])
def test_booleans_are_not_numbers(tmp_path, capsys, text, key):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + text)))
    assert code == 2 and key in err and "boolean is not a number" in err


@pytest.mark.parametrize("name", ["../x", "/tmp/elsewhere", ".hidden", "a/b"])
def test_study_names_are_names(tmp_path, capsys, name):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"study: {json.dumps(name)}\n")))
    assert code == 2 and "is not a study name" in err and "study" in err
    assert not (tmp_path / "runs").exists() and not Path("/tmp/elsewhere").exists()


def test_output_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "output: runs\n")))
    assert code == 2 and "output" in err and "is a file" in err and "Traceback" not in err


def test_a_missing_warm_start_exits_2_and_makes_nothing(tmp_path, capsys):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "warm_start: runs/nowhere\n")))
    assert code == 2 and "warm_start" in err and "does not exist" in err
    assert not (tmp_path / "runs").exists()  # no optuna.db, study.json or config.yaml anywhere


ODD_URLS = [
    ("postgresql://:pw@host/db", "pw"),
    ("postgresql://user:p@ss:w/rd@host:5432/db", "p@ss:w/rd"),
    ("postgresql://user:s%40cret@host/db?sslmode=require", "s%40cret"),
    ("mysql+pymysql://me:hunter2@db.example/optiseg", "hunter2"),
]


@pytest.mark.parametrize("url,password", ODD_URLS)
def test_a_password_is_never_printed(tmp_path, capsys, url, password):
    assert password not in mask_credentials(f"cannot open {url}: refused") and "***" in mask_credentials(url)
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"storage: {json.dumps(url)}\n")))
    assert code == 2 and "holds a password" in err and password not in err
    assert not (tmp_path / "runs").exists()


def test_environment_references_are_kept_and_the_expanded_value_is_not_printed(monkeypatch):
    monkeypatch.setenv("OPTISEG_PW", "topsecret")
    assert mask_credentials("postgresql://u:${OPTISEG_PW}@h/db") == "postgresql://u:${OPTISEG_PW}@h/db"
    assert "topsecret" not in mask_credentials("could not connect to postgresql://u:topsecret@h/db")


def test_a_top_level_resolution_is_blamed_on_the_key_the_user_wrote(tmp_path, capsys):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "resolution: 100\n")))
    assert code == 2 and ": resolution = 100" in err and "search_space.resolution" not in err and "nearest valid: 96 or 128" in err
