"""Bad configs a new user writes: each gets one clear line naming the file and key, exit status 2, nothing half-made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optiseg.cli import main

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
    assert code == 2 and f"{config}: line 4, column 3: key 'n_trials' appears twice" in err and "first on line 3" in err
    assert "Traceback" not in err


def test_keys_of_a_merge_may_be_overridden(tmp_path):
    from optiseg.config import read_yaml

    config = write(tmp_path, "base: &base {epochs: 3, lr: 0.1}\ntraining:\n  <<: *base\n  epochs: 5\n")
    assert read_yaml(config)["training"] == {"epochs": 5, "lr": 0.1}


@pytest.mark.parametrize("text,key", [
    ("training: {epochs: true}\n", "training.epochs = True"),
    ("budget: {n_trials: yes}\n", "budget.n_trials = True"),
    ("seed: false\n", "seed = False"),
    ("constraints: {max_latency_ms: true}\n", "constraints.max_latency_ms = True"),
    ("device: {kind: ssh, host: pi, port: true}\n", "device.port = True"),
    ("training: {augment: {rgb_shift: true}}\n", "training.augment.rgb_shift = True"),
])
def test_booleans_are_not_numbers(tmp_path, capsys, text, key):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + text)))
    assert code == 2 and f"{tmp_path / 'study.yaml'}: {key}: a boolean is not a number" in err


@pytest.mark.parametrize("data,key,where", [
    ("split: [0.7, true, 0.1]", "data.split", "item 2 is True"),
    ("background_values: [0, true]", "data.background_values", "item 2 is True"),
    ("masks: rgb\n  palette: {belt: [0, 0, true], item: [1, 1, 1]}", "data.palette", "key 'belt'"),
])
def test_booleans_are_not_numbers_inside_lists_and_mappings(tmp_path, capsys, data, key, where):
    code, err = run(capsys, "data", "check", str(write(tmp_path, f"data:\n  root: data\n  {data}\n")))
    assert code == 2 and key in err and where in err and "a boolean is not a number" in err


def test_booleans_stay_valid_where_a_knob_takes_them(tmp_path):
    from optiseg.config import load_config

    loaded = load_config(write(tmp_path, DATA + "training: {amp: false}\nquantization: {per_channel: true}\n"))
    assert loaded.config.training.amp is False and loaded.config.quantization.per_channel is True


@pytest.mark.parametrize("name", ["../x", "<absolute>", ".hidden", "a/b", "..", ""])
def test_study_names_are_names(tmp_path, capsys, name):
    elsewhere = tmp_path / "elsewhere"
    name = str(elsewhere) if name == "<absolute>" else name
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"study: {json.dumps(name)}\n")))
    assert code == 2 and f"study = {name!r}: not a study name" in err and "letters, digits" in err
    assert not (tmp_path / "runs").exists() and not elsewhere.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("output,blamed", [("runs", "runs is a file"), ("runs/deeper", "runs is a file, so")])
def test_output_that_is_a_file_is_one_line(tmp_path, capsys, output, blamed):
    (tmp_path / "runs").write_text("not a folder")
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"output: {output}\n")))
    assert code == 2 and f"output = {output!r}: {tmp_path / blamed}" in err and "Traceback" not in err


def test_a_missing_warm_start_exits_2_and_makes_nothing(tmp_path, capsys):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "warm_start: runs/nowhere\n")))
    assert code == 2 and "warm_start = 'runs/nowhere': " in err and "does not exist" in err
    assert not (tmp_path / "runs").exists()  # no optuna.db, study.json or config.yaml anywhere


def test_a_warm_start_deleted_later_does_not_stop_reading_the_config(tmp_path):
    """Only a search reads the warm start: `front`, `report` and `deploy` still open a study whose warm start is gone."""
    from optiseg.config import load_config

    config = write(tmp_path, DATA + "warm_start: runs/gone\n")
    assert load_config(config).config.warm_start == tmp_path / "runs" / "gone"


def test_storage_refusals_exit_2_naming_the_file_and_key(tmp_path, capsys):
    for storage in ("postgresql://:pw@host/db", "redis://host", "sqlite:///:memory:"):
        code, err = run(capsys, "search", str(write(tmp_path, DATA + f"storage: {json.dumps(storage)}\n")))
        assert code == 2 and "storage" in err and "Traceback" not in err, storage
        assert "pw@" not in err
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "storage: 'postgresql://:pw@host/db'\n")))
    assert f"{tmp_path / 'study.yaml'}: storage = 'postgresql://:***@host/db': holds a password" in err


def test_a_top_level_resolution_is_blamed_on_the_key_the_user_wrote(tmp_path, capsys):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "resolution: 100\n")))
    assert code == 2 and ": resolution = 100" in err and "search_space.resolution" not in err and "nearest valid: 96 or 128" in err
    assert not (tmp_path / "runs").exists()
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "search_space: {resolution: [96, 100]}\n")))
    assert code == 2 and "search_space.resolution = 100" in err  # a choice is still named by its own key
