"""What a runner returns, and the protocol every runner follows."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    known = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in known}


@dataclass(frozen=True)
class DeviceFacts:
    """What a latency figure depends on, as the device reported it right after measuring.

    On Linux ``governor`` is the CPU frequency governor of cpu0, ``temperature_c``
    thermal zone 0, and ``throttled`` the Raspberry Pi firmware's flags
    (``vcgencmd get_throttled``; ``0x0`` = never throttled since boot); each is
    ``None`` where the device does not expose it.
    """

    hostname: str
    cpu_model: str
    cores: int
    usable_cores: int
    python_version: str
    onnxruntime_version: str | None = None
    numpy_version: str | None = None
    machine: str | None = None
    os: str | None = None
    board: str | None = None
    governor: str | None = None
    temperature_c: float | None = None
    throttled: str | None = None
    load_1m: float | None = None
    boot_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeviceFacts":
        """Read what ``to_dict`` (or the device script) wrote; unknown keys are ignored."""
        return cls(**_known_fields(cls, data))


def p90_of(measured: Mapping[str, Any]) -> float:
    """The 90th percentile over runs of a measurement (``LatencyResult.to_dict``); its median where a cache written
    before p90s were kept has none."""
    return float(measured.get("p90_ms", measured["median_ms"]))


@dataclass(frozen=True)
class LatencyResult:
    """One measurement of one model on one device; all times in milliseconds unless named ``_s``.

    ``median_ms`` is the headline figure. ``session_ms`` is the onnxruntime session
    creation (timed apart), ``loop_s`` the timed loop on the device, and ``wall_s``
    the wall time of the whole ``measure`` call on this machine (checks, upload,
    process start, session, warm-up and timed runs).
    """

    median_ms: float
    mean_ms: float
    p90_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    threads: int
    graph_optimization: str
    session_ms: float
    loop_s: float
    wall_s: float
    device_key: str
    model_sha256: str
    facts: DeviceFacts
    codec: dict[str, Any] | None = None  # each run also encoded its outputs / decoded its inputs (split plans)

    @property
    def fps(self) -> float:
        """Frames per second at the median latency."""
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, e.g. for Optuna user attributes (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyResult":
        """Read what ``to_dict`` wrote; unknown keys are ignored, so older optiseg versions can read newer records."""
        values = _known_fields(cls, data)
        values["facts"] = DeviceFacts.from_dict(dict(values.get("facts") or {}))
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class CodecStep:
    """What a split part does on the link in each timed run: ``encode`` its outputs or ``decode`` its inputs, at ``bits``."""

    step: str  # "encode" | "decode"
    bits: int

    def __post_init__(self) -> None:
        if self.step not in ("encode", "decode") or self.bits not in (32, 16, 8, 4):
            raise ValueError(f"codec step {self.step!r} at {self.bits!r} bits: use encode or decode at 32, 16, 8 or 4")

    def arguments(self) -> list[str]:
        return [f"--{self.step}-bits", str(self.bits)]

    @property
    def suffix(self) -> str:
        """For cache names: the same graph timed with and without its codec step are two figures."""
        return f"+{self.step}{self.bits}"


@runtime_checkable
class Runner(Protocol):
    """Times ONNX models on one device. One measurement at a time; reuse it across models, then close it."""

    @property
    def device_key(self) -> str:
        """Stable identifier of the device and thread count, e.g. ``ssh:pi@raspberrypi.local:22:threads=4``."""
        ...

    @property
    def label(self) -> str:
        """The device's name for people (tables, logs)."""
        ...

    def connect(self) -> None:
        """Reach the device now (otherwise the first ``measure`` does), so configuration errors surface early."""
        ...

    def measure(self, onnx_path: str | os.PathLike, codec: CodecStep | None = None) -> LatencyResult:
        """Time the model on the device and return the figures (with ``codec``: each run encodes or decodes too)."""
        ...

    def check(self) -> dict[str, Any]:
        """The device's facts for `optiseg device check` (versions, cores, disk, governor, missing modules)."""
        ...

    def close(self) -> None:
        """Release the connection and anything left on the device."""
        ...

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc_info: object) -> None: ...
