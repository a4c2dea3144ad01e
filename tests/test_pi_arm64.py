"""A Raspberry Pi 4's software for real: Debian bookworm arm64 (emulated), reached over SSH as the README says.

The device (tests/pi_device.py) is an arm64 bookworm userland built by debootstrap from Debian's
packages and run through qemu-user-static: Debian's python3 and python3-numpy, onnxruntime's
aarch64 wheel from PyPI in ``~/optiseg-venv``, and the device's own sshd on 127.0.0.1. The test
follows "Preparing a Raspberry Pi" on the user's side: the host key is refused until
``optiseg device trust`` shows the fingerprint the device's own ``ssh-keygen -lf`` prints and the
user answers y; then ``optiseg device check`` and ``optiseg bench`` with
examples/devices/raspberry-pi-4.yaml (host, port, key and known_hosts pointed at the emulated Pi).
Latency figures mean nothing under emulation: the test checks the path and the device's facts.

The first run builds the rootfs (many minutes; cached in $OPTISEG_PI_ROOTFS, default
/var/cache/optiseg-pi-rootfs); later runs reuse it. Missing tools fail the test with the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO_ROOT, run_cli

import pi_device

pytestmark = pytest.mark.slow

DEBIAN_NUMPY = "1.24.2"  # bookworm's python3-numpy


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    started = time.monotonic()
    try:
        device = pi_device.start_pi(tmp_path_factory.mktemp("pi"))
    except pi_device.PiDeviceError as exc:
        pytest.fail(f"cannot build or start the emulated Raspberry Pi: {exc}", pytrace=False)
    print(f"emulated Pi up on port {device.port} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    yield device
    device.stop()
    assert not pi_device._mounts_under(device.folder), "a mount of the emulated Pi outlived it"


def _cli_with_answer(answer: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """`optiseg ARGS` with ANSWER typed on its standard input."""
    return subprocess.run([sys.executable, "-m", "optiseg", *args], input=answer, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env, "COLUMNS": "200"})  # fmt: skip


@pytest.mark.timeout(3 * 3600)  # includes building the rootfs on a cold cache
def test_emulated_pi_is_trusted_checked_and_benched_over_ssh(pi, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    known_hosts = tmp_path / "known_hosts"
    (tmp_path / "ssh_config").write_text("")
    # The README's device file for a Pi, pointed at this one (a Pi owner edits host the same way).
    config = yaml.safe_load((REPO_ROOT / "examples" / "devices" / "raspberry-pi-4.yaml").read_text())
    section = config["device"]
    assert (section["user"], section["python"]) == (pi.user, pi.python), "the example no longer fits a Pi"
    section.update(
        host=pi.host, port=pi.port, key_file=str(pi.client_key), known_hosts=str(known_hosts),
        ssh_config=str(tmp_path / "ssh_config"), connect_timeout=60,
        measure={"threads": 1, "warmup": 1, "min_runs": 5, "min_seconds": 0},
    )  # fmt: skip
    device_yaml = tmp_path / "raspberry-pi-4.yaml"
    device_yaml.write_text(yaml.safe_dump(config))

    # Never trusted silently: an unknown host key is refused with the command that records it.
    refused = run_cli("device", "check", str(device_yaml), env=env, timeout=300)
    assert refused.returncode != 0 and "SHA256:" in refused.stderr, refused.stdout + refused.stderr
    assert "optiseg device trust" in refused.stderr and "Traceback" not in refused.stderr
    assert not known_hosts.exists()

    # `optiseg device trust` shows what `ssh-keygen -lf` prints on the device; the user answers y.
    trusted = _cli_with_answer("y\n", "device", "trust", str(device_yaml), env=env)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    device_prints = pi.host_key_fingerprints()
    assert any(fingerprint in trusted.stdout for fingerprint in device_prints), (trusted.stdout, device_prints)
    assert known_hosts.read_text().startswith(f"[127.0.0.1]:{pi.port} ")

    check = run_cli("device", "check", str(device_yaml), "--json", env=env, timeout=600)
    assert check.returncode == 0, check.stdout + check.stderr + "\nthe device's sshd log:\n" + pi.log_tail()
    report = json.loads(check.stdout)
    assert report["ok"] is True and len(report["devices"]) == 1, report
    (device,) = report["devices"]
    facts = device["facts"]
    assert device["problems"] == [], device
    assert facts["machine"] == "aarch64", facts
    assert facts["onnxruntime_version"] == pi_device.ONNXRUNTIME, facts
    assert facts["numpy_version"] == DEBIAN_NUMPY, facts  # Debian's python3-numpy, seen through the venv
    assert facts["python_version"].startswith("3.11"), facts  # bookworm's python3

    model = tmp_path / "tiny.onnx"
    export = run_cli("export", "--model", "fastscnn", "--knobs", "a=0.125,t=2,r=1,pp=0", "--resolution", "64",
                     "-o", str(model), env=env)  # fmt: skip
    assert export.returncode == 0 and model.is_file(), export.stderr

    bench = run_cli("bench", str(model), "--config", str(device_yaml), "--json", env=env, timeout=900)
    assert bench.returncode == 0, bench.stdout + bench.stderr + "\nthe device's sshd log:\n" + pi.log_tail()
    result = json.loads(bench.stdout)
    assert result["device"] == section["name"] and result["model"] == str(model)
    for key in ("median_ms", "mean_ms", "p90_ms", "std_ms", "min_ms", "max_ms", "session_ms", "loop_s", "wall_s", "fps"):
        assert isinstance(result[key], (int, float)) and result[key] >= 0, (key, result)
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"] and result["median_ms"] > 0
    assert result["runs"] >= 5 and result["warmup"] == 1 and result["threads"] == 1
    assert result["device_key"].startswith(f"ssh:pi@127.0.0.1:{pi.port}"), result["device_key"]
    assert len(result["model_sha256"]) == 64
    assert result["facts"]["machine"] == "aarch64", result["facts"]
    assert result["facts"]["onnxruntime_version"] == pi_device.ONNXRUNTIME
    assert result["facts"]["numpy_version"] == DEBIAN_NUMPY
