"""INT8 through the search: every precision on one front, measured before training, resumed after SIGKILL, deployed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from _modes import SAMPLED_MODES
import yaml
from optuna.trial import TrialState

from optiseg import records
from optiseg.layout import StudyLayout
from optiseg.records import read_record
from test_search_e2e import FAST_MEASURE, data_root, load_study  # noqa: F401  (data_root is a fixture)

pytestmark = pytest.mark.slow



def make_config(folder: Path, data_root: Path, name: str, **changes) -> Path:
    config = {
        "study": name, "model": "fastscnn", "effort": "beginner", "resolution": 64,
        "search_space": {"resolution": [64], "a": [0.25], "precision": ["fp32", "int8"]},
        "data": {"root": str(data_root)}, "training": {"epochs": 2, "batch_size": 4},
        "device": {"kind": "local", "measure": FAST_MEASURE}, "budget": {"n_trials": 1},
        "quantization": {"calibration_images": 4}, "output": str(folder / "runs"),
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_one_training_gives_a_front_with_both_precisions_and_deploys_int8(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "both")
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["complete"] == 2 and summary["counts"]["networks_trained"] == 1  # budget 1 network

    trials = [read_record(t) for t in load_study(tmp_path, "both").trials]
    by_precision = {r.precision: r for r in trials if r.status == "complete"}
    assert set(by_precision) == {"fp32", "int8"}
    fp32, int8 = by_precision["fp32"], by_precision["int8"]
    assert fp32.candidate == int8.candidate and fp32.plan_key != int8.plan_key
    assert [r.trained for r in (fp32, int8)].count(True) == 1  # the second plan cost no training
    assert int8.evaluation.details["iou_source"].startswith("the INT8 ONNX model run by onnxruntime")
    assert 0.0 <= int8.iou <= 1.0 and int8.latency_ms > 0 and int8.latency["model_sha256"] != fp32.latency["model_sha256"]
    assert int8.onnx_mb < fp32.onnx_mb and "float_ops" in int8.evaluation.details["quantization"]
    folder = StudyLayout(tmp_path / "runs" / "both").network(int8.candidate)
    meta = {p.key: p.value for p in onnx.load(str(folder.plan("int8").model)).metadata_props}
    assert meta["precision"] == "int8" and json.loads(meta["quantization"])["calibration_images"] == 4
    assert "float_ops" in meta
    assert (folder.train / "train.log").read_text().count("training fastscnn") == 1

    front = json.loads(cli("front", str(tmp_path / "runs" / "both"), "--all", "--json").stdout)
    assert {row["precision"] for row in front["trials"] if row["status"] == "complete"} == {"fp32", "int8"}
    # training compute: epochs x training images x MACs, once for the network whatever its plans
    epochs, images = fp32.metrics["epochs_run"], len(list((data_root / "train" / "images").iterdir()))
    assert fp32.metric("train_compute") == int8.metric("train_compute") == epochs * images * fp32.macs
    assert front["training"] == {"networks": 1, "compute_macs": fp32.metric("train_compute"), "seconds": fp32.metric("train_s")}
    assert summary["counts"]["training_compute_macs"] == fp32.metric("train_compute")
    only_int8 = json.loads(cli("front", str(tmp_path / "runs" / "both"), "--all", "--json", "--mode", "int8").stdout)
    assert {row["precision"] for row in only_int8["trials"]} == {"int8"}

    out = tmp_path / "deploy"
    deployed = cli("deploy", str(tmp_path / "runs" / "both"), "--trial", str(int8.number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    shipped = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert shipped["precision"] == "int8" and "This model is INT8" in (out / "README.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["precision"] == "int8"

    again = cli("search", str(config))
    assert again.returncode == 0 and len(load_study(tmp_path, "both").trials) == len(trials)  # nothing rerun


# The config that makes a study deploy one mode only; a new mode adds its line (the test fails until it does).
ONE_MODE = {
    "device": {"search_space": {"resolution": [64], "a": [0.25], "precision": ["fp32"]}},
    "int8": {"search_space": {"resolution": [64], "a": [0.25], "precision": ["int8"]}},
    "split": {"search_space": {"resolution": [64], "a": [0.25], "cut": ["bottlenecks1"], "bits": [8]}, "mode": ["split"],
              "server": {"kind": "local", "measure": FAST_MEASURE}, "link": {"uplink_mbps": 100}},
    "early_exit": {"search_space": {"resolution": [64], "a": [0.25], "exits": [1], "threshold": [0.9]}, "mode": ["early_exit"]},
    "early_exit_split": {"search_space": {"resolution": [64], "a": [0.25], "exits": [1], "threshold": [0.9], "bits": [8]},
                         "mode": ["early_exit_split"], "server": {"kind": "local", "measure": FAST_MEASURE}, "link": {"uplink_mbps": 100}},
}


@pytest.mark.parametrize("mode", SAMPLED_MODES)
def test_every_mode_measures_before_it_trains(tmp_path, data_root, mode):
    from optiseg.config import load_config
    from optiseg.search import run_search

    config = make_config(tmp_path, data_root, f"gate-{mode}", **ONE_MODE[mode], constraints={"max_latency_ms": 0.0001})
    summary = run_search(load_config(config), quiet=True)
    assert summary.counts["too_slow"] == 1 and summary.counts["complete"] == 0
    trial = read_record(load_study(tmp_path, f"gate-{mode}").trials[0])
    assert trial.mode == mode and trial.status == "too_slow" and trial.latency_ms > 0.0001 and trial.iou is None
    assert trial.violations["max_latency_ms"] > 0
    assert not StudyLayout(tmp_path / "runs" / f"gate-{mode}").network(trial.candidate).train.exists()


def test_a_constraint_on_another_metric_gates_each_plan(tmp_path, data_root):
    """``max_onnx_mb`` between the INT8 and FP32 sizes: the FP32 plan is too big, the INT8 plan trains the network."""
    from optiseg.config import load_config
    from optiseg.export import export_onnx
    from optiseg.network import Network
    from optiseg.search import run_search

    network = Network.create("fastscnn", {"a": 0.25}, 64, num_classes=1)
    fp32_mb = export_onnx(network.build(), tmp_path / "probe.onnx", network).size_mb
    config = make_config(tmp_path, data_root, "small", constraints={"max_onnx_mb": round(fp32_mb * 0.8, 4)})
    summary = run_search(load_config(config), quiet=True)
    trials = {r.precision: r for r in map(read_record, load_study(tmp_path, "small").trials)}
    assert trials["fp32"].status == "too_slow" and trials["fp32"].violations["max_onnx_mb"] > 0
    assert trials["int8"].status == "complete" and trials["int8"].feasible and trials["int8"].trained
    assert [r.precision for r in summary.front] == ["int8"]


def test_sigkill_with_the_int8_plan_half_done_redoes_nothing(tmp_path, data_root):
    config = make_config(tmp_path, data_root, "killed", quantization={"calibration_images": 8, "method": "entropy"})
    command = [sys.executable, "-m", "optiseg", "search", str(config), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    layout = StudyLayout(tmp_path / "runs" / "killed")
    deadline = time.monotonic() + 300
    try:
        while not list(layout.candidates.glob("*/plans/int8/cost.json")):  # the INT8 plan is measured; its quality is not
            assert process.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "the INT8 plan never started"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    plan_folder = next(layout.candidates.glob("*/plans/int8"))
    assert not (plan_folder / "quality.json").exists(), "killed too late to test a half-done plan"
    kept = {name: (plan_folder / name).stat().st_mtime_ns for name in ("untrained.onnx", "cost.json")}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    study = load_study(tmp_path, "killed")
    complete = [read_record(t) for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(r.precision for r in complete) == ["fp32", "int8"]
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and read_record(interrupted[0]).status == "interrupted"
    assert any(records.retry_of(t) == interrupted[0].number for t in study.trials if t.state == TrialState.COMPLETE)
    assert {name: (plan_folder / name).stat().st_mtime_ns for name in kept} == kept  # not quantized or measured again
    assert (plan_folder.parent.parent / "train" / "train.log").read_text().count("training fastscnn") == 1
