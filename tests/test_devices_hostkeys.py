"""known_hosts: names for other ports, hashed entries, fingerprints as OpenSSH shows them, trusting."""

from __future__ import annotations

import stat
import subprocess

import paramiko
import pytest

from optiseg.devices import hostkeys

pytest_plugins = ("sshd",)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_names_use_brackets_for_ports_other_than_22():
    assert hostkeys.known_hosts_name("pi.local", 22) == "pi.local"
    assert hostkeys.known_hosts_name("10.0.0.7", 2222) == "[10.0.0.7]:2222"


def test_the_fingerprint_is_the_one_ssh_keygen_shows(key):
    public = paramiko.PKey.from_path(key)
    shown = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True).stdout.split()[1]
    assert hostkeys.describe_key(public) == f"ssh-ed25519 {shown}"


def test_trusting_writes_a_private_file_that_lookups_then_find(tmp_path, key):
    public = paramiko.PKey.from_path(key)
    known_hosts = tmp_path / "new" / "known_hosts"
    line = hostkeys.add_known_host(known_hosts, "10.0.0.7", 2222, public)
    assert line.startswith("[10.0.0.7]:2222 ssh-ed25519 ")
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    assert stat.S_IMODE(known_hosts.parent.stat().st_mode) == 0o700
    assert hostkeys.recorded_keys([known_hosts], "10.0.0.7", 2222) == {"ssh-ed25519": public}
    assert hostkeys.recorded_keys([known_hosts], "10.0.0.7", 22) == {}  # another port is another host

    hostkeys.add_known_host(known_hosts, "pi.local", 22, public)
    assert known_hosts.read_text().splitlines()[1].startswith("pi.local ssh-ed25519 ")


def test_appending_keeps_a_file_without_final_newline_intact(tmp_path, key):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("other.host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    hostkeys.add_known_host(known_hosts, "pi.local", 22, paramiko.PKey.from_path(key))
    assert [line.split()[0] for line in known_hosts.read_text().splitlines()] == ["other.host", "pi.local"]


def test_hashed_entries_are_understood(tmp_path, key):
    public = paramiko.PKey.from_path(key)
    hashed = paramiko.HostKeys.hash_host("[10.0.0.7]:2222")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{hashed} {public.get_name()} {public.get_base64()}\n")
    assert hostkeys.recorded_keys([known_hosts, tmp_path / "missing"], "10.0.0.7", 2222) == {"ssh-ed25519": public}
    assert hostkeys.recorded_keys([known_hosts], "10.0.0.8", 2222) == {}


def test_fetching_a_host_key_logs_in_to_nothing(sshd):
    import socket

    with socket.create_connection((sshd.host, sshd.port), timeout=5) as sock:
        key = hostkeys.fetch_host_key(sock, timeout=5)
    assert f"{key.get_name()} {key.get_base64()}" == sshd.host_public_key
