"""LocalRunner: a real onnxruntime measurement in a child process, and the result's JSON round trip."""

from __future__ import annotations

import json
import socket
import time

import onnxruntime
import pytest

from optiseg.config.device import DeviceConfig
from optiseg.devices import DeviceFacts, LatencyResult, LocalRunner, Runner, make_runner
from optiseg.errors import DeviceError, UsageError

pytest_plugins = ("sshd",)

FAST = {"warmup": 1, "min_runs": 5, "min_seconds": 0, "threads": 1}


@pytest.fixture
def runner():
    with make_runner(DeviceConfig(measure=FAST)) as runner:
        yield runner


def test_measures_an_exported_model_in_a_child_process(runner, tiny_onnx):
    assert isinstance(runner, LocalRunner) and isinstance(runner, Runner)
    result = runner.measure(tiny_onnx)
    assert result.runs >= 5 and result.warmup == 1 and result.threads == 1
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms <= result.max_ms
    assert result.session_ms > 0 and result.wall_s > result.loop_s
    assert result.device_key == f"local:{socket.gethostname()}:threads=1" == runner.device_key
    assert result.facts.onnxruntime_version == onnxruntime.__version__
    assert result.facts.hostname == socket.gethostname()
    assert result.fps == pytest.approx(1000 / result.median_ms)


def test_the_result_survives_a_json_round_trip(runner, tiny_onnx):
    result = runner.measure(tiny_onnx)
    stored = json.loads(json.dumps(result.to_dict()))
    assert LatencyResult.from_dict(stored) == result
    # Records written by a newer optiseg (extra keys) still load.
    stored["new_figure"] = 1.0
    stored["facts"]["new_fact"] = "x"
    assert LatencyResult.from_dict(stored) == result
    with pytest.raises(TypeError):
        LatencyResult.from_dict({"median_ms": 1.0})
    with pytest.raises(Exception):
        result.median_ms = 0.0  # frozen


def test_device_key_names_threads_and_a_non_default_optimization_level():
    assert LocalRunner(DeviceConfig()).device_key.endswith(":threads=auto")
    key = LocalRunner(DeviceConfig(measure={"threads": 3, "graph_optimization": "basic"})).device_key
    assert key == f"local:{socket.gethostname()}:threads=3:opt=basic"


def test_a_corrupt_model_is_refused_before_anything_runs(runner, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(UsageError, match="bad.onnx is not a valid ONNX model"):
        runner.measure(bad)
    with pytest.raises(UsageError, match="does not exist"):
        runner.measure(tmp_path / "absent.onnx")


def test_a_measurement_past_the_command_timeout_is_killed(matmul_onnx):
    config = DeviceConfig(command_timeout=1, measure={"warmup": 0, "min_runs": 1, "min_seconds": 60})
    started = time.monotonic()
    with pytest.raises(DeviceError, match=r"did not finish within 1 s \(device.command_timeout\)"):
        LocalRunner(config).measure(matmul_onnx)
    assert time.monotonic() - started < 10


def test_check_reports_this_machines_facts(runner):
    report = runner.check()
    facts = report["facts"]
    assert report["shell"] is None and facts["python_found"] and facts["missing"] == []
    assert facts["onnxruntime_version"] == onnxruntime.__version__ and facts["free_disk_mb"] > 0
    DeviceFacts.from_dict(facts)  # the check's facts carry at least what a result's do
