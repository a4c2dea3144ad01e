"""Faults of the device itself, each made with a real mechanism, over a real sshd and locally.

A timing process killed by a signal, a disk that is full or read-only (a real tmpfs as the device's
temporary folder), an interpreter that prints something other than the result, a search killed with
SIGKILL in the middle of a measurement, and a device whose onnxruntime is missing or too old.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd import executable, mounted_tmpfs, runner_for, start_sshd

from optiseg.devices._script import RUNNER_FILES
from optiseg.config.device import DeviceConfig
from optiseg.devices import LocalRunner
from optiseg.errors import DeviceError

pytest_plugins = ("sshd",)

FAST = {"warmup": 1, "min_runs": 5, "min_seconds": 0, "threads": 1}




def python_with_path(tmp_path: Path, folder: Path) -> Path:
    """A device-side `python` that is this Python with ``folder`` first on its path."""
    return executable(tmp_path / "python-wrapper", f'#!/bin/sh\nPYTHONPATH={folder} exec {sys.executable} "$@"\n')


def sitecustomize(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    return folder


def crash_when_measuring(tmp_path: Path, signame: str) -> tuple[Path, Path]:
    """A sitecustomize that, in a measuring run (not --facts), writes to stderr and kills its process with ``signame``."""
    log = tmp_path / "measuring-runs"
    folder = sitecustomize(
        tmp_path,
        "import os, signal, sys\n"
        "if '--facts' not in sys.argv and any(a.endswith('.onnx') for a in sys.argv):\n"
        f"    open({str(log)!r}, 'a').write('run\\n')\n"
        "    sys.stderr.write('libonnxruntime: illegal instruction in MlasInit\\n'); sys.stderr.flush()\n"
        f"    os.kill(os.getpid(), signal.{signame})\n",
    )
    return folder, log


def fake_onnxruntime(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "fake-ort"
    (folder / "onnxruntime").mkdir(parents=True)
    (folder / "onnxruntime" / "__init__.py").write_text(body)
    return folder


HINTS = {"SIGKILL": "memory", "SIGSEGV": "onnxruntime"}


# -- a device-side process killed by a signal ----------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGSEGV"])
def test_a_timing_process_killed_by_a_signal_is_named_over_ssh_and_not_retried(sshd, tmp_path, matmul_onnx, signame):
    folder, log = crash_when_measuring(tmp_path, signame)
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(python_with_path(tmp_path, folder)))
    with runner_for(section) as runner:
        with pytest.raises(DeviceError) as caught:
            runner.measure(matmul_onnx)
        assert runner.reconnects == 0
    message = str(caught.value)
    assert f"killed by {signame}" in message and "127.0.0.1" in message
    assert "illegal instruction in MlasInit" in message  # the device's stderr
    assert HINTS[signame] in caught.value.hint
    assert "connection was lost" not in message and "attempts" not in message
    assert log.read_text() == "run\n"  # not retried: it would die the same way
    assert caught.value.retryable  # the device is at fault, not the candidate


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGSEGV"])
def test_a_timing_process_killed_by_a_signal_is_named_locally(tmp_path, matmul_onnx, monkeypatch, signame):
    folder, log = crash_when_measuring(tmp_path, signame)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    with pytest.raises(DeviceError) as caught:
        LocalRunner(DeviceConfig(measure=FAST)).measure(matmul_onnx)
    message = str(caught.value)
    assert f"killed by {signame}" in message and "this machine" in message
    assert "illegal instruction in MlasInit" in message
    assert HINTS[signame] in caught.value.hint
    assert caught.value.retryable


# -- full and read-only disks --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp_sshd(tmp_path_factory):
    """An sshd whose sessions use ``server.device_tmp`` as $TMPDIR: the device's temporary folder."""
    folder = tmp_path_factory.mktemp("sshd-tmpdir")
    device_tmp = folder / "device-tmp"
    device_tmp.mkdir()
    try:
        server = start_sshd(folder / "server", (f"SetEnv=TMPDIR={device_tmp}",))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server, device_tmp
    server.stop()


