"""The search as users run it: real processes, real storage, real onnxruntime, real training on synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from optiseg import records
from optiseg.layout import StudyLayout
from optiseg.records import read_record
from postgres import postgres_url  # noqa: F401  (fixture)

pytest_plugins = ("sshd",)
pytestmark = pytest.mark.slow

FAST_MEASURE = {"threads": 1, "warmup": 1, "min_runs": 5, "min_seconds": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small synthetic data set, generated once for the module by the data section of a config."""
    from optiseg.config import DataConfig
    from optiseg.data import load_dataset

    root = tmp_path_factory.mktemp("data") / "conveyor"
    load_dataset(DataConfig(root=root, synthetic={"n": 16, "classes": 2, "width": 128, "height": 96}))
    return root


def make_config(folder: Path, data_root: Path, name: str, **changes) -> Path:
    config = {
        "study": name,
        "model": "fastscnn",
        "effort": "beginner",
        "resolution": 64,
        "search_space": {"resolution": [64, 96, 128], "a": [0.25]},
        "data": {"root": str(data_root)},
        "training": {"epochs": 2, "batch_size": 4},
        "device": {"kind": "local", "measure": FAST_MEASURE},
        "budget": {"n_trials": 3},
        "output": str(folder / "runs"),
    }
    for key, value in changes.items():
        config[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def load_study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'runs' / name / 'optuna.db'}")


