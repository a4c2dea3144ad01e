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


UNREACHABLE_DEVICE = "device: {kind: ssh, host: 127.0.0.1, port: 9, connect_timeout: 1, retries: 0}\n"


@pytest.mark.parametrize("output,blamed", [
    ("runs", "{tmp}/runs (above study) is a file, not a folder"),
    ("runs/deeper", "{tmp}/runs (above study) is a file, not a folder"),
    ("/proc/optiseg-nowhere", "/proc is a folder optiseg cannot write in"),  # where even root cannot write
])
def test_an_output_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys, output, blamed):
    """Checked with the config: before the data is generated and before the device (here: none listening) is reached."""
    (tmp_path / "runs").write_text("not a folder")
    code, err = run(capsys, "search", str(write(tmp_path, DATA + UNREACHABLE_DEVICE + f"output: {output}\n")))
    assert code == 2 and f"output = {output!r}: the study folder " in err and blamed.format(tmp=tmp_path) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the error and its hint
    assert not (tmp_path / "data").exists() and (tmp_path / "runs").read_text() == "not a folder"


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


@pytest.mark.parametrize("device,key", [
    ("{host: ''}", "device.host = ''"),
    ("{kind: ssh, host: '  '}", "device.host = '  '"),
    ("{kind: ssh, pool: [{host: ''}]}", "device.pool.0.host = ''"),
    ("{kind: ssh, host: pi, python: ''}", "device.python = ''"),
])
def test_an_empty_host_or_interpreter_is_refused_naming_the_key(tmp_path, capsys, device, key):
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"device: {device}\n")))
    assert code == 2 and f"{key}: is empty" in err and "ssh" not in err.split(key)[1].split("\n")[0].replace("is empty", "")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("key,value", [("python", "/opt/venv/bin/python"), ("known_hosts", "hosts"), ("host", "pi")])
def test_ssh_only_keys_of_a_local_device_are_refused_alike(tmp_path, capsys, key, value):
    """A local device times with this process's own Python: an interpreter set for it would be silently ignored."""
    code, err = run(capsys, "search", str(write(tmp_path, DATA + f"device: {{kind: local, {key}: {value}}}\n")))
    assert code == 2 and f"{key} only apply to kind: ssh; set kind: ssh or remove them" in err


def test_a_batch_larger_than_the_training_split_is_refused_before_anything_is_made(tmp_path, capsys):
    config = write(tmp_path, DATA + "resolution: 64\ntraining: {batch_size: 64}\n" + UNREACHABLE_DEVICE)
    code, err = run(capsys, "search", str(config))
    assert code == 2 and f"{config}: training.batch_size = 64: the training split has only " in err
    assert "set training.batch_size to at most " in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # and the device (none listening) was never reached


def test_a_warm_start_that_is_not_a_study_config_names_the_key(tmp_path, capsys):
    (tmp_path / "notes.yaml").write_text("- a list, not a config\n")
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "resolution: 64\nwarm_start: notes.yaml\n")))
    assert code == 2 and f"warm_start = '{tmp_path / 'notes.yaml'}': " in err and "the top level must be a mapping" in err
    assert not (tmp_path / "runs").exists()


def test_a_warm_start_from_a_study_never_run_creates_nothing(tmp_path, capsys):
    source = tmp_path / "beginner.yaml"
    source.write_text(DATA + "output: other\n")
    code, err = run(capsys, "search", str(write(tmp_path, DATA + "resolution: 64\nwarm_start: beginner.yaml\n")))
    assert code == 2 and "warm_start = " in err and "no study yet" in err and "optiseg search" in err
    assert not (tmp_path / "other").exists() and not (tmp_path / "runs").exists()


def test_an_unreachable_storage_leaves_no_study_folder_behind(tmp_path, capsys):
    """The storage is opened once the devices answered: its failure removes the search.log and folders made until then."""
    port = _closed_port()
    storage = f"postgresql+psycopg://optiseg@127.0.0.1:{port}/optiseg"
    device = "device: {kind: local, measure: {threads: 1, warmup: 1, min_runs: 5, min_seconds: 0}}\n"
    config = write(tmp_path, DATA + f"resolution: 64\nstorage: {storage!r}\noutput: out/runs\n" + device)
    code, err = run(capsys, "search", str(config))
    assert code == 1 and f"cannot open storage {storage}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


@pytest.mark.parametrize("kind,words", [("fifo", "is a FIFO (named pipe), not a regular file"),
                                        ("folder", "is a folder, not a regular file"),
                                        ("broken-link", "is a broken symlink")])
def test_a_config_that_is_not_a_file_says_what_it_is(tmp_path, capsys, kind, words):
    import os

    config = tmp_path / "study.yaml"
    {"fifo": os.mkfifo, "folder": os.mkdir, "broken-link": lambda p: p.symlink_to(tmp_path / "gone.yaml")}[kind](config)
    for command in (["data", "check"], ["search"], ["train"]):
        code, err = run(capsys, *command, str(config))
        assert code == 2 and f"config file {config} {words}" in err and "Traceback" not in err, command
