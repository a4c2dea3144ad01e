"""`optiseg device check`, `optiseg device trust` and `optiseg bench`: reach a device and time a model on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import print_json, print_table, stderr_console, stdout_console

DEVICE_HELP = (
    "`local`, a ~/.ssh/config Host alias, [user@]host[:port], or a YAML file with a device: section "
    "(a study config works)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    device = subparsers.add_parser(
        "device",
        help="check a device, trust its SSH host key, or measure the link to it",
        description="Check that a device can measure models, record its SSH host key in known_hosts, or measure "
        "the link (bandwidth, round-trip time) to it.",
    )
    device.set_defaults(handler=lambda args: device.print_help() or 2)
    actions = device.add_subparsers(title="actions", metavar="ACTION")

    check = actions.add_parser(
        "check",
        help="connect and report Python, onnxruntime, cores, free disk, governor; with fixes",
        description=(
            "Connect to the device and report its Python, numpy and onnxruntime versions, CPU and cores, free disk, "
            "CPU governor, temperature and throttling. For anything that would stop a measurement it prints the "
            "exact command that fixes it, and exits with status 1."
        ),
        epilog=(
            "examples:\n"
            "  optiseg device check local\n"
            "  optiseg device check pi@raspberrypi.local\n"
            "  optiseg device check examples/devices/raspberry-pi-4.yaml --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("device", metavar="NAME|CONFIG", help=DEVICE_HELP)
    check.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _add_host_options(check)
    check.set_defaults(handler=run_check)

    trust = actions.add_parser(
        "trust",
        help="show a device's SSH host key fingerprint and add it to known_hosts",
        description=(
            "Fetch the SSH host key the device presents, show its SHA256 fingerprint and, once you confirm, add it "
            "to known_hosts (as [host]:port for ports other than 22). Compare the fingerprint with "
            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the device itself. A key that differs from "
            "the recorded one is never replaced."
        ),
        epilog="examples:\n  optiseg device trust pi@raspberrypi.local\n  optiseg device trust pi.yaml --yes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trust.add_argument("device", metavar="NAME|CONFIG", help=DEVICE_HELP)
    trust.add_argument("--yes", action="store_true", help="do not ask for confirmation (only for a key you checked)")
    _add_host_options(trust)
    trust.set_defaults(handler=run_trust)

    link = actions.add_parser(
        "link-test",
        help="measure bandwidth each way and round-trip time to a host over SSH; write them as a config's link:",
        description=(
            "Measure the link between this machine and a host over SSH: the round-trip time of small messages, then "
            "the time to send --mb megabytes up and to receive as many down (bounded: one command each on the host). "
            "The figures go through SSH's encryption, a lower bound of what the split and cascade deploy scripts get "
            "over plain TCP. With --write the result becomes the `link:` section of a study config (its comments and "
            "the rest of the file are kept). Given a study config, the host is its server: section (else its device:)."
        ),
        epilog=(
            "examples:\n"
            "  optiseg device link-test gpu-server.local\n"
            "  optiseg device link-test study.yaml --write study.yaml\n"
            "  optiseg device link-test user@10.0.0.5:2222 --mb 32 --rounds 50 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    link.add_argument("device", metavar="NAME|CONFIG", help=DEVICE_HELP)
    link.add_argument("--mb", type=float, default=8.0, help="megabytes (10^6 bytes) sent each way (default 8, at most 1000)")
    link.add_argument("--rounds", type=int, default=20, help="round trips timed for the RTT (default 20, 3 to 1000)")
    link.add_argument("--write", type=Path, metavar="CONFIG", help="write the result as the link: section of this study config")
    link.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _add_host_options(link)
    link.set_defaults(handler=run_link_test)

    bench = subparsers.add_parser(
        "bench",
        help="time one ONNX model on a device",
        description=(
            "Time an ONNX model with onnxruntime on a device: session creation timed apart, warm-up runs, then runs "
            "until both a minimum count and a minimum time are reached. Prints median (the headline figure), mean, "
            "p90, std, min and max in milliseconds, and the device's facts."
        ),
        epilog=(
            "examples:\n"
            "  optiseg bench model.onnx\n"
            "  optiseg bench model.onnx --device pi@raspberrypi.local --threads 4\n"
            "  optiseg bench model.onnx --config examples/devices/raspberry-pi-4.yaml --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("model", type=Path, metavar="MODEL.onnx", help="the model to time")
    where = bench.add_mutually_exclusive_group()
    where.add_argument("--device", metavar="NAME", help="`local` (default), a Host alias or [user@]host[:port]")
    where.add_argument("--config", type=Path, metavar="CFG", help="a YAML file with a device: section")
    bench.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: the config's, else all cores)")
    bench.add_argument("--runs", type=int, help="minimum number of timed runs (default 50)")
    bench.add_argument("--warmup", type=int, help="untimed warm-up runs (default 10)")
    bench.add_argument("--min-seconds", type=float, help="minimum seconds of timed runs (default 2)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _add_host_options(bench)
    bench.set_defaults(handler=run_bench)


def _add_host_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("when the device is given as a NAME (a config file has these keys itself)")
    group.add_argument("--known-hosts", type=Path, metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)")
    group.add_argument("--ssh-config", type=Path, metavar="FILE", help="OpenSSH client config (default ~/.ssh/config)")
    group.add_argument("--key-file", type=Path, metavar="FILE", help="private key (default: agent, ~/.ssh/id_*)")
    group.add_argument("--python", metavar="PATH", help="Python on the device (default python3)")


def _device_config(text: str | None, config: Path | None, args: argparse.Namespace):
    """The DeviceConfig named on the command line: a config file, `local`, a Host alias or [user@]host[:port]."""
    from ..config.device import load_device_config, parse_device_config
    from ..devices.target import parse_device_name
    from ..errors import UsageError

    host_options = {
        key: value
        for key, value in (
            ("known_hosts", args.known_hosts),
            ("ssh_config", args.ssh_config),
            ("key_file", args.key_file),
            ("python", args.python),
        )
        if value is not None
    }
    flags = ", ".join("--" + key.replace("_", "-") for key in host_options)
    if config is None and text is not None and (Path(text).expanduser().is_file() or text.endswith((".yaml", ".yml"))):
        config = Path(text)
    if config is not None:
        if host_options:
            raise UsageError(f"{flags} only go with a device NAME; in {config}, set them in the device: section")
        return load_device_config(config)
    section = parse_device_name(text or "local")
    if section["kind"] == "local" and host_options:
        raise UsageError(f"{flags} only apply to SSH devices, not to `local`")
    section.update({key: str(value) for key, value in host_options.items()})
    return parse_device_config(section, f"device {text!r}", Path.cwd())


def run_check(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ..devices import open_pool
    from ..devices.check import diagnose

    config = _device_config(args.device, None, args)
    reports = []
    with open_pool(config) as pool:
        for runner in pool.runners:
            with stderr_console().status(escape(f"checking {runner.label}")):
                report = runner.check()
            problems, warnings = diagnose(report)
            reports.append((report, problems, warnings))
    ok = all(not problems for _, problems, _ in reports)
    if args.json:
        print_json(
            {
                "ok": ok,
                "devices": [
                    {
                        "device": report["device"],
                        "where": report["where"],
                        "ok": not problems,
                        "facts": report["facts"],
                        "problems": [p.to_dict() for p in problems],
                        "warnings": [w.to_dict() for w in warnings],
                    }
                    for report, problems, warnings in reports
                ],
            }
        )
        return 0 if ok else 1
    for report, problems, warnings in reports:
        _print_rows(f"{report['device']}: {report['where']}", _fact_rows(report))
        _print_findings(problems, warnings)
        verdict = "[red]cannot measure: fix the problems above[/]" if problems else "[green]ready to measure[/]"
        stdout_console().print(f"{escape(report['device'])}: {verdict}")
    return 0 if ok else 1


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table of plain text (host names such as [fe80::1] are not rich markup)."""
    from rich.markup import escape

    print_table(escape(title), ("", "value"), [(escape(name), escape(value)) for name, value in rows])