def test_measure_before_train_front_and_deploy(cli, tmp_path, data_root):
    config = make_config(
        tmp_path, data_root, "e2e",
        search_space={"resolution": [64, 96, 1024], "a": [0.25]},
        constraints={"max_latency_ms": 5},
    )
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    counts = dict(summary["counts"])
    assert counts.pop("training_compute_macs") > 0 and counts.pop("training_seconds") > 0
    assert counts == {"complete": 2, "partial": 0, "too_slow": 1, "failed": 0, "interrupted": 0, "running": 0, "skipped": 0,
                      "duplicate": 0, "imported": 0, "networks_trained": 2}
    assert summary["sampler"] == "grid" and summary["front"]

    study = load_study(tmp_path, "e2e")
    too_slow = [t for t in study.trials if read_record(t).resolution == "1024x1024"]
    assert len(too_slow) == 1
    slow = too_slow[0]
    assert slow.state == TrialState.PRUNED and slow.values is None
    slow_record = read_record(slow)
    assert slow_record.iou is None and "iou" not in slow_record.evaluation.metrics and slow_record.latency_ms > 5
    assert slow.constraints["max_latency_ms"] > 0  # the sampler sees it as infeasible
    slow_folder = StudyLayout(tmp_path / "runs" / "e2e").network_at(slow_record.artifacts)
    assert slow_folder.untrained_onnx.is_file() and not slow_folder.train.exists()  # never trained
    assert records.is_baseline(study.trials[0]) and study.trials[0].params == {"resolution": 64}

    front = json.loads(cli("front", str(tmp_path / "runs" / "e2e"), "--json").stdout)
    assert front["trials"] and all(t["feasible"] for t in front["trials"])
    everything = cli("front", str(config), "--all", "--csv").stdout.splitlines()
    assert everything[0].startswith("trial,status,plan,mode,precision,model,resolution") and len(everything) == 4
    assert "device_latency_ms" in everything[0].split(",")  # every named metric a trial recorded

    refused = cli("deploy", str(tmp_path / "runs" / "e2e"), "--trial", str(slow.number), "-o", str(tmp_path / "d1"))
    assert refused.returncode == 2 and "too slow" in refused.stderr and "Traceback" not in refused.stderr
    best = front["trials"][-1]["trial"]
    deployed = cli("deploy", str(tmp_path / "runs" / "e2e"), "--trial", str(best), "-o", str(tmp_path / "deploy"))
    assert deployed.returncode == 0, deployed.stderr
    assert {p.name for p in (tmp_path / "deploy").iterdir()} == {"model.onnx", "metrics.json", "config.yaml", "predict.py", "README.md"}
    image = sorted((data_root / "test" / "images").iterdir())[0]
    run = subprocess.run(
        [sys.executable, str(tmp_path / "deploy" / "predict.py"), str(tmp_path / "deploy" / "model.onnx"), str(image), "-o", str(tmp_path / "masks")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    from PIL import Image

    assert Image.open(tmp_path / "masks" / f"{image.stem}.png").size == Image.open(image).size

    again = cli("search", str(config))
    assert again.returncode == 0 and "budget of 3 networks reached" in again.stdout
    assert len(load_study(tmp_path, "e2e").trials) == 3  # nothing rerun


def test_sigkill_during_training_resumes(tmp_path, data_root):
    config = make_config(tmp_path, data_root, "killed", training={"epochs": 8, "batch_size": 4})
    command = [sys.executable, "-m", "optiseg", "search", str(config), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    candidates = tmp_path / "runs" / "killed" / "candidates"
    deadline = time.monotonic() + 300
    try:
        while not list(candidates.glob("*/train/checkpoint.pt")):
            assert process.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no epoch checkpoint appeared"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = load_study(tmp_path, "killed")
    assert [t.state for t in killed.trials].count(TrialState.RUNNING) == 1

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    study = load_study(tmp_path, "killed")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(complete) == 3
    assert len({records.network_key_of(t) for t in complete}) == 3  # none repeated
    assert len(failed) == 1
    retry = [t for t in complete if records.retry_of(t) == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    log = (StudyLayout(tmp_path / "runs" / "killed").network_at(read_record(retry[0]).artifacts).train / "train.log").read_text()
    assert "resumed from" in log


def _like_a_terminal() -> None:
    """Ctrl-C as in a terminal: a test run started in the background (``cmd &``) inherits an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_cleanly_and_queue_the_trial(tmp_path, data_root, stop_signal):
    config = make_config(tmp_path, data_root, "stopped", training={"epochs": 8, "batch_size": 4})
    process = subprocess.Popen(
        [sys.executable, "-m", "optiseg", "search", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_like_a_terminal,
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "runs" / "stopped" / "candidates").glob("*/train/checkpoint.pt")):
        assert process.poll() is None and time.monotonic() < deadline, "no epoch checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "stopped" in err and "Run the same command to resume" in err
    trials = load_study(tmp_path, "stopped").trials
    interrupted = [t for t in trials if read_record(t).status == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    queued = [t for t in trials if t.state == TrialState.WAITING and records.retry_of(t) == interrupted[0].number]
    assert len(queued) == 1


@pytest.mark.parametrize("storage_kind", ["postgresql", "journal"])
def test_two_workers_share_one_study(tmp_path, data_root, storage_kind, request):
    storage = request.getfixturevalue("postgres_url") if storage_kind == "postgresql" else f"journal:{tmp_path / 'shared.journal'}"
    name = f"pair-{storage_kind}"
    config = make_config(
        tmp_path, data_root, name, storage=storage, budget={"n_trials": 4},
        search_space={"resolution": [64, 96, 128, 160, 192], "a": [0.25]},
    )
    command = [sys.executable, "-m", "optiseg", "search", str(config), "--quiet"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    from optiseg.search.storage import open_storage, parse_storage

    study = optuna.load_study(study_name=name, storage=open_storage(parse_storage(storage, tmp_path, tmp_path)))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and not records.is_duplicate(t)]
    assert len(complete) == 4  # the global budget holds: four distinct candidates
    assert len({records.network_key_of(t) for t in complete}) == 4  # none evaluated twice
    for reused in (t for t in study.trials if records.is_duplicate(t)):  # re-proposals copy, never retrain
        assert reused.values == study.trials[read_record(reused).duplicate_of].values
    others = [t for t in study.trials if t.state not in (TrialState.COMPLETE, TrialState.WAITING)]
    assert all(records.is_skipped(t) for t in others), [(t.number, t.state, t.user_attrs) for t in others]


def test_a_second_process_on_one_sqlite_file_is_refused(cli, tmp_path, data_root):
    from optiseg.search.storage import SQLiteWriterLock

    config = make_config(tmp_path, data_root, "locked")
    with SQLiteWriterLock(tmp_path / "runs" / "locked" / "optuna.db"):
        result = cli("search", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "SQLite cannot be shared" in result.stderr and "postgresql://" in result.stderr


def test_changed_settings_are_refused_then_forced(cli, tmp_path, data_root):
    # as if made by an older optiseg, whose defaults were a batch of 2 at lr 0.002
    config = make_config(tmp_path, data_root, "changed", budget={"n_trials": 1}, training={"epochs": 2, "batch_size": 2, "lr": 0.002})
    assert cli("search", str(config), "--quiet").returncode == 0
    make_config(tmp_path, data_root, "changed", budget={"n_trials": 1}, training={"epochs": 2})  # today's defaults
    defaulted = cli("search", str(config))
    assert defaulted.returncode == 1 and "training.batch_size: 2 -> 4" in defaulted.stderr
    assert f"the values it ran with into {config}: training.batch_size: 2, training.lr: 0.002" in " ".join(defaulted.stderr.split())
    make_config(tmp_path, data_root, "changed", budget={"n_trials": 1}, training={"epochs": 1, "batch_size": 4, "lr": 0.002})
    refused = cli("search", str(config))
    assert refused.returncode == 1
    assert "was run with other settings" in refused.stderr and "training.epochs: 2 -> 1" in refused.stderr and "--force" in refused.stderr
    assert "the values it ran with" not in refused.stderr  # every changed setting written in the config
    forced = cli("search", str(config), "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    storage = f"sqlite:///{tmp_path / 'runs' / 'changed' / 'optuna.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    archived = [n for n in names if n.startswith("changed.archived-")]
    assert "changed" in names and len(archived) == 1  # the old trials are kept
    assert len(optuna.load_study(study_name=archived[0], storage=storage).trials) == 1


def test_a_failing_trial_fails_that_trial_only(tmp_path, data_root, monkeypatch):
    import optiseg.training
    from optiseg.config import load_config
    from optiseg.search import run_search

    real = optiseg.training.train_network

    def flaky(network, **kwargs):
        if network.resolution == (96, 96):
            raise RuntimeError("simulated out-of-memory")
        return real(network, **kwargs)

    monkeypatch.setattr(optiseg.training, "train_network", flaky)
    summary = run_search(load_config(make_config(tmp_path, data_root, "flaky")), quiet=True)
    assert summary.counts["failed"] == 1 and summary.counts["complete"] == 2
    failed = [t for t in load_study(tmp_path, "flaky").trials if t.state == TrialState.FAIL]
    assert records.error_of(failed[0]) == "RuntimeError: simulated out-of-memory"
    assert "simulated out-of-memory" in (tmp_path / "runs" / "flaky" / "trials" / f"{failed[0].number:04d}.error.log").read_text()


def test_a_higher_tier_warm_starts_from_a_lower_one(cli, tmp_path, data_root):
    beginner = make_config(tmp_path, data_root, "tier1", budget={"n_trials": 2}, search_space={"resolution": [64, 96], "a": [0.25]})
    assert cli("search", str(beginner), "--quiet").returncode == 0
    intermediate = make_config(
        tmp_path, data_root, "tier2", effort="intermediate", budget={"n_trials": 1},
        search_space={"resolution": [64, 96], "a": [0.25, 0.125], "t": [6, 2]},
        warm_start=str(tmp_path / "runs" / "tier1"),
    )
    result = cli("search", str(intermediate), "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert counts["imported"] == 2 and counts["complete"] + counts["too_slow"] == 1  # the budget buys one new candidate
    study = load_study(tmp_path, "tier2")
    imported = [t for t in study.trials if records.is_imported(t)]
    assert sorted(read_record(t).imported_from for t in imported) == ["tier1#0", "tier1#1"]
    for trial in imported:  # figures copied, artifacts present, nothing retrained
        log = (StudyLayout(tmp_path / "runs" / "tier2").network_at(read_record(trial).artifacts).train / "train.log").read_text()
        assert log.count("training fastscnn") == 1
        network = read_record(trial).plan.network  # its params (what the sampler learns from) describe its own network
        assert records.params_of(trial) == {"resolution": network.resolution[0], "a": network.knob_dict["a"],
                                             "t": network.knob_dict["t"]}
    baseline = [t for t in study.trials if records.is_baseline(t)]
    assert len(baseline) == 1 and not records.is_imported(baseline[0])  # the new study's own baseline ran as itself
    assert not [t for t in study.trials if t.state.name == "WAITING"]  # and no import is left in the queue
    changed = make_config(
        tmp_path, data_root, "tier3", effort="intermediate", training={"epochs": 1, "batch_size": 4},
        warm_start=str(tmp_path / "runs" / "tier1"),
    )
    refused = cli("search", str(changed))
    assert refused.returncode == 2 and "not comparable" in refused.stderr and "training.epochs" in refused.stderr
    assert not (tmp_path / "runs" / "tier3").exists()  # a failed start leaves no half-made study


def test_a_search_timed_over_ssh(cli, tmp_path, data_root, sshd):
    """The device is reached before any trial: an untrusted host stops the search at once with the fix."""
    unknown = make_config(tmp_path, data_root, "untrusted", device=sshd.device(tmp_path / "empty_known_hosts"), budget={"n_trials": 1})
    (tmp_path / "empty_known_hosts").write_text("")
    refused = cli("search", str(unknown))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "optiseg device trust" in refused.stderr and "SHA256:" in refused.stderr
    assert not (tmp_path / "runs" / "untrusted").exists()  # a failed start leaves no half-made study

    wrong_login = make_config(
        tmp_path, data_root, "wrong-login", budget={"n_trials": 1},
        device={**sshd.device(sshd.write_known_hosts(tmp_path / "known_hosts")), "key_file": str(sshd.wrong_key)},
    )
    refused = cli("search", str(wrong_login))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "authentication as" in refused.stderr
    assert not (tmp_path / "runs" / "wrong-login").exists()

    trusted = make_config(
        tmp_path, data_root, "over-ssh", device=sshd.device(sshd.write_known_hosts(tmp_path / "known_hosts")), budget={"n_trials": 1}
    )
    result = cli("search", str(trusted), "--json")
    assert result.returncode == 0, result.stderr
    trial = load_study(tmp_path, "over-ssh").trials[0]
    assert trial.state == TrialState.COMPLETE
    assert read_record(trial).latency["device_key"].startswith("ssh:") and read_record(trial).latency_ms > 0


def test_a_device_failure_is_retried_on_the_next_run_and_a_plan_failure_is_not(tmp_path, data_root, monkeypatch):
    import optiseg.training
    from optiseg.config import load_config
    from optiseg.devices.local import LocalRunner
    from optiseg.errors import DeviceError
    from optiseg.search import run_search

    real_measure, real_train = LocalRunner.measure, optiseg.training.train_network

    def device_down(self, path):
        if "64x64" in str(path.parent):
            raise DeviceError("onnxruntime crashed on the device (simulated)")
        return real_measure(self, path)

    def diverges(network, **kwargs):
        if network.resolution == (96, 96):
            raise optiseg.errors.OptisegError("training diverged at epoch 1 (simulated)")
        return real_train(network, **kwargs)

    import optiseg.errors

    monkeypatch.setattr(LocalRunner, "measure", device_down)
    monkeypatch.setattr(optiseg.training, "train_network", diverges)
    config = load_config(make_config(tmp_path, data_root, "retry"))
    first = run_search(config, quiet=True)
    assert first.counts["failed"] == 2 and first.counts["complete"] == 1
    failures = {read_record(t).resolution: read_record(t) for t in load_study(tmp_path, "retry").trials if t.state == TrialState.FAIL}
    assert failures["64x64"].error_retryable and not failures["96x96"].error_retryable

    monkeypatch.setattr(LocalRunner, "measure", real_measure)  # the user fixed the device
    second = run_search(config, quiet=True)
    trials = [read_record(t) for t in load_study(tmp_path, "retry").trials]
    assert [r.retry_of for r in trials if r.resolution == "64x64" and r.status == "complete"] == [failures["64x64"].number]
    assert not any(r.retry_of == failures["96x96"].number for r in trials)  # final: the same plan fails the same way
    assert second.counts["complete"] == 2


def test_a_constraint_known_only_after_training_makes_the_trained_network_infeasible(tmp_path, data_root):
    """min_iou is unknown until a network is trained: Optuna keeps a constraint's first value, so the trial must
    not write a placeholder first (it did: every network passed min_iou)."""
    import warnings

    from optiseg.config import load_config
    from optiseg.search import run_search

    config = make_config(tmp_path, data_root, "strict", constraints={"min_iou": 0.9999}, budget={"n_trials": 2})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The constraint value is ignored")
        summary = run_search(load_config(config), quiet=True)
    trained = [r for r in map(read_record, load_study(tmp_path, "strict").trials) if r.status == "complete"]
    assert trained and all(r.iou < 0.9999 for r in trained)
    assert all(not r.feasible and r.violations["min_iou"] > 0 for r in trained)
    assert summary.front == []