@pytest.fixture
def device_disk(tmp_sshd, tmp_path):
    """``device_disk(size, read_only=False)``: mount a tmpfs as the device's temporary folder; a device: mapping."""
    server, device_tmp = tmp_sshd
    with contextlib.ExitStack() as mounts:

        def mount(size: str, read_only: bool = False) -> dict:
            try:
                mounts.enter_context(mounted_tmpfs(device_tmp, size, read_only=read_only))
            except RuntimeError as exc:
                pytest.fail(str(exc), pytrace=False)
            return server.device(server.write_known_hosts(tmp_path / "kh"))

        yield mount
        left = sorted(p.name for p in device_tmp.iterdir() if p.name.startswith("optiseg.") or p.name.endswith(".part"))
        assert not left, f"left behind on the device: {left}"


def fill(folder: Path, leave_bytes: int) -> None:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "ballast", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(free - leave_bytes, 0))


def test_a_disk_too_full_for_measurements_is_refused_at_connect(device_disk, tmp_sshd):
    section = device_disk("1m")
    runner = runner_for(section)
    with pytest.raises(DeviceError) as caught:
        runner.connect()
    runner.close()
    message = str(caught.value)
    assert "MB free in" in message and str(tmp_sshd[1]) in message and "127.0.0.1" in message
    assert caught.value.retryable


def test_a_disk_that_fills_up_fails_the_upload_as_no_space_and_leaves_nothing(device_disk, tmp_sshd, tmp_path, make_onnx):
    big = make_onnx(tmp_path / "big.onnx", 1024, 512)  # 2 MB
    section = device_disk("256m")
    with runner_for(section) as runner:
        runner.connect()
        workdir = Path(runner.workdir)
        fill(tmp_sshd[1], 256 * 1024)  # someone else fills the disk, leaving 0.25 MB
        with pytest.raises(DeviceError) as caught:
            runner.measure(big)
        assert runner.reconnects == 0 and runner.uploads == len(RUNNER_FILES) + 1  # the scripts, then the model once: no retry
        assert sorted(p.name for p in workdir.iterdir()) == sorted(RUNNER_FILES)  # no .part file
        (tmp_sshd[1] / "ballast").unlink()
    message = str(caught.value)
    assert "no space left on the device" in message and f"MB free in {workdir}" in message
    assert "size mismatch" not in message and "attempts" not in message
    assert caught.value.retryable


def test_a_read_only_temporary_folder_is_named_at_connect(device_disk, tmp_sshd):
    runner = runner_for(device_disk("1m", read_only=True))
    with pytest.raises(DeviceError) as caught:
        runner.connect()
    runner.close()
    message = str(caught.value)
    assert "cannot make a working folder" in message and "Read-only file system" in message
    assert "TMPDIR" in caught.value.hint


# -- an interpreter that prints something else ---------------------------------------------------


def test_an_interpreter_that_prints_something_else_is_shown_with_the_likely_cause(sshd, tmp_path):
    launcher = executable(
        tmp_path / "python3",
        "#!/bin/sh\necho 'Welcome to Acme Python Launcher 2.1'\necho 'no default interpreter: run acme-py --setup'\nexit 0\n",
    )
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(launcher))
    with runner_for(section) as runner:
        with pytest.raises(DeviceError) as caught:
            runner.connect()
    message = str(caught.value)
    assert "Welcome to Acme Python Launcher 2.1" in message and "acme-py --setup" in message
    assert "nothing on stderr" not in message
    assert "device.python" in caught.value.hint and "sitecustomize" in caught.value.hint


def test_a_banner_printed_by_a_local_sitecustomize_is_shown(tmp_path, matmul_onnx, monkeypatch):
    folder = sitecustomize(tmp_path, "import os\nprint('*** corporate python: telemetry enabled ***', flush=True)\nos._exit(0)\n")
    monkeypatch.setenv("PYTHONPATH", str(folder))
    with pytest.raises(DeviceError) as caught:
        LocalRunner(DeviceConfig(measure=FAST)).measure(matmul_onnx)
    assert "*** corporate python: telemetry enabled ***" in str(caught.value)


