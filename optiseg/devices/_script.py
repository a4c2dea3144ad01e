"""The device-side script: where it is, how it is called, and what its one JSON line means."""

from __future__ import annotations

import json
import shlex
import signal
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..config.device import MeasureSettings
from ..errors import DeviceError
from ._base import DeviceFacts, LatencyResult

SCRIPT_NAME = "measure_onnx.py"
CODEC_NAME = "tensor_codec.py"  # imported by the script for --encode-bits / --decode-bits
RUNNER_FILES = (SCRIPT_NAME, CODEC_NAME)
# Exit statuses of the wrapper that runs the script on a device (see ssh.py).
STATUS_NO_TIMEOUT_TOOL = 90
STATUS_NO_PYTHON = 91
STATUS_TIMED_OUT = (124, 137)
STATUS_PARENT_GONE = 4  # the script's watchdog: whoever started it is gone (see measure_onnx.py)
CRASH_SIGNALS = ("SIGSEGV", "SIGILL", "SIGBUS", "SIGABRT", "SIGFPE")
VENV = "~/optiseg-venv"


def script_source(name: str = SCRIPT_NAME) -> bytes:
    """The bytes of a device-side file (``measure_onnx.py`` or its codec), shipped inside the package as ``optiseg._runners``."""
    return resources.files("optiseg._runners").joinpath(name).read_bytes()


def script_arguments(settings: MeasureSettings, codec=None) -> list[str]:
    """Command-line arguments of the script for one measurement (after the model path); ``codec``: a CodecStep."""
    return [
        "--threads", str(settings.threads or 0),
        "--warmup", str(settings.warmup),
        "--min-runs", str(settings.min_runs),
        "--min-seconds", repr(float(settings.min_seconds)),
        "--graph-optimization", settings.graph_optimization,
        *(codec.arguments() if codec is not None else ()),
    ]  # fmt: skip


def shell_word(path: str) -> str:
    """``path`` quoted for a POSIX shell, keeping a leading ``~/`` meaningful (it is the device's home)."""
    if path.startswith("~/"):
        rest = path[2:]
        return f"~/{rest}" if shlex.quote(rest) == rest else f'"$HOME"/{shlex.quote(rest)}'
    return shlex.quote(path)


@dataclass(frozen=True)
class ScriptContext:
    """Where the script ran, for messages: ``where`` names the device, ``shell`` is how a user gets a shell there."""

    where: str
    python: str
    timeout: float
    shell: str | None = None  # e.g. "ssh -t -p 2222 pi@raspberrypi.local"; None = this machine

    def on_device(self, command: str) -> str:
        """``command`` as the user would type it here to run it on the device."""
        return command if self.shell is None else f"{self.shell} {shlex.quote(command)}"


def parse_output(
    status: int, stdout: str, stderr: str, context: ScriptContext, *, killed_by: int | None = None
) -> dict[str, Any]:
    """The script's payload when it succeeded; otherwise a :class:`DeviceError` that says what to do.

    ``killed_by`` is the number of the signal that ended the script's process, if one did.
    """
    if killed_by is not None:
        raise signal_error(killed_by, stderr, context)
    if status == STATUS_NO_TIMEOUT_TOOL:
        raise DeviceError(
            f"the `timeout` command (coreutils) is missing on {context.where}",
            hint=f"install it: {context.on_device('sudo apt-get install -y coreutils')}",
        )
    if status == STATUS_NO_PYTHON:
        raise DeviceError(
            f"the Python interpreter {context.python!r} was not found on {context.where}",
            hint=f"install it: {context.on_device('sudo apt-get install -y python3')}, "
            "or set device.python to the interpreter's full path",
        )
    if status in STATUS_TIMED_OUT:
        raise timeout_error(context)
    payload = _last_json_line(stdout)
    if payload is None:
        raise _no_result_error(status, stdout, stderr, context)
    if payload.get("ok"):
        return payload
    kind, error = payload.get("kind"), payload.get("error", "unknown error")
    if kind == "missing_modules":
        raise DeviceError(f"{error} on {context.where} ({context.python})", hint=install_hint(payload, context))
    if kind == "model":
        # The device's onnxruntime was checked at connect time: what it cannot load now is this model's fault.
        raise DeviceError(
            f"{context.where}: {error}",
            hint="an older onnxruntime on the device may not read this opset; upgrade it: "
            + context.on_device(f"{shell_word(context.python)} -m pip install -U onnxruntime"),
            retryable=False,
        )
    raise DeviceError(f"the measuring script failed on {context.where}: {error}")


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9, and so on; ``signal N`` for a number this machine does not know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def signal_error(number: int, stderr: str, context: ScriptContext) -> DeviceError:
    """The error for a script whose process a signal ended: the signal, the device's stderr, and the likely fix."""
    name = signal_name(number)
    message = f"the measuring script on {context.where} was killed by {name} ({number}); the device's stderr: "
    message += _lines(stderr, last=True) or "nothing"
    python = shell_word(context.python)
    if name == "SIGKILL":
        hint = (
            "the kernel's OOM killer sends SIGKILL when the device runs out of memory: check "
            f"`{context.on_device('dmesg | grep -i -e oom -e killed')}`; free memory (stop other programs), add swap, "
            "or lower measure.threads; a model too large for this device fails the same way"
        )
    elif name in CRASH_SIGNALS:
        hint = (
            "Python crashed inside a native library, most often an onnxruntime (or numpy) build that does not "
            "match this CPU or OS; reinstall the wheel made for it: "
            + context.on_device(f"{python} -m pip install --force-reinstall --no-cache-dir onnxruntime numpy")
            + f", then check that `{python} -c 'import onnxruntime'` runs there"
        )
    else:
        hint = f"something on the device sent {name} to the measuring process; find what (a watchdog, a session manager)"
    return DeviceError(message, hint=hint)