def _print_findings(problems: list, warnings: list) -> None:
    """Problems and warnings as a list, never wrapped, so that each fix can be copied as one line."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for title, style, findings in (("problems", "red", problems), ("warnings", "yellow", warnings)):
        if findings:
            console.print(f"[bold {style}]{title}:[/]")
        for finding in findings:
            console.print(f"  - {escape(finding.what)}")
            if finding.fix:
                console.print(f"    fix: {escape(finding.fix)}")


def _fact_rows(report: dict) -> list[tuple[str, str]]:
    facts = report["facts"]
    if not facts.get("python_found", True):
        return [("python", f"{report['python']} (not found)")]

    def show(value, unit: str = "") -> str:
        return "n/a" if value is None else f"{value}{unit}"

    free = facts.get("free_disk_mb")
    temperature = facts.get("temperature_c")
    return [
        ("hostname", show(facts.get("hostname"))),
        ("board", show(facts.get("board"))),
        ("cpu", f"{facts.get('cpu_model')} ({facts.get('machine')})"),
        ("cores", f"{facts.get('usable_cores')} usable of {facts.get('cores')}"),
        ("os", show(facts.get("os"))),
        ("python", f"{facts.get('python_version')} ({facts.get('python')})"),
        ("numpy", show(facts.get("numpy_version") or ("missing" if "numpy" in facts.get("missing", []) else None))),
        (
            "onnxruntime",
            show(facts.get("onnxruntime_version") or ("missing" if "onnxruntime" in facts.get("missing", []) else None)),
        ),
        ("free disk", "n/a" if free is None else f"{free:,.0f} MB in {facts.get('disk_path')}"),
        ("cpu governor", show(facts.get("governor"))),
        ("temperature", "n/a" if temperature is None else f"{temperature:.1f} °C"),
        ("throttled", show(facts.get("throttled"))),
        ("load (1 min)", "n/a" if facts.get("load_1m") is None else f"{facts['load_1m']:.2f}"),
    ]


def run_trust(args: argparse.Namespace) -> int:
    import paramiko
    from rich.markup import escape

    from ..devices import hostkeys
    from ..devices.target import open_socket, resolve_target
    from ..errors import DeviceError, UsageError

    config = _device_config(args.device, None, args)
    if config.kind != "ssh":
        raise UsageError("`local` has no host key to trust; `optiseg device trust` is for SSH devices")
    console = stdout_console()
    declined = []
    for member in config.members():
        target = resolve_target(member)
        try:
            key = hostkeys.fetch_host_key(open_socket(target, member.connect_timeout), member.connect_timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeviceError(
                f"cannot fetch the host key of {target.where}: {exc or type(exc).__name__}",
                hint="check that the device is on and that host and port are right",
            ) from None
        recorded = hostkeys.recorded_keys(target.known_hosts, target.hostname, target.port)
        if key.get_name() in recorded:
            if recorded[key.get_name()] == key:
                console.print(escape(f"{target.where}: {hostkeys.describe_key(key)} is already trusted"))
                continue
            raise hostkeys.changed_host_error(target, key, recorded[key.get_name()])
        path = target.known_hosts[0]
        console.print(escape(f"{target.where} presents the host key\n  {hostkeys.describe_key(key)}"))
        console.print(
            "Compare it with the output of `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` run on the device itself."
        )
        if not args.yes and not _confirm(f"Trust this key and add it to {path}? [y/N] "):
            declined.append(target.where)
            continue
        hostkeys.add_known_host(path, target.hostname, target.port, key)
        console.print(escape(f"added {hostkeys.known_hosts_name(target.hostname, target.port)} to {path}"))
    if declined:
        raise UsageError(f"not trusted: {', '.join(declined)}; optiseg will refuse to connect to it")
    return 0


def run_link_test(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .._paths import require_output
    from ..config import read_yaml, write_section
    from ..devices import make_runner
    from ..errors import UsageError

    if not 0.1 <= args.mb <= 1000:
        raise UsageError(f"--mb {args.mb:g} is invalid: send between 0.1 and 1000 MB each way (e.g. --mb 8)")
    if not 3 <= args.rounds <= 1000:
        raise UsageError(f"--rounds {args.rounds} is invalid: time between 3 and 1000 round trips (e.g. --rounds 20)")
    if args.write is not None:  # a config to read and to write, before the link is measured
        read_yaml(args.write)
        require_output(args.write, "file", "--write")
    config = _device_config(args.device, None, args) if not _is_study_config(args.device) else _remote_section(Path(args.device))
    if config.kind != "ssh" or config.pool:
        raise UsageError("a link test needs one SSH host (a name such as gpu-server.local, or a config whose server: "
                         "or device: section names one host); `local` has no link to measure")
    with make_runner(config) as runner, stderr_console().status(escape(f"measuring the link to {runner.label}")):
        found = runner.link_test(int(args.mb * 1e6), args.rounds)
    section = {"uplink_mbps": round(found.uplink_mbps, 3), "downlink_mbps": round(found.downlink_mbps, 3),
               "rtt_ms": round(found.rtt_ms, 3), "measured": found.describe()}
    if args.write is not None:
        write_section(args.write, "link", section)
    if args.json:
        print_json({**found.as_dict(), "link": section, "written_to": str(args.write) if args.write else None})
        return 0
    _print_rows(f"link to {found.host}", [
        ("uplink", f"{found.uplink_mbps:,.1f} Mbit/s ({found.bytes_each_way / 1e6:g} MB sent)"),
        ("downlink", f"{found.downlink_mbps:,.1f} Mbit/s ({found.bytes_each_way / 1e6:g} MB received)"),
        ("round trip", f"{found.rtt_ms:.2f} ms median, {found.rtt_p90_ms:.2f} ms p90 ({found.rounds} rounds)"),
    ])
    if args.write is not None:
        stdout_console().print(escape(f"wrote link: to {args.write}"))
    else:
        stdout_console().print(escape(f"as a config section (or run again with --write CONFIG):\nlink: {section}"))
    return 0


def _is_study_config(text: str) -> bool:
    path = Path(text).expanduser()
    return path.is_file() and text.endswith((".yaml", ".yml"))


def _remote_section(path: Path):
    """The server: section of a study config if it has one, else its device: section."""
    from ..config import read_yaml
    from ..config.device import load_device_config, parse_device_config

    raw = read_yaml(path)
    if raw.get("server") is not None:
        return parse_device_config(raw["server"], str(path), path.resolve().parent, prefix="server")
    return load_device_config(path)


def _confirm(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer:  # end of input: no answer is no
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _measure_settings(values: dict):
    from pydantic import ValidationError

    from ..config._base import format_validation_error
    from ..config.device import MeasureSettings

    try:
        return MeasureSettings.model_validate(values)
    except ValidationError as exc:
        raise format_validation_error(exc, MeasureSettings, "the command line", prefix="measure") from None


def run_bench(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ..devices import open_pool
    from ..devices._model import inspect_model

    config = _device_config(args.device, args.config, args)
    overrides = {
        key: value
        for key, value in (
            ("threads", args.threads),
            ("min_runs", args.runs),
            ("warmup", args.warmup),
            ("min_seconds", args.min_seconds),
        )
        if value is not None
    }
    if overrides:
        measure = _measure_settings({**config.measure.model_dump(), **overrides})
        config = config.model_copy(update={"measure": measure})
    model = inspect_model(args.model)
    with open_pool(config) as pool, pool.acquire() as runner:
        with stderr_console().status(escape(f"timing {model.path.name} on {runner.label}")):
            result = runner.measure(model.path)
        label = runner.label
    if args.json:
        print_json({"model": str(model.path), "device": label, "fps": result.fps, **result.to_dict()})
        return 0
    facts = result.facts
    rows = [
        ("median", f"{result.median_ms:.3f} ms  ({result.fps:.1f} fps)"),
        ("mean ± std", f"{result.mean_ms:.3f} ± {result.std_ms:.3f} ms"),
        ("p90", f"{result.p90_ms:.3f} ms"),
        ("min / max", f"{result.min_ms:.3f} / {result.max_ms:.3f} ms"),
        ("runs", f"{result.runs} timed in {result.loop_s:.2f} s, after {result.warmup} warm-up"),
        ("session creation", f"{result.session_ms:.1f} ms"),
        ("threads", f"{result.threads} (graph optimization: {result.graph_optimization})"),
        ("device", f"{label}: {facts.cpu_model}, {facts.usable_cores} of {facts.cores} cores"),
        ("onnxruntime", f"{facts.onnxruntime_version} (Python {facts.python_version})"),
        ("governor / temperature", f"{facts.governor or 'n/a'} / "
         + ("n/a" if facts.temperature_c is None else f"{facts.temperature_c:.1f} °C")),
        ("wall time", f"{result.wall_s:.2f} s"),
    ]  # fmt: skip
    _print_rows(f"{model.path.name} on {label}", rows)
    return 0
