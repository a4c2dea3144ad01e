"""Where an SSH device is: the `device:` section merged with ~/.ssh/config, as OpenSSH would do it.

Values in the YAML win over ``~/.ssh/config`` (as command-line options do for
``ssh``); the config supplies ``HostName``, ``Port``, ``User``, ``IdentityFile``,
``IdentitiesOnly``, ``ProxyCommand``, ``UserKnownHostsFile`` and
``GlobalKnownHostsFile`` for a ``Host`` alias.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._paths import input_problem
from ..config.device import DeviceConfig
from ..errors import ConfigError, UsageError

DEFAULT_PORT = 22
USER_SSH_CONFIG = Path("~/.ssh/config")
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True)
class SSHTarget:
    """One SSH device, fully resolved."""

    alias: str  # the host as the user wrote it: a name, an address or a ~/.ssh/config Host alias
    hostname: str
    port: int
    user: str
    key_file: Path | None  # from the YAML: the only key tried
    identity_files: tuple[Path, ...]  # from ~/.ssh/config
    identities_only: bool
    proxy_command: str | None
    known_hosts: tuple[Path, ...]  # the first is the file `optiseg device trust` writes
    ssh_config: Path | None  # given in the YAML or on the command line (None: the default one, if any)
    port_given: bool
    known_hosts_given: bool

    @property
    def where(self) -> str:
        """``user@host:port``, with the alias when it differs, for messages."""
        address = f"{self.user}@{_bracket(self.hostname)}:{self.port}"
        return address if self.alias == self.hostname else f"{address} ({self.alias})"

    @property
    def trust_command(self) -> str:
        """The exact `optiseg device trust` command that records this device's host key where it is looked up."""
        return shlex.join(["optiseg", "device", "trust", *self.cli_arguments(with_key=False)])

    def cli_arguments(self, with_key: bool = True) -> list[str]:
        """NAME and options that make `optiseg device ...` reach this device as this target does."""
        words = [format_device_name(self.alias, self.port if self.port_given else None)]
        if self.known_hosts_given:
            words += ["--known-hosts", str(self.known_hosts[0])]
        if self.ssh_config is not None:
            words += ["--ssh-config", str(self.ssh_config)]
        if with_key and self.key_file is not None:
            words += ["--key-file", str(self.key_file)]
        return words

    @property
    def shell(self) -> str:
        """The ``ssh`` command that opens a shell on the device (with a terminal, for sudo), for fix-it hints."""
        return shlex.join(self.ssh_words(tty=True))

    def ssh_words(self, tty: bool = False) -> list[str]:
        """The OpenSSH command line that reaches this device as optiseg does."""
        words = ["ssh", "-t"] if tty else ["ssh"]
        if self.ssh_config is not None:
            words += ["-F", str(self.ssh_config)]
        if self.key_file is not None:
            words += ["-i", str(self.key_file)]
        if self.port != DEFAULT_PORT:
            words += ["-p", str(self.port)]
        if self.known_hosts_given:
            words += ["-o", f"UserKnownHostsFile={self.known_hosts[0]}"]
        return [*words, f"{self.user}@{self.alias}"]


def resolve_target(config: DeviceConfig) -> SSHTarget:
    """Merge one device's `device:` section with the OpenSSH client config; :class:`ConfigError` if unusable."""
    if config.kind != "ssh" or config.host is None:
        raise ValueError("resolve_target needs one SSH device (use DeviceConfig.members() for a pool)")
    options = _ssh_options(config.host, config.ssh_config, port=config.port, user=config.user)
    if "proxyjump" in options and "proxycommand" not in options:
        raise ConfigError(
            f"~/.ssh/config uses ProxyJump for {config.host}, which optiseg's SSH client (paramiko) does not support",
            hint=f"write it as a ProxyCommand: `ProxyCommand ssh -W %h:%p {options['proxyjump']}`",
        )
    try:
        port = config.port or int(options.get("port", DEFAULT_PORT))
    except ValueError:
        raise ConfigError(f"~/.ssh/config: Port {options.get('port')!r} for {config.host} is not a number") from None
    _check_files(config)
    proxy = options.get("proxycommand")
    return SSHTarget(
        alias=config.host,
        hostname=options.get("hostname", config.host),
        port=port,
        user=config.user or options.get("user") or getpass.getuser(),
        key_file=config.key_file,
        identity_files=tuple(Path(p).expanduser() for p in options.get("identityfile", [])),
        identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
        proxy_command=None if proxy is None or proxy.lower() == "none" else proxy,
        known_hosts=_known_hosts_files(config, options),
        ssh_config=config.ssh_config,
        port_given=config.port is not None,
        known_hosts_given=config.known_hosts is not None,
    )