# -- the search killed during a measurement ------------------------------------------------------

CHILD = """
import json, sys
from optiseg.config.device import DeviceConfig
from optiseg.devices import make_runner
runner = make_runner(DeviceConfig.model_validate(json.loads(sys.argv[1])))
runner.connect()
print("connected", flush=True)
runner.measure(sys.argv[2])
"""


def timing_processes(marker: str) -> list[int]:
    """Live processes running measure_onnx.py with ``marker`` among their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and any(w.endswith(b"measure_onnx.py") for w in words) and marker.encode() in words:
            found.append(int(entry.name))
    return found


def kill_the_search_while_it_measures(section: dict, model: Path, marker: str) -> None:
    search = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(section), str(model)], stdout=subprocess.PIPE, text=True)
    timing: list[int] = []
    try:
        assert search.stdout.readline().strip() == "connected"
        deadline = time.monotonic() + 30
        while not timing and time.monotonic() < deadline:
            timing = timing_processes(marker)
            time.sleep(0.1)
        assert timing, "the measurement never started"
        time.sleep(1.0)  # well inside the timed loop
        search.send_signal(signal.SIGKILL)
        search.wait(timeout=10)
        deadline = time.monotonic() + 5
        while timing_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not timing_processes(marker), "the timing process outlived the search"
    finally:
        search.kill()
        search.wait()
        for pid in timing_processes(marker):  # only the processes this test started (their marker is its own)
            os.kill(pid, signal.SIGKILL)


def test_the_timing_process_ends_with_a_killed_search_locally(matmul_onnx):
    section = {"kind": "local", "command_timeout": 600, "measure": {**FAST, "min_seconds": 301.0}}
    kill_the_search_while_it_measures(section, matmul_onnx, "301.0")


def test_the_timing_process_ends_with_a_killed_search_over_ssh(ssh_device, matmul_onnx):
    section = {**ssh_device, "command_timeout": 600, "measure": {**FAST, "min_seconds": 302.0}}
    kill_the_search_while_it_measures(section, matmul_onnx, "302.0")


# -- checked at connect time ---------------------------------------------------------------------


def test_a_device_without_onnxruntime_is_caught_at_connect(sshd, tmp_path):
    folder = fake_onnxruntime(tmp_path, "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    python = python_with_path(tmp_path, folder)
    runner = runner_for(sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(python)))
    with pytest.raises(DeviceError) as caught:
        runner.connect()
    assert runner.workdir is None  # nothing left on the device
    runner.close()
    message = str(caught.value)
    assert f"127.0.0.1:{sshd.port}" in message and "onnxruntime" in message
    assert f"{python} -m pip install onnxruntime" in caught.value.hint
    assert caught.value.retryable


def test_an_onnxruntime_too_old_for_our_opset_is_caught_at_connect(sshd, tmp_path):
    folder = fake_onnxruntime(tmp_path, "__version__ = '1.10.0'\n")
    runner = runner_for(sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(python_with_path(tmp_path, folder))))
    with pytest.raises(DeviceError) as caught:
        runner.connect()
    runner.close()
    assert "onnxruntime 1.10.0 cannot read" in str(caught.value) and "pip install -U onnxruntime" in str(caught.value)


def test_a_local_python_without_onnxruntime_is_caught_at_connect(tmp_path, monkeypatch):
    folder = fake_onnxruntime(tmp_path, "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    monkeypatch.setenv("PYTHONPATH", str(folder))
    with pytest.raises(DeviceError, match="onnxruntime"):
        LocalRunner(DeviceConfig(measure=FAST)).connect()


def test_a_model_onnxruntime_cannot_load_is_final_for_the_candidate(ssh_device, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["y"], domain="com.example")],
        "unloadable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "unloadable.onnx"
    onnx.save(model, str(path))
    with runner_for(ssh_device) as runner:
        with pytest.raises(DeviceError, match="cannot load") as caught:
            runner.measure(path)
    assert caught.value.retryable is False
