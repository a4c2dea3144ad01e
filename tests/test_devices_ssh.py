"""SSHRunner against a real sshd on 127.0.0.1: the happy path, and each fault made with a real mechanism."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnxruntime
import pytest

from optiseg.devices._script import RUNNER_FILES
from optiseg.config.device import DeviceConfig
from optiseg.devices import open_pool
from optiseg.devices.ssh import SSHRunner
from optiseg.errors import ConfigError, DeviceError, UsageError

from sshd import executable, runner_for

pytest_plugins = ("sshd",)



def fingerprint(public_key_file: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True).stdout.split()[1]


class Proxy:
    """A TCP forwarder to the sshd that can cut its first connection after some bytes, or refuse new ones."""

    def __init__(self, target_port: int, cut_after: int | None = None):
        self.target_port = target_port
        self.cut_after = cut_after
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pump, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        forwarded = 0
        try:
            while data := source.recv(65536):
                forwarded += len(data)
                if limit is not None and forwarded > limit:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut_everything(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close() alone would not
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxied(sshd, tmp_path: Path, proxy: Proxy, **overrides) -> dict:
    known_hosts = tmp_path / "known_hosts_proxy"
    known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_public_key}\n")
    return sshd.device(known_hosts, port=proxy.port, **overrides)


# -- the happy path ------------------------------------------------------------------------------


def test_measures_an_exported_model_and_reuses_the_connection(ssh_device, tiny_onnx, matmul_onnx):
    with runner_for(ssh_device) as runner:
        first = runner.measure(tiny_onnx)
        transport = runner._client.get_transport()
        second = runner.measure(matmul_onnx)
        again = runner.measure(matmul_onnx)
        assert runner._client.get_transport() is transport and runner.reconnects == 0
        assert runner.uploads == len(RUNNER_FILES) + 2  # the scripts, then each model once
        workdir = Path(runner.workdir)
        assert sorted(p.name for p in workdir.iterdir()) == sorted([*RUNNER_FILES, f"model-{second.model_sha256[:16]}.onnx"])
    assert not workdir.exists()  # close() removed the runner's folder on the device

    assert first.runs >= 5 and first.threads == 1 and first.warmup == 1
    assert 0 < first.min_ms <= first.median_ms <= first.p90_ms <= first.max_ms
    assert first.device_key == f"ssh:{ssh_device['user']}@127.0.0.1:{ssh_device['port']}:threads=1"
    assert first.facts.onnxruntime_version == onnxruntime.__version__ and first.facts.boot_id
    assert again.model_sha256 == second.model_sha256 != first.model_sha256


def test_every_remote_argument_is_quoted(sshd, tmp_path, tiny_onnx):
    odd_python = executable(tmp_path / "py th'on $(x)", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    odd_model = tmp_path / "it's a \"model\" $(touch pwned) `x`.onnx"
    odd_model.write_bytes(tiny_onnx.read_bytes())
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(odd_python))
    with runner_for(section) as runner:
        assert runner.measure(odd_model).runs >= 5
    assert not (Path.home() / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_honours_an_ssh_config_alias(sshd, tmp_path, matmul_onnx):
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host testdev\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), host="testdev", ssh_config=str(ssh_config))
    for key in ("port", "user", "key_file"):
        del section[key]
    with runner_for(section) as runner:
        assert runner.target.where == f"{sshd.user}@127.0.0.1:{sshd.port} (testdev)"
        assert runner.measure(matmul_onnx).runs >= 5


def test_honours_a_proxy_command(sshd, tmp_path, matmul_onnx):
    relay = tmp_path / "relay.py"
    relay.write_text(
        "import os, socket, sys, threading\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
        "def up():\n"
        "    while data := os.read(0, 65536):\n"
        "        s.sendall(data)\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "threading.Thread(target=up, daemon=True).start()\n"
        "while data := s.recv(65536):\n"
        "    os.write(1, data)\n"
    )
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host 127.0.0.1\n  ProxyCommand {sys.executable} {relay} %h %p\n")
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), ssh_config=str(ssh_config))
    with runner_for(section) as runner:
        assert runner.target.proxy_command.endswith(f"127.0.0.1 {sshd.port}")
        assert runner.measure(matmul_onnx).runs >= 5


def test_a_pool_measures_on_its_devices_concurrently(sshd, tmp_path, matmul_onnx):
    known_hosts = tmp_path / "kh"
    known_hosts.write_text(sshd.known_hosts_line + f"[localhost]:{sshd.port} {sshd.host_public_key}\n")
    section = sshd.device(known_hosts)
    del section["host"]
    section["pool"] = [{"host": "127.0.0.1"}, {"host": "localhost"}]
    keys, errors = [], []
    with open_pool(DeviceConfig.model_validate(section), lock_dir=tmp_path / "locks") as pool:
        barrier = threading.Barrier(2)

        def measure() -> None:
            try:
                with pool.acquire() as runner:
                    barrier.wait(timeout=30)  # both devices are lent at the same time
                    keys.append(runner.measure(matmul_onnx).device_key)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=measure) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    assert sorted(keys) == sorted(f"ssh:{sshd.user}@{h}:{sshd.port}:threads=1" for h in ("127.0.0.1", "localhost"))


# -- host keys and login -------------------------------------------------------------------------


def test_an_unknown_host_is_refused_with_its_fingerprint_and_the_trust_command(sshd, tmp_path, matmul_onnx):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(DeviceError) as caught:
        runner_for(sshd.device(empty)).measure(matmul_onnx)
    message = str(caught.value)
    assert fingerprint(sshd.folder / "ssh_host_ed25519_key.pub") in message
    assert f"optiseg device trust 127.0.0.1:{sshd.port} --known-hosts {empty}" in message
    assert "never trusts a host silently" in message
    assert empty.read_text() == ""  # nothing was written


def test_a_changed_host_key_is_refused(sshd, tmp_path, matmul_onnx):
    other_key = (sshd.folder / "wrong_key.pub").read_text().split()
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[127.0.0.1]:{sshd.port} {other_key[0]} {other_key[1]}\n")
    with pytest.raises(DeviceError, match="has CHANGED") as caught:
        runner_for(sshd.device(forged)).measure(matmul_onnx)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {forged}" in str(caught.value)


def test_a_wrong_key_is_an_auth_error_naming_host_and_user(sshd, ssh_device, matmul_onnx):
    with pytest.raises(DeviceError) as caught:
        runner_for({**ssh_device, "key_file": str(sshd.wrong_key)}).measure(matmul_onnx)
    message = str(caught.value)
    assert f"authentication as {sshd.user} on 127.0.0.1:{sshd.port} failed" in message
    assert "ssh-copy-id" in message


@pytest.mark.parametrize(("name", "error", "message"), [
    ("absent", ConfigError, "device.key_file: .*absent does not exist"),  # refused before any connection
    ("client_key.pub", DeviceError, "not a private key"),
])
def test_an_unusable_key_file_is_named(sshd, ssh_device, matmul_onnx, name, error, message):
    with pytest.raises(error, match=message):
        runner_for({**ssh_device, "key_file": str(sshd.folder / name)}).measure(matmul_onnx)


# -- network faults ------------------------------------------------------------------------------


def test_a_closed_port_fails_fast_and_clearly(ssh_device, matmul_onnx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DeviceError, match=rf"cannot connect to .*127.0.0.1:{closed_port}: connection refused"):
        runner_for({**ssh_device, "port": closed_port}).measure(matmul_onnx)
    assert time.monotonic() - started < ssh_device["connect_timeout"]


def test_a_silent_server_is_given_up_at_the_connect_deadline(ssh_device, matmul_onnx):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never says a word
        started = time.monotonic()
        with pytest.raises(DeviceError, match="cannot connect to"):
            runner_for({**ssh_device, "port": silent.getsockname()[1], "connect_timeout": 1}).measure(matmul_onnx)
        assert time.monotonic() - started < 4


def test_a_connection_cut_during_the_upload_is_retried_without_leftovers(sshd, tmp_path, make_onnx):
    big = make_onnx(tmp_path / "big.onnx", 1024, 512)  # 2 MB; the cut falls inside its upload
    proxy = Proxy(sshd.port, cut_after=400_000)
    with runner_for(proxied(sshd, tmp_path, proxy)) as runner:
        result = runner.measure(big)
        assert proxy.connections == 2 and runner.reconnects == 1
        names = sorted(p.name for p in Path(runner.workdir).iterdir())
        assert names == sorted([*RUNNER_FILES, f"model-{result.model_sha256[:16]}.onnx"]), names
    assert result.runs >= 5


def test_retries_give_up_with_a_clear_error(sshd, tmp_path, matmul_onnx):
    proxy = Proxy(sshd.port)
    slept = []
    config = DeviceConfig.model_validate(proxied(sshd, tmp_path, proxy, retries=2, retry_backoff=0.5))
    runner = SSHRunner(config, sleep=slept.append)
    runner.connect()
    proxy.cut_everything()
    with pytest.raises(DeviceError, match=r"failed after 3 attempts: cannot reconnect: connection refused"):
        runner.measure(matmul_onnx)
    assert slept == [0.5, 1.0]  # capped exponential backoff
    runner.close()


def test_a_reboot_is_detected_and_the_model_measured_again(ssh_device, matmul_onnx):
    with runner_for(ssh_device) as runner:
        runner.measure(matmul_onnx)
        old_folder, uploads = Path(runner.workdir), runner.uploads
        runner._boot_id = "boot-id-before-the-reboot"  # as if the device had come back with a new one
        runner._abort()  # the connection drops, as it does when a device reboots
        result = runner.measure(matmul_onnx)
        assert runner.reboots == 1 and runner.reconnects == 1
        assert runner.uploads == uploads + len(RUNNER_FILES) + 1  # scripts and model again, into a fresh folder
        assert not old_folder.exists() and Path(runner.workdir).exists()
    assert result.runs >= 5


# -- the device's software -----------------------------------------------------------------------


def test_missing_onnxruntime_on_the_device_gets_the_fix_command(sshd, tmp_path, matmul_onnx):
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    python = executable(tmp_path / "python-without-ort", f'#!/bin/sh\nPYTHONPATH={shim.parent} exec {sys.executable} "$@"\n')
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(python))
    with pytest.raises(DeviceError) as caught:
        runner_for(section).measure(matmul_onnx)
    message = str(caught.value)
    assert "missing Python modules: onnxruntime" in message
    assert f"ssh -t -F {sshd.folder / 'empty_ssh_config'} -i {sshd.client_key} -p {sshd.port}" in message
    assert f"{python} -m pip install onnxruntime" in message


def test_a_missing_interpreter_gets_the_fix_command(ssh_device, matmul_onnx):
    with pytest.raises(DeviceError, match=r"(?s)'/nonexistent/python3' was not found .*apt-get install -y python3"):
        runner_for({**ssh_device, "python": "/nonexistent/python3"}).measure(matmul_onnx)


def test_a_corrupt_model_is_caught_before_connecting(ssh_device, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + os.urandom(64))
    runner = runner_for({**ssh_device, "port": 9})  # nothing listens there: connecting would fail differently
    with pytest.raises(UsageError, match="corrupt.onnx is not a valid ONNX model"):
        runner.measure(corrupt)
    assert runner.workdir is None


def test_a_hanging_command_is_killed_at_the_deadline(sshd, tmp_path, matmul_onnx):
    pid_file = tmp_path / "pid"
    hang = executable(tmp_path / "hanging python", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    section = sshd.device(sshd.write_known_hosts(tmp_path / "kh"), python=str(hang), command_timeout=2)
    started = time.monotonic()
    with runner_for(section) as runner:
        with pytest.raises(DeviceError, match=r"did not finish within 2 s \(device.command_timeout\) and was killed"):
            runner.measure(matmul_onnx)
    assert time.monotonic() - started < 2 + 5 + 5
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the hanging process {pid} still runs on the device")
