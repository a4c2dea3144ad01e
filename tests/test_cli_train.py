"""`optiseg train` as a user runs it: output, run folder, errors, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _datasets import split_dataset, write_study
from optiseg.checkpoint import load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
NETWORK = ("--model", "fastscnn", "--knobs", "a=0.25,t=2,r=1", "--resolution", "64")


@pytest.fixture
def study(tmp_path):
    return write_study(
        tmp_path / "study.yaml",
        {"root": "data", "synthetic": {"n": 16, "width": 96, "height": 64}},
        {"epochs": 2, "batch_size": 4},
        output="runs",
    )


def test_train_writes_the_run_folder_and_a_summary(study, cli, tmp_path):
    result = cli("train", str(study), *NETWORK)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "train" / "fastscnn-64x64-rgb-c1-a0.25_t2_r1_pp1"  # the network's one key
    assert {p.name for p in run_dir.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.json", "model.onnx", "train.log"}
    assert "test IoU (foreground)" in result.stdout and str(run_dir) in result.stdout
    assert "epoch 2/2" in result.stderr  # one line per epoch when stderr is not a terminal

    again = cli("train", str(study), *NETWORK, "--epochs", "3", "--json")
    assert again.returncode == 2
    error = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "training.epochs: 2 in the folder, 3 now" in error[0]
    assert "Traceback" not in again.stderr


def test_train_errors_are_one_line(tmp_path, cli):
    split_dataset(tmp_path / "data")
    (tmp_path / "data" / "val" / "masks" / "val00.png").unlink()
    config = write_study(tmp_path / "bad.yaml", {"root": "data"})
    no_resolution = cli("train", str(config), "--model", "fastscnn")
    assert no_resolution.returncode == 2 and "give --resolution" in no_resolution.stderr
    broken = cli("train", str(config), *NETWORK)
    assert broken.returncode == 2
    assert "val00.jpg: image without a mask" in broken.stderr and "Traceback" not in broken.stderr


def test_sigkill_then_rerun_resumes_from_the_last_checkpoint(study, tmp_path, cli):
    epochs = "30"  # enough that the kill lands mid-training on a fast, idle machine (an epoch here takes ~0.1 s)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "optiseg", "train", str(study), *NETWORK, "--epochs", epochs, "-o", str(run_dir), "--no-onnx"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.exists() and load_checkpoint(checkpoint)["epoch"] >= 1:
                break
            time.sleep(0.02)
        assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read().decode()}"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(checkpoint)["epoch"]
    assert 1 <= killed_at < int(epochs) and not (run_dir / "metrics.json").exists()

    rerun = cli("train", str(study), *NETWORK, "--epochs", epochs, "-o", str(run_dir), "--no-onnx", "--json")
    assert rerun.returncode == 0, rerun.stderr
    metrics = json.loads(rerun.stdout)
    assert metrics["resumed_from"] == [killed_at]
    assert metrics["epochs_run"] == int(epochs) and metrics["epochs"] == int(epochs)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, int(epochs) + 1))
    assert f"resumed from checkpoint.pt after epoch {killed_at}/{epochs}" in (run_dir / "train.log").read_text()


def test_init_from_starts_a_contained_network_from_a_trained_one_and_refuses_one_it_cannot(study, cli, tmp_path):
    source = cli("train", str(study), "--knobs", "a=0.5,t=4,r=2,pp=0", "--resolution", "64", "--epochs", "1", "-o",
                 str(tmp_path / "source"), "--no-onnx")
    assert source.returncode == 0, source.stderr
    best = tmp_path / "source" / "best.pt"
    narrower = cli("train", str(study), "--knobs", "a=0.25,t=2,r=1,pp=0", "--resolution", "96", "--epochs", "1", "-o",
                   str(tmp_path / "narrow"), "--no-onnx", "--init-from", str(best), "--json")
    assert narrower.returncode == 0, narrower.stderr
    assert json.loads(narrower.stdout)["initialized_from"] == str(best)
    assert f"starting from the weights of {best}" in (tmp_path / "narrow" / "train.log").read_text()
    wider = cli("train", str(study), "--knobs", "a=1,t=4,r=2,pp=0", "--resolution", "64", "--epochs", "1", "-o",
                str(tmp_path / "wide"), "--init-from", str(best))
    assert wider.returncode == 2 and "Traceback" not in wider.stderr
    assert "does not contain fastscnn" in wider.stderr and "at least as wide" in wider.stderr
    assert not (tmp_path / "wide" / "checkpoint.pt").exists()
    luma = cli("train", str(study), "--knobs", "a=0.25,t=2,r=1,pp=0", "--resolution", "64", "--in-channels", "1",
               "--epochs", "1", "-o", str(tmp_path / "luma"), "--init-from", str(best))
    assert luma.returncode == 2 and "input channel(s)" in luma.stderr
    pooling = cli("train", str(study), "--knobs", "a=0.25,t=2,r=1,pp=1", "--resolution", "64", "--epochs", "1", "-o",
                  str(tmp_path / "pooling"), "--init-from", str(best))
    assert pooling.returncode == 2 and "pp is 0 in the source and 1 here" in pooling.stderr
    elsewhere = cli("train", str(study), "--knobs", "a=0.25,t=2,r=1,pp=0", "--resolution", "96", "--epochs", "1", "-o",
                    str(tmp_path / "narrow"), "--init-from", str(tmp_path / "source" / "checkpoint.pt"))
    assert elsewhere.returncode == 2 and "already holds a run of this network started from" in elsewhere.stderr
