"""The `device:` section: where candidates are timed and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ._base import ConfigPath, Section


class MeasureSettings(Section):
    """The timing protocol (onnxruntime perf-test / MLPerf single-stream style)."""

    threads: PositiveInt = 2
    warmup: int = Field(10, ge=0)
    min_runs: PositiveInt = 50
    min_seconds: float = Field(2.0, ge=0)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


class SSHHost(Section):
    host: str
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    key_file: ConfigPath | None = None


class DeviceConfig(Section):
    name: str = "local"
    kind: Literal["local", "ssh"] = "local"
    measure: MeasureSettings = MeasureSettings()
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    key_file: ConfigPath | None = None
    known_hosts: ConfigPath | None = None
    python: str = "python3"
    connect_timeout: PositiveFloat = 10.0
    command_timeout: PositiveFloat = 300.0
    pool: tuple[SSHHost, ...] = ()
