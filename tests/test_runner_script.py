"""runners/measure_onnx.py: the device-side script, run as a device runs it (a fresh Python process)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ("sshd",)

SCRIPT = Path(__file__).resolve().parents[1] / "runners" / "measure_onnx.py"
FAST = ["--warmup", "1", "--min-runs", "5", "--min-seconds", "0", "--threads", "1"]


def run_script(*args: str, env: dict | None = None) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stdout, got {done.stdout!r} (stderr {done.stderr!r})"
    return done.returncode, json.loads(lines[0])


@pytest.fixture(scope="module")
def no_onnxruntime(tmp_path_factory) -> dict:
    """An environment whose Python cannot import onnxruntime (a package that raises ModuleNotFoundError)."""
    shim = tmp_path_factory.mktemp("shim")
    (shim / "onnxruntime").mkdir()
    (shim / "onnxruntime" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n"
    )
    import os

    return {**os.environ, "PYTHONPATH": str(shim)}


def test_measures_and_prints_the_statistics(matmul_onnx):
    status, payload = run_script(str(matmul_onnx), *FAST)
    assert status == 0 and payload["ok"] is True
    assert payload["runs"] >= 5 and payload["warmup"] == 1 and payload["threads"] == 1
    assert payload["min_ms"] <= payload["median_ms"] <= payload["p90_ms"] <= payload["max_ms"]
    assert payload["min_ms"] <= payload["mean_ms"] <= payload["max_ms"]
    assert payload["std_ms"] >= 0 and payload["session_ms"] > 0
    facts = payload["facts"]
    assert facts["onnxruntime_version"] and facts["numpy_version"] and facts["cores"] >= 1
    assert facts["python_version"] == ".".join(map(str, sys.version_info[:3]))


def test_runs_until_both_the_count_and_the_time_are_reached(matmul_onnx):
    _, by_time = run_script(str(matmul_onnx), "--warmup", "0", "--min-runs", "1", "--min-seconds", "0.3")
    assert by_time["loop_s"] >= 0.3 and by_time["runs"] > 1
    _, by_count = run_script(str(matmul_onnx), "--warmup", "0", "--min-runs", "40", "--min-seconds", "0")
    assert by_count["runs"] == 40


def test_threads_default_to_the_usable_cores(matmul_onnx):
    import os

    _, payload = run_script(str(matmul_onnx), "--min-runs", "1", "--min-seconds", "0", "--warmup", "0")
    assert payload["threads"] == len(os.sched_getaffinity(0))


def test_facts_mode_reports_versions_disk_and_tools(tmp_path):
    status, payload = run_script("--facts", "--disk-path", str(tmp_path))
    assert status == 0 and payload["ok"] is True
    assert payload["missing"] == [] and payload["onnxruntime_version"]
    assert payload["disk_path"] == str(tmp_path) and payload["free_disk_mb"] > 0
    assert set(payload["tools"]) == {"timeout", "sha256sum", "mktemp"}
    assert {"cpu_model", "governor", "temperature_c", "throttled", "boot_id", "in_venv"} <= set(payload)


def test_missing_onnxruntime_is_reported_in_one_line(matmul_onnx, no_onnxruntime):
    status, payload = run_script(str(matmul_onnx), *FAST, env=no_onnxruntime)
    assert status == 3 and payload["ok"] is False
    assert payload["kind"] == "missing_modules" and payload["missing"] == ["onnxruntime"]
    assert "in_venv" in payload and "externally_managed" in payload

    status, facts = run_script("--facts", env=no_onnxruntime)
    assert status == 0 and facts["missing"] == ["onnxruntime"] and facts["numpy_version"]


def test_unreadable_and_missing_models_fail_in_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    status, payload = run_script(str(bad), *FAST)
    assert status == 3 and payload["kind"] == "model" and "cannot load" in payload["error"]
    status, payload = run_script(str(tmp_path / "absent.onnx"), *FAST)
    assert status == 3 and payload["kind"] == "model" and "does not exist" in payload["error"]


def _model_with_input_shape(path: Path, shape: list) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_free_batch_dimension_is_one_and_other_free_dimensions_are_refused(tmp_path):
    status, payload = run_script(str(_model_with_input_shape(tmp_path / "batch.onnx", ["N", 3, 8, 8])), *FAST)
    assert status == 0 and payload["ok"] is True
    status, payload = run_script(str(_model_with_input_shape(tmp_path / "free.onnx", [1, 3, "H", 8])), *FAST)
    assert status == 3 and "fixed input shape" in payload["error"]


def test_statistics_agree_with_numpy():
    from optiseg._runners import measure_onnx

    times = list(np.random.default_rng(1).gamma(2.0, 3.0, size=101)) + [50.0]
    stats = measure_onnx.statistics(times)
    assert stats["median_ms"] == pytest.approx(np.median(times))
    assert stats["p90_ms"] == pytest.approx(np.percentile(times, 90))
    assert stats["mean_ms"] == pytest.approx(np.mean(times))
    assert stats["std_ms"] == pytest.approx(np.std(times, ddof=1))
    assert stats["runs"] == 102 and stats["max_ms"] == 50.0


def test_imports_only_the_standard_library_numpy_and_onnxruntime():
    siblings = {path.stem for path in SCRIPT.parent.glob("*.py")}
    tree = ast.parse(SCRIPT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"tensor_codec"}, imported  # optiseg would show up here
    assert "tensor_codec" in siblings  # shipped next to it (and uploaded with it)
    # numpy and onnxruntime are imported by name in import_runtime(), so that their absence can be reported
    assert '("numpy", "onnxruntime")' in SCRIPT.read_text()


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPT.parent.glob("*.py") if p.name != "__init__.py"))
def test_every_device_side_script_needs_only_numpy_onnxruntime_pillow_and_its_siblings(script):
    siblings = {path.stem for path in SCRIPT.parent.glob("*.py")}
    imported = set()
    for node in ast.walk(ast.parse((SCRIPT.parent / script).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) - {"numpy", "onnxruntime", "PIL"} - siblings == set(), imported
