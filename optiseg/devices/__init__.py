"""Latency runners: time an ONNX model on this machine or on a device over SSH.

    from optiseg.devices import make_runner, open_pool

    with make_runner(device_config) as runner:      # LocalRunner or SSHRunner; one connection reused
        result = runner.measure("model.onnx")        # LatencyResult: median_ms, p90_ms, ..., facts
    with open_pool(device_config) as pool:          # one device, or every member of device.pool
        with pool.acquire() as runner:               # waits for a free device
            result = runner.measure("model.onnx")

Failures a user can fix are :class:`~optiseg.errors.DeviceError` (device
unreachable, host key unknown, login refused, onnxruntime missing, ...) or
:class:`~optiseg.errors.UsageError` (a model file that is not valid ONNX),
each naming the device or file and the fix.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from ..config.device import DeviceConfig
from ..errors import UsageError
from ._base import CodecStep, DeviceFacts, LatencyResult, Runner, p90_of
from ._script import device_key
from .local import LocalRunner
from .pool import DeviceLock, DevicePool

if TYPE_CHECKING:
    from .ssh import SSHRunner

__all__ = [
    "CodecStep",
    "DeviceFacts",
    "DeviceLock",
    "DevicePool",
    "LatencyResult",
    "LocalRunner",
    "Runner",
    "SSHRunner",
    "make_runner",
    "open_pool",
    "p90_of",
]


def make_runner(config: DeviceConfig) -> Runner:
    """The runner for one device: :class:`LocalRunner` or :class:`SSHRunner` (which connects on first use)."""
    if config.pool:
        raise UsageError(
            f"the device section {config.label!r} lists a pool of {len(config.pool)} devices; "
            "measure through open_pool(config), which lends a free one"
        )
    if config.kind == "local":
        return LocalRunner(config)
    from .ssh import SSHRunner

    return SSHRunner(config)


def open_pool(config: DeviceConfig, *, lock_dir: Any = None) -> DevicePool:
    """A :class:`DevicePool` over the device of ``config``, or over every member of ``config.pool``.

    Its ``device_key`` is the runner's for one device, and ``pool:NAME:threads=N``
    for a pool: the members are the same kind of device, so one figure stands for all.
    """
    members = []
    for member in config.members():
        runner = make_runner(member)
        members.append((_lock_key(runner), runner))
    if len(members) == 1:
        key = members[0][1].device_key
    else:
        name = config.name or "+".join(sorted(member.host or "" for member in config.members()))
        key = device_key(f"pool:{name}", config.measure)
    return DevicePool(members, device_key=key, label=config.label, lock_dir=lock_dir)


def _lock_key(runner: Runner) -> str:
    """One lock per physical device, whatever the user name or thread count."""
    target = getattr(runner, "target", None)
    if target is not None:
        return f"ssh-{target.hostname}-{target.port}"
    return f"local-{socket.gethostname()}"


def __getattr__(name: str) -> Any:
    if name == "SSHRunner":  # imported on demand: paramiko is only needed for SSH devices
        from .ssh import SSHRunner

        return SSHRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
