"""A real PostgreSQL server for multi-worker tests, started in a temporary folder on a free port.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs
it). The server refuses to run as root, so as root it runs as the
``postgres`` user. Trust authentication on 127.0.0.1 only; stopped at the end
of the session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (CI's .ci/run does this)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url():
    """URL of an empty database on a fresh PostgreSQL server: postgresql://postgres@127.0.0.1:PORT/optiseg_test."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="optiseg-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True, capture_output=True,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]),
        capture_output=True, text=True,
    )
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log.read_text() if log.exists() else ''}")
    try:
        deadline = time.monotonic() + 30
        while True:
            created = subprocess.run(
                [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE optiseg_test"],
                capture_output=True, text=True,
            )
            if created.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"cannot create the test database: {created.stderr}")
            time.sleep(0.5)
        yield f"postgresql://postgres@127.0.0.1:{port}/optiseg_test"
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