def open_socket(target: SSHTarget, timeout: float) -> Any:
    """A connected socket to the device (or a ProxyCommand standing in for one)."""
    if target.proxy_command is not None:
        import paramiko

        return paramiko.ProxyCommand(target.proxy_command)
    return socket.create_connection((target.hostname, target.port), timeout=timeout)


def parse_device_name(text: str) -> dict[str, Any]:
    """``local``, ``[user@]host[:port]`` or ``user@[v6addr]:port`` -> keys of a `device:` section."""
    text = text.strip()
    if text == "local":
        return {"kind": "local"}
    user, _, rest = text.rpartition("@")
    port: str | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise UsageError(f"device {text!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
        port = tail[1:] if tail else None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host = rest
    if not host or (user == "" and "@" in text):
        raise UsageError(f"device {text!r} is not local, [user@]host[:port] or a ~/.ssh/config Host alias")
    section: dict[str, Any] = {"kind": "ssh", "host": host}
    if user:
        section["user"] = user
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UsageError(f"device {text!r}: the port must be a number from 1 to 65535, not {port!r}")
        section["port"] = int(port)
    return section


def format_device_name(host: str, port: int | None = None, user: str | None = None) -> str:
    """The inverse of :func:`parse_device_name`."""
    name = _bracket(host) if port is not None else host
    if port is not None:
        name = f"{name}:{port}"
    return f"{user}@{name}" if user else name


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ssh_options(host: str, ssh_config: Path | None, *, port: int | None, user: str | None) -> dict[str, Any]:
    """``ssh -G``'s answer, roughly: the options for ``host``, the YAML's port and user taking precedence."""
    import paramiko

    path = ssh_config if ssh_config is not None else USER_SSH_CONFIG.expanduser()
    if ssh_config is None and not path.is_file():
        text = ""
    elif (problem := input_problem(path)) is not None:
        raise ConfigError(f"ssh config file {problem}", hint="fix device.ssh_config or remove it")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the ssh config {path}: {exc}") from None
    # The first value found wins, as on ssh's command line: so %p and %r in ProxyCommand see the YAML's values.
    given = "".join(f"  {key} {value}\n" for key, value in (("Port", port), ("User", user)) if value is not None)
    if given:
        text = f"Host {host}\n{given}" + text
    try:
        return dict(paramiko.SSHConfig.from_text(text).lookup(host))
    except (paramiko.SSHException, ValueError) as exc:
        raise ConfigError(f"cannot read the ssh config {path}: {exc}") from None


def _check_files(config: DeviceConfig) -> None:
    """The key file must be a regular file, and so must a known_hosts file that is there (a missing one is made by
    `optiseg device trust`): a FIFO would block the read, a folder fail it, long after the start."""
    if config.key_file is not None and (problem := input_problem(config.key_file)) is not None:
        raise ConfigError(f"device.key_file: {problem}", hint="point device.key_file at your private key, or remove it")
    if config.known_hosts is not None and os.path.lexists(config.known_hosts) \
            and (problem := input_problem(config.known_hosts)) is not None:
        raise ConfigError(f"device.known_hosts: {problem}", hint="point device.known_hosts at a file, or remove it")


def _known_hosts_files(config: DeviceConfig, options: dict[str, Any]) -> tuple[Path, ...]:
    if config.known_hosts is not None:
        return (config.known_hosts,)
    user_files = shlex.split(options.get("userknownhostsfile", "")) or [str(USER_KNOWN_HOSTS)]
    global_files = shlex.split(options.get("globalknownhostsfile", "")) or [str(GLOBAL_KNOWN_HOSTS)]
    return tuple(Path(os.path.expanduser(p)) for p in [*user_files, *global_files] if p.lower() != "none")
