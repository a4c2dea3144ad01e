"""What `optiseg device check` concludes from a device's facts: problems (with the command that fixes
each) and warnings (things that make figures vary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import DeviceError
from ._script import ScriptContext, install_hint, shell_word

MIN_ONNXRUNTIME = (1, 14)  # the first release that reads opset 17, which optiseg exports
MIN_FREE_DISK_MB = 200
HOT_C = 80.0
GOVERNOR_FIX = "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"


@dataclass(frozen=True)
class Finding:
    what: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_ready(report: dict[str, Any], *, uploads: bool = True) -> None:
    """Raise a :class:`DeviceError` naming the device, each problem and its fix, unless it can measure.

    Runners call this when they connect, so a device that cannot measure stops a search before its first
    trial. ``uploads=False`` (this machine: nothing is uploaded) skips the free disk and the shell tools.
    """
    problems, _ = diagnose(report, uploads=uploads)
    if problems:
        raise DeviceError(
            f"{report['where']} cannot measure models: " + "; ".join(problem.what for problem in problems),
            hint="; ".join(problem.fix for problem in problems if problem.fix) or None,
        )


def diagnose(report: dict[str, Any], *, uploads: bool = True) -> tuple[list[Finding], list[Finding]]:
    """(problems, warnings) for a runner's ``check()`` report. Problems stop measurements; warnings add noise.

    ``uploads=False`` leaves out what only matters when models are uploaded (free disk, shell tools).
    """
    facts = report["facts"]
    context = ScriptContext(where=report["where"], python=report["python"], timeout=0, shell=report.get("shell"))
    python = shell_word(report["python"])
    if not facts.get("python_found", True):
        fix = f"{context.on_device('sudo apt-get install -y python3')}, or set device.python to the interpreter's path"
        return [Finding(f"the Python interpreter {report['python']!r} was not found on the device", fix)], []
    problems: list[Finding] = []
    warnings: list[Finding] = []
    if facts.get("missing"):
        problems.append(
            Finding(
                f"missing Python modules: {', '.join(facts['missing'])} ({report['python']})", install_hint(facts, context)
            )
        )
    version = facts.get("onnxruntime_version")
    if version and _version(version) < MIN_ONNXRUNTIME:
        problems.append(
            Finding(
                f"onnxruntime {version} cannot read optiseg's models (opset 17 needs 1.14 or later)",
                context.on_device(f"{python} -m pip install -U onnxruntime"),
            )
        )
    tools = [name for name, present in (facts.get("tools") or {}).items() if not present] if uploads else []
    if tools:
        problems.append(Finding(f"missing commands: {', '.join(tools)}", context.on_device("sudo apt-get install -y coreutils")))
    free = facts.get("free_disk_mb") if uploads else None
    if free is not None and free < MIN_FREE_DISK_MB:
        problems.append(
            Finding(
                f"only {free:.1f} MB free in {facts.get('disk_path')} (models are uploaded there; "
                f"optiseg needs {MIN_FREE_DISK_MB} MB)",
                context.on_device(f"sudo apt-get clean; df -h {shell_word(str(facts.get('disk_path') or '/tmp'))}")
                + "; or set TMPDIR on the device to a folder on a larger disk",
            )
        )
    governor = facts.get("governor")
    if governor and governor != "performance":
        warnings.append(
            Finding(f"CPU governor is {governor!r}: the clock follows the load, so figures vary", context.on_device(GOVERNOR_FIX))
        )
    throttled = facts.get("throttled")
    if throttled and throttled not in ("0x0", "0"):
        warnings.append(
            Finding(
                f"the firmware reports throttling or under-voltage since boot (get_throttled={throttled})",
                "use the official power supply and a heatsink or fan, then reboot",
            )
        )
    temperature = facts.get("temperature_c")
    if temperature is not None and temperature >= HOT_C:
        warnings.append(Finding(f"the CPU is at {temperature:.0f} °C and may throttle", "add cooling"))
    load, cores = facts.get("load_1m"), facts.get("usable_cores") or 1
    if load is not None and load > 0.5 * cores:
        warnings.append(Finding(f"the device is busy (load {load:.2f} on {cores} cores): other work disturbs the figures"))
    return problems, warnings


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
