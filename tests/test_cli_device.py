"""`optiseg device check|trust` and `optiseg bench`, run as a user runs them, against the real sshd."""

from __future__ import annotations

import json
import sys

import onnxruntime
import pytest
import yaml

pytest_plugins = ("sshd",)


@pytest.fixture
def env(tmp_path):
    """Device locks under the test's own folder, not ~/.cache."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def write_config(path, section: dict):
    path.write_text(yaml.safe_dump({"device": section}))
    return path


def assert_clean_failure(done, status: int = 1):
    assert done.returncode == status, done.stderr
    assert "error: " in done.stderr and "Traceback" not in done.stderr


def test_bench_locally_prints_json(cli, tiny_onnx, env):
    done = cli("bench", str(tiny_onnx), "--runs", "5", "--warmup", "1", "--min-seconds", "0", "--threads", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device"] == "local" and result["runs"] >= 5 and result["threads"] == 1
    assert result["facts"]["onnxruntime_version"] == onnxruntime.__version__
    assert result["median_ms"] > 0 and result["fps"] == pytest.approx(1000 / result["median_ms"])


def test_bench_over_ssh_from_a_config_prints_a_table(cli, sshd, ssh_device, tiny_onnx, tmp_path, env):
    config = write_config(tmp_path / "pi.yaml", {**ssh_device, "name": "testpi"})
    done = cli("bench", str(tiny_onnx), "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    assert "on testpi" in done.stdout and "median" in done.stdout and "5 timed" in done.stdout


def test_bench_over_ssh_with_a_device_name(cli, sshd, tmp_path, tiny_onnx, env):
    known_hosts = sshd.write_known_hosts(tmp_path / "kh")
    done = cli(
        "bench", str(tiny_onnx), "--device", f"{sshd.user}@127.0.0.1:{sshd.port}",
        "--known-hosts", str(known_hosts), "--key-file", str(sshd.client_key), "--python", sys.executable,
        "--ssh-config", str(sshd.folder / "empty_ssh_config"),
        "--runs", "3", "--warmup", "0", "--min-seconds", "0", "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device_key"] == f"ssh:{sshd.user}@127.0.0.1:{sshd.port}:threads=auto" and result["runs"] == 3


def test_bench_refuses_an_unknown_host_with_the_trust_command(cli, sshd, tmp_path, tiny_onnx, env):
    config = write_config(tmp_path / "pi.yaml", sshd.device(tmp_path / "no_known_hosts"))
    done = cli("bench", str(tiny_onnx), "--config", str(config), env=env)
    assert_clean_failure(done)
    assert "SHA256:" in done.stderr and f"optiseg device trust 127.0.0.1:{sshd.port}" in done.stderr


def test_bench_refuses_bad_input_with_status_2(cli, tmp_path, env):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx")
    assert_clean_failure(cli("bench", str(corrupt), env=env), status=2)
    assert_clean_failure(cli("bench", str(corrupt), "--device", "pi@host:99999", env=env), status=2)
    done = cli("bench", str(corrupt), "--device", "local", "--config", "x.yaml", env=env)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_check_reports_a_ready_device(cli, ssh_device, tmp_path, env):
    config = write_config(tmp_path / "pi.yaml", ssh_device)
    done = cli("device", "check", str(config), "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    facts = report["devices"][0]["facts"]
    assert facts["onnxruntime_version"] == onnxruntime.__version__ and facts["free_disk_mb"] > 0
    assert facts["python_version"] and facts["cores"] >= 1 and "governor" in facts

    table = cli("device", "check", "local", env=env)
    assert table.returncode == 0 and "onnxruntime" in table.stdout and "ready to measure" in table.stdout


def test_check_names_the_fix_for_a_device_without_onnxruntime(cli, sshd, ssh_device, tmp_path, env):
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shim.parent} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    config = write_config(tmp_path / "pi.yaml", {**ssh_device, "python": str(python)})
    done = cli("device", "check", str(config), "--json", env=env)
    assert done.returncode == 1, done.stderr
    device = json.loads(done.stdout)["devices"][0]
    assert device["ok"] is False and device["facts"]["missing"] == ["onnxruntime"]
    assert f"{python} -m pip install onnxruntime" in device["problems"][0]["fix"]

    missing = write_config(tmp_path / "gone.yaml", {**ssh_device, "python": "/nonexistent/python3"})
    done = cli("device", "check", str(missing), env=env)
    assert done.returncode == 1 and "not found" in done.stdout and "apt-get install -y python3" in done.stdout


def test_trust_asks_then_records_the_key(cli, sshd, tmp_path, env):
    known_hosts = tmp_path / "known_hosts"
    config = write_config(tmp_path / "pi.yaml", sshd.device(known_hosts, host="localhost"))

    declined = cli("device", "trust", str(config), env=env)  # stdin is empty: no answer is no
    assert_clean_failure(declined, status=2)
    assert "SHA256:" in declined.stdout and not known_hosts.exists()

    accepted = cli("device", "trust", str(config), "--yes", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert f"added [localhost]:{sshd.port} to {known_hosts}" in accepted.stdout  # printed as text, not markup
    assert known_hosts.read_text() == f"[localhost]:{sshd.port} {sshd.host_public_key}\n"

    again = cli("device", "trust", str(config), env=env)
    assert again.returncode == 0 and "already trusted" in again.stdout
    assert cli("device", "check", str(config), env=env).returncode == 0


def test_trust_never_replaces_a_changed_key(cli, sshd, tmp_path, env):
    other = (sshd.folder / "wrong_key.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    before = known_hosts.read_text()
    done = cli("device", "trust", str(write_config(tmp_path / "pi.yaml", sshd.device(known_hosts))), "--yes", env=env)
    assert_clean_failure(done)
    assert "has CHANGED" in done.stderr and known_hosts.read_text() == before


def test_host_options_only_go_with_a_name(cli, tmp_path, env):
    config = write_config(tmp_path / "pi.yaml", {"host": "pi"})
    assert_clean_failure(cli("device", "check", str(config), "--known-hosts", "x", env=env), status=2)
    assert_clean_failure(cli("device", "trust", "local", env=env), status=2)
