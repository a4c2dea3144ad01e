"""The `device:` section: where candidates are timed and how.

A device is this machine (``kind: local``) or one or more machines reached over
SSH (``kind: ssh``: ``host`` for one, ``pool`` for several of the same kind).
``load_device_config(path)`` reads only the ``device:`` section of a YAML file,
so a file holding just that section works as well as a whole study config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, ValidationInfo, field_validator, model_validator

from ._base import ConfigPath, Section, format_validation_error

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
# Keys a local device never reads (it times with this process's own Python, over no SSH).
SSH_ONLY = ("host", "port", "user", "key_file", "known_hosts", "ssh_config", "python", "pool")


class MeasureSettings(Section):
    """The timing protocol, as onnxruntime's perf test and MLPerf single-stream do it.

    Session creation is timed apart; then ``warmup`` untimed runs; then timed runs
    until both ``min_runs`` runs and ``min_seconds`` seconds are reached. The median
    is the headline figure.
    """

    threads: PositiveInt | None = Field(
        None, description="onnxruntime intra-op threads; default: every core the device lets the process use"
    )
    warmup: NonNegativeInt = Field(10, description="untimed runs after the session is created")
    min_runs: PositiveInt = Field(50, description="timed runs, at least")
    min_seconds: float = Field(2.0, ge=0, description="seconds of timed runs, at least")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimization level"
    )


_EXAMPLES = {"host": "raspberrypi.local", "user": "pi", "python": "~/optiseg-venv/bin/python", "name": "pi-4"}


def _not_empty_text(value: str | None, info: ValidationInfo) -> str | None:
    """An empty (or blank) host, user, interpreter or name would be passed on as it is and fail far away: refuse it here."""
    if value is not None and not value.strip():
        raise ValueError(f"is empty: give one (e.g. {info.field_name}: {_EXAMPLES[info.field_name]}) or remove the key")
    return value


class SSHHost(Section):
    """One member of a device pool; unset fields take the values of the `device:` section."""

    host: str = Field(description="host name, IP address or ~/.ssh/config Host alias")
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    key_file: ConfigPath | None = None
    name: str | None = Field(None, description="label in tables and logs; default: the host")

    _not_empty = field_validator("host", "user", "name")(_not_empty_text)


class DeviceConfig(Section):
    """Where candidates are timed: this machine, one SSH host, or a pool of identical SSH hosts."""

    kind: Literal["local", "ssh"] = Field(
        "local", description="local = this machine; ssh = over SSH. Default: ssh when host or pool is set"
    )
    name: str | None = Field(None, description="label in tables and logs; default: 'local' or the host")
    host: str | None = Field(None, description="host name, IP address or ~/.ssh/config Host alias")
    port: int | None = Field(None, ge=1, le=65535, description="default: ~/.ssh/config, else 22")
    user: str | None = Field(None, description="default: ~/.ssh/config, else your local user name")
    key_file: ConfigPath | None = Field(
        None, description="private key; default: ~/.ssh/config IdentityFile, the SSH agent, ~/.ssh/id_*"
    )
    known_hosts: ConfigPath | None = Field(
        None, description="known_hosts file to check host keys against; default: ~/.ssh/known_hosts"
    )
    ssh_config: ConfigPath | None = Field(None, description="OpenSSH client config to honour; default: ~/.ssh/config")
    python: str = Field("python3", description="Python interpreter on the device (needs numpy and onnxruntime)")
    connect_timeout: PositiveFloat = Field(10.0, description="seconds for TCP connect, SSH handshake and login")
    transfer_timeout: PositiveFloat = Field(120.0, description="seconds to upload one model")
    command_timeout: PositiveFloat = Field(
        300.0, description="seconds for one command on the device, a whole measurement included; killed there after"
    )
    retries: NonNegativeInt = Field(3, description="retries after a transient network failure")
    retry_backoff: PositiveFloat = Field(1.0, description="seconds before the first retry; doubles, at most 30")
    measure: MeasureSettings = MeasureSettings()
    pool: tuple[SSHHost, ...] = Field((), description="several SSH devices of one kind, measured concurrently")

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data:
            data = {**data, "kind": "ssh" if data.get("host") or data.get("pool") else "local"}
        return data

    _not_empty = field_validator("host", "user", "python", "name")(_not_empty_text)

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceConfig":
        if self.kind == "local":
            # A local device runs this process's own Python and never reads SSH settings: setting one is a mistake.
            ssh_only = [key for key in SSH_ONLY if key in self.model_fields_set and getattr(self, key) not in (None, ())]
            if ssh_only:
                raise ValueError(f"{', '.join(ssh_only)} only apply to kind: ssh; set kind: ssh or remove them")
        elif self.host is None and not self.pool:
            raise ValueError("kind: ssh needs host (one device) or pool (several)")
        elif self.host is not None and self.pool:
            raise ValueError(
                "give host for one device or pool for several, not both; "
                "port, user and key_file next to pool are the defaults of its members"
            )
        return self

    @property
    def label(self) -> str:
        """The name shown to the user."""
        if self.name:
            return self.name
        if self.kind == "local":
            return "local"
        return self.host if self.host is not None else f"pool of {len(self.pool)}"

    def members(self) -> tuple["DeviceConfig", ...]:
        """One config per physical device: the pool's members (each inheriting this section's settings), or itself."""
        if not self.pool:
            return (self,)
        return tuple(
            self.model_copy(
                update={
                    "name": member.name or member.host,
                    "host": member.host,
                    "port": member.port if member.port is not None else self.port,
                    "user": member.user if member.user is not None else self.user,
                    "key_file": member.key_file if member.key_file is not None else self.key_file,
                    "pool": (),
                }
            )
            for member in self.pool
        )


def parse_device_config(raw: Any, source: str, base_dir: Path, prefix: str = "device") -> DeviceConfig:
    """Validate a `device:` mapping (or a `server:` one, with ``prefix``); errors name ``source`` and the key path."""
    try:
        return DeviceConfig.model_validate({} if raw is None else raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise format_validation_error(exc, DeviceConfig, source, prefix=prefix) from None


def load_device_config(path: str | Path) -> DeviceConfig:
    """The `device:` section of a YAML file (a study config or a file with only that section).

    A study config without one gets the default, this machine, as its study would.
    """
    from . import read_yaml
    from ..errors import ConfigError

    raw = read_yaml(Path(path).expanduser())  # before resolving: a broken link is named as the user wrote it
    path = Path(path).expanduser().resolve()
    if "device" not in raw and "data" in raw:
        return DeviceConfig()  # a study config without device: measures on this machine
    if "device" not in raw:
        raise ConfigError(
            f"{path} has no device: section",
            hint="add one, e.g. `device: {kind: ssh, host: raspberrypi.local, user: pi}`; see examples/devices/",
        )
    return parse_device_config(raw["device"], str(path), path.parent)