def _no_result_error(status: int, stdout: str, stderr: str, context: ScriptContext) -> DeviceError:
    printed = _lines(stdout)
    message = f"the measuring script on {context.where} exited with status {status} and no result"
    if printed:
        message += f"; {context.python} printed: {printed}"
    message += "; its stderr: " + (_lines(stderr, last=True) or "nothing")
    check = context.on_device(f"{shell_word(context.python)} -c 'import sys; print(sys.executable, sys.version)'")
    if status == 0:
        hint = (
            f"device.python ({context.python}) exited without running the script: it is probably not a plain Python 3 "
            "(a launcher or wrapper that prints a banner or a menu), or a sitecustomize / usercustomize module in it "
            f"prints and exits; check with `{check}` and set device.python to the "
            "interpreter's full path"
        )
    else:
        hint = f"run the script by hand to see more: `{check}`"
    return DeviceError(message, hint=hint)


def _lines(text: str, count: int = 5, *, last: bool = False) -> str:
    """The first (or last) ``count`` non-empty lines of ``text``, joined with ' | ', each cut at 200 characters."""
    lines = [line.strip()[:200] for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:] if last else lines[:count])


def timeout_error(context: ScriptContext) -> DeviceError:
    """The error for a command that ran past ``device.command_timeout``."""
    return DeviceError(
        f"the command on {context.where} did not finish within {context.timeout:g} s "
        "(device.command_timeout) and was killed",
        hint="raise device.command_timeout, or lower measure.min_runs / measure.min_seconds for slow models",
    )


def install_hint(info: dict[str, Any], context: ScriptContext) -> str:
    """The exact commands that give the device's Python numpy and onnxruntime."""
    missing = " ".join(info.get("missing") or ["numpy", "onnxruntime"])
    python = shell_word(context.python)
    if info.get("in_venv"):
        return "install them: " + context.on_device(f"{python} -m pip install {missing}")
    if info.get("externally_managed"):
        command = (
            f"sudo apt-get install -y python3-venv && python3 -m venv {VENV} "
            f"&& {VENV}/bin/pip install numpy onnxruntime"
        )
        return f"create a virtual environment: {context.on_device(command)}; then set device.python: {VENV}/bin/python"
    return "install them: " + context.on_device(f"{python} -m pip install --user {missing}")


def latency_result(payload: dict[str, Any], *, device_key: str, model_sha256: str, wall_s: float) -> LatencyResult:
    """A :class:`LatencyResult` from the script's payload."""
    return LatencyResult(
        median_ms=float(payload["median_ms"]),
        mean_ms=float(payload["mean_ms"]),
        p90_ms=float(payload["p90_ms"]),
        std_ms=float(payload["std_ms"]),
        min_ms=float(payload["min_ms"]),
        max_ms=float(payload["max_ms"]),
        runs=int(payload["runs"]),
        warmup=int(payload["warmup"]),
        threads=int(payload["threads"]),
        graph_optimization=str(payload["graph_optimization"]),
        session_ms=float(payload["session_ms"]),
        loop_s=float(payload["loop_s"]),
        wall_s=wall_s,
        device_key=device_key,
        model_sha256=model_sha256,
        facts=DeviceFacts.from_dict(payload["facts"]),
        codec=payload.get("codec"),
    )


def device_key(prefix: str, settings: MeasureSettings) -> str:
    """``prefix`` plus what else changes the figures: ``...:threads=4`` (``:opt=basic`` unless the default)."""
    key = f"{prefix}:threads={settings.threads or 'auto'}"
    return key if settings.graph_optimization == "all" else f"{key}:opt={settings.graph_optimization}"


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return None
