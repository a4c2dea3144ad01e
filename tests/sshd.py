"""A real OpenSSH server on 127.0.0.1 for the SSH runner's tests (and benchmarks/runner_repeatability.py).

``start_sshd(folder)`` runs Debian's ``/usr/sbin/sshd`` as the current user on a
free port with a generated host key and client key and the internal SFTP server,
and writes the ``[127.0.0.1]:PORT`` known_hosts line, so host-key checking is
exercised for real. Nothing under ~/.ssh is read or written.

As a pytest plugin (``pytest_plugins = ("sshd",)``) it provides the fixtures
``sshd`` (one server per session), ``ssh_device`` (a `device:` mapping for it,
with a fresh known_hosts file per test) and ``tiny_onnx`` (a small exported
Fast-SCNN). A missing sshd fails the tests with the install command; it never
skips them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
INSTALL_HINT = "install OpenSSH's server and client: `sudo apt-get install -y openssh-server` (CI's .ci/run must do it)"


@dataclass(frozen=True)
class SSHServer:
    host: str
    port: int
    user: str
    folder: Path
    client_key: Path
    wrong_key: Path
    known_hosts_line: str
    host_public_key: str
    log: Path
    process: subprocess.Popen

    def write_known_hosts(self, path: Path) -> Path:
        """A known_hosts file that trusts this server (and nothing else)."""
        path.write_text(self.known_hosts_line)
        return path

    def device(self, known_hosts: Path, **overrides) -> dict:
        """A `device:` mapping that measures through this server quickly (tiny protocol)."""
        section = {
            "kind": "ssh",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.client_key),
            "known_hosts": str(known_hosts),
            "ssh_config": str(self.folder / "empty_ssh_config"),
            "python": sys.executable,
            "connect_timeout": 5,
            "command_timeout": 60,
            "retry_backoff": 0.1,
            "measure": {"warmup": 1, "min_runs": 5, "min_seconds": 0, "threads": 1},
        }
        section.update(overrides)
        return section

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A real, small file system at ``path`` (``mount -t tmpfs``, as root), unmounted on exit.

    It stands for a device's nearly full or read-only disk. RuntimeError if this machine cannot mount.
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=1777" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "optiseg-test", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs at {path} (the device-fault tests need root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "optiseg-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def start_sshd(folder: Path, extra_options: tuple[str, ...] = ()) -> SSHServer:
    """Start sshd on 127.0.0.1 at a free port; RuntimeError (with the install command) if it cannot run.

    ``extra_options`` are more ``-o`` settings, e.g. ``("SetEnv=TMPDIR=/mnt/full",)`` to give the
    device's sessions another temporary folder.
    """
    if not SSHD.is_file() or shutil.which(SSH_KEYGEN) is None:
        raise RuntimeError(f"{SSHD} or ssh-keygen is missing: {INSTALL_HINT}")
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "ssh_host_ed25519_key")
    client_key = keygen(folder / "client_key")
    wrong_key = keygen(folder / "wrong_key")
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    (folder / "empty_ssh_config").write_text("")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    host_public = (folder / "ssh_host_ed25519_key.pub").read_text().split()
    last_error = ""
    for _ in range(5):
        port = free_port()
        log = folder / f"sshd-{port}.log"
        command = [
            str(SSHD), "-D", "-e", "-f", "/dev/null",
            "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1",
            "-o", f"HostKey={host_key}", "-o", f"AuthorizedKeysFile={authorized}",
            "-o", f"PidFile={folder / f'sshd-{port}.pid'}",
            "-o", "UsePAM=no", "-o", "StrictModes=no", "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no", "-o", "PermitRootLogin=prohibit-password",
            "-o", "Subsystem=sftp internal-sftp", "-o", "MaxStartups=100", "-o", "LogLevel=VERBOSE",
            *_penalty_options(),
            *(word for option in extra_options for word in ("-o", option)),
        ]  # fmt: skip
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if _wait_for_banner(port, process):
            return SSHServer(
                host="127.0.0.1",
                port=port,
                user=getpass.getuser(),
                folder=folder,
                client_key=client_key,
                wrong_key=wrong_key,
                known_hosts_line=f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n",
                host_public_key=f"{host_public[0]} {host_public[1]}",
                log=log,
                process=process,
            )
        process.kill()
        process.wait()
        last_error = log.read_text(errors="replace")
    raise RuntimeError(f"sshd did not start: {last_error.strip()[-2000:]}")


def _penalty_options() -> list[str]:
    """OpenSSH 9.8+ penalizes clients that fail to log in; the fault tests do that on purpose."""
    version = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True).stderr
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) >= (9, 8):
        return ["-o", "PerSourcePenalties=no"]
    return []


def _wait_for_banner(port: int, process: subprocess.Popen, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-2.0-OpenSSH_"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def runner_for(section: dict):
    """An SSH runner for a ``device:`` section (as a mapping)."""
    from optiseg.config.device import DeviceConfig
    from optiseg.devices.ssh import SSHRunner

    return SSHRunner(DeviceConfig.model_validate(section))


def executable(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` as an executable script."""
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_matmul_onnx(path: Path, inputs: int = 256, outputs: int = 64) -> Path:
    """A valid ONNX model of about ``inputs * outputs * 4`` bytes that runs in microseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).random((inputs, outputs), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, inputs])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, outputs])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# -- pytest plugin -------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # imported by the benchmark without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def sshd(tmp_path_factory):
        try:
            server = start_sshd(tmp_path_factory.mktemp("sshd"))
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
        server.stop()

    @pytest.fixture
    def ssh_device(sshd, tmp_path):
        """A `device:` mapping for the test sshd; its known_hosts file is the test's own."""
        return sshd.device(sshd.write_known_hosts(tmp_path / "known_hosts"))

    @pytest.fixture(scope="session")
    def tiny_onnx(tmp_path_factory) -> Path:
        """Fast-SCNN (a=0.125, t=2, r=1, no pyramid pooling) at 64x64, exported by optiseg."""
        from optiseg.export import export_onnx
        from optiseg.network import Network
        from optiseg.models import build_model

        knobs = {"a": 0.125, "t": 2, "r": 1, "pp": 0}
        path = tmp_path_factory.mktemp("models") / "fastscnn-tiny.onnx"
        export_onnx(build_model("fastscnn", knobs, 1), path, Network.create("fastscnn", knobs, (64, 64), num_classes=1))
        return path

    @pytest.fixture(scope="session")
    def make_onnx():
        """``make_onnx(path, inputs, outputs)``: a MatMul model of about ``inputs * outputs * 4`` bytes."""
        return make_matmul_onnx

    @pytest.fixture(scope="session")
    def matmul_onnx(tmp_path_factory) -> Path:
        return make_matmul_onnx(tmp_path_factory.mktemp("models") / "matmul.onnx")
