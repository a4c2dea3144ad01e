"""Host keys: known_hosts lookups, fingerprints, and trusting a device on the user's say-so only.

A device whose host key is not in known_hosts is refused, with its SHA256
fingerprint and the `optiseg device trust` command; a device whose key differs
from the recorded one is refused outright. Nothing is ever trusted silently.
Entries for ports other than 22 are written and looked up as ``[host]:port``,
as OpenSSH does; hashed entries (``HashKnownHosts yes``) are understood.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paramiko

from ..errors import DeviceError
from .target import SSHTarget

DEFAULT_PORT = 22


def known_hosts_name(host: str, port: int) -> str:
    """The name of a host in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def describe_key(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:...``: the key type and the fingerprint OpenSSH shows."""
    return f"{key.get_name()} {key.fingerprint}"


def load_host_keys(files: Iterable[Path]) -> paramiko.HostKeys:
    """All entries of the readable files among ``files`` (missing ones are skipped, as OpenSSH does)."""
    keys = paramiko.HostKeys()
    for path in files:
        if path.is_file():
            try:
                keys.load(str(path))
            except (OSError, UnicodeDecodeError) as exc:
                raise DeviceError(f"cannot read the known_hosts file {path}: {exc}") from None
    return keys


def recorded_keys(files: Iterable[Path], host: str, port: int) -> dict[str, paramiko.PKey]:
    """Key type -> recorded key for the host, from every file."""
    found = load_host_keys(files).lookup(known_hosts_name(host, port))
    return {} if found is None else {name: found[name] for name in found.keys()}


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts (raised instead of trusting it)."""

    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(f"host key of {name} is not known: {describe_key(key)}")
        self.name = name
        self.key = key


class RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, keeping the key so that the refusal can show its fingerprint."""

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


def fetch_host_key(sock: Any, timeout: float) -> paramiko.PKey:
    """The host key a server presents on ``sock`` (key exchange only: no login, nothing trusted)."""
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def add_known_host(path: Path, host: str, port: int, key: paramiko.PKey) -> str:
    """Append the host's key to ``path`` (created 0600, its folder 0700 when new); return the line written."""
    line = f"{known_hosts_name(host, port)} {key.get_name()} {key.get_base64()}\n"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(("\n" if needs_newline else "") + line)
    return line


def unknown_host_error(target: SSHTarget, key: paramiko.PKey) -> DeviceError:
    """The refusal of a host whose key is not recorded: its fingerprint and the command that trusts it."""
    files = ", ".join(str(p) for p in target.known_hosts)
    return DeviceError(
        f"the host key of {target.where} is not in known_hosts ({files}); it presents {describe_key(key)}. "
        "optiseg never trusts a host silently",
        hint=f"compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_type(key)}_key.pub` "
        f"run on the device, then trust it: {target.trust_command}",
    )


def changed_host_error(target: SSHTarget, got: paramiko.PKey, expected: paramiko.PKey) -> DeviceError:
    """The refusal of a host whose key differs from the recorded one."""
    name = known_hosts_name(target.hostname, target.port)
    return DeviceError(
        f"the host key of {target.where} has CHANGED: it presents {describe_key(got)} but known_hosts records "
        f"{describe_key(expected)}. Either the device was reinstalled or someone is in between; "
        "optiseg refuses to connect",
        hint=f"if the device was reinstalled, remove the old key with "
        f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(target.known_hosts[0]))}`, "
        f"then run `{target.trust_command}`",
    )


def _key_file_type(key: paramiko.PKey) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    return "ecdsa" if name.startswith("ecdsa") else "rsa"
