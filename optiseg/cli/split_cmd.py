"""`optiseg split`: the cut points of one network, what crosses each, and whether it fits the link."""

from __future__ import annotations

import argparse

from ._common import human_count, parse_knobs, print_json, print_table, stderr_console

MAX_CLASSES = 1000

SPLIT_EPILOG = """\
examples:
  optiseg split --model unet --resolution 160x320 --bits 16,4 --fps 12,10
  optiseg split --model fastscnn --knobs a=0.25 --resolution 512 --bits 32,16,8,4 --link-mbps 100 --json
  optiseg split --model unet --resolution 160x320 --bits 16,4 --config study.yaml   # + measured on device and server

Bytes per frame are the payload of the crossing tensors, ceil(values x bits / 8) per tensor
(16 = float16; 8 and 4 = uniform affine quantization, 4-bit codes two per byte); the frame
header (shapes, scales) is not counted. "server" sends the image as uint8 (8 bits per value)
whatever --bits says. Bitrate = bytes x 8 x fps / 1e6 Mbit/s.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    split = subparsers.add_parser(
        "split",
        help="cut points of one network: device cost, crossing tensors, bytes and bitrate",
        description=(
            "For every cut point of a network, and for running it all on the device or all on a server: the "
            "device's multiply-accumulates and memory (parameters and activations of the head), the tensors that "
            "cross the cut (skip connections marked), their value count, bytes per frame at each --bits, the "
            "bitrate at each --fps, and whether it fits a --link-mbps link."
        ),
        epilog=SPLIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    split.add_argument("--model", required=True, help="architecture name (see `optiseg models`)")
    split.add_argument("--knobs", default=None, help="architecture knobs as NAME=VALUE pairs, e.g. a=0.5")
    split.add_argument("--resolution", required=True, help="input size: HxW (e.g. 160x320) or one side (e.g. 192)")
    split.add_argument("--classes", type=int, default=1, help="output logits: 1 = binary (default), C >= 2 = C classes")
    split.add_argument("--in-channels", type=int, default=3, choices=(1, 3), help="3 = RGB (default), 1 = luma")
    split.add_argument("--bits", default="16,4", help="bits per value on the link, from 32,16,8,4 (default 16,4)")
    split.add_argument("--fps", default="12,10", help="frame rates for the bitrate, e.g. 12,10 (default)")
    split.add_argument("--link-mbps", type=float, default=1000.0, help="link bandwidth in Mbit/s (default 1000)")
    split.add_argument("--config", default=None, metavar="CFG",
                       help="a study config with device:, server: and link:: also measure head, tail and transfer per frame")
    split.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    split.set_defaults(handler=run_split)


def _numbers(flag: str, text: str, kind: type) -> list:
    from ..errors import UsageError

    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        example = "16,4" if kind is int else "12,10"
        raise UsageError(f"{flag} {text!r} is invalid: write comma-separated numbers, e.g. {flag} {example}")
    return values


def run_split(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..network import Network
    from ..split import split_table

    bits = _numbers("--bits", args.bits, int)
    fps = _numbers("--fps", args.fps, float)
    if not 1 <= args.classes <= MAX_CLASSES:
        raise UsageError(f"--classes {args.classes} is invalid: 1 (binary) to {MAX_CLASSES}")
    if not 0 < args.link_mbps < float("inf"):
        raise UsageError(f"--link-mbps {args.link_mbps:g} is invalid: give the link's bandwidth in Mbit/s, e.g. 1000")
    network = Network.create(args.model, parse_knobs(args.knobs), args.resolution,
                             in_channels=args.in_channels, num_classes=args.classes)
    table = split_table(network, bits, fps, args.link_mbps)
    measured = _measure(network, table.bits, args.config) if args.config is not None else None
    if args.json:
        print_json({**table.as_dict(), **({"measured": measured.as_dict()} if measured else {})})
        return 0
    columns = ["plan", "device MACs", "device MB", "crossing", "values"]
    for b in table.bits:
        columns.append(f"{b}b MB")
        columns += [f"{b}b Mbit/s @{f:g}fps" for f in table.fps]
    rows = []
    for row in table.rows:
        skips = sum(t.skip for t in row.tensors)
        cells = [
            _plan_name(row),
            human_count(row.device_macs) if row.device_macs else "0",
            f"{row.device_mb:.1f}" if row.plan != "server" else "0",
            f"{len(row.tensors)}" + (f" ({skips} skip)" if skips else ""),
            f"{row.values:,}",
        ]
        for b in table.bits:
            cells.append(f"{row.bytes_per_frame[b] / 1e6:.3f}")
            cells += [f"{row.mbps[b][f]:,.1f} {'ok' if row.fits[b][f] else 'OVER'}" for f in table.fps]
        rows.append(cells)
    print_table(
        f"{network.describe()}: split plans on a {table.link_mbps:g} Mbit/s link (MB per frame; OVER = more than the link carries)",
        columns, rows, justify_right=range(1, len(columns)),
    )
    tensor_rows = [
        (_plan_name(row), ", ".join(f"{t.name}{' (skip)' if t.skip else ''} {'x'.join(map(str, t.shape[1:]))}" for t in row.tensors))
        for row in table.rows if row.tensors
    ]
    print_table("what crosses the link (C x H x W, float32; the image as uint8)", ("plan", "tensors"), tensor_rows)
    print(
        "device MB = parameters + activations of the head (float32); MB = crossing payload per frame, "
        "ceil(values x bits / 8) per tensor (headers not counted; the image at 8 bits)"
    )
    if measured is not None:
        _print_measured(table, measured)
    return 0


def _measure(network, bits, config_path):
    """Load the config's device, server and link, and time every plan of ``network`` on them."""
    import tempfile
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..config import load_config
    from ..devices import make_runner
    from ..errors import UsageError
    from ..split import measure_split_plans

    loaded = load_config(config_path)
    config = loaded.config
    missing = [key for key, value in (("server", config.server), ("link", config.link)) if value is None]
    if missing:
        raise UsageError(f"{config_path} has no {' and no '.join(f'{k}:' for k in missing)} section; --config measures the "
                         "head on its device:, the tail on its server: and the transfer on its link:",
                         hint="add e.g. server: {kind: local} and link: {uplink_mbps: 100, rtt_ms: 2} "
                         "(`optiseg device link-test HOST --write CONFIG` measures a link)")
    steps = 1 + 2 * len(bits) * (len(network.build().stages()))
    with make_runner(config.device) as device, make_runner(config.server) as server, \
            tempfile.TemporaryDirectory(prefix="optiseg-split-") as folder, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     TimeRemainingColumn(), transient=True, console=stderr_console()) as bar:
        task = bar.add_task("measuring", total=steps)

        def step(text: str) -> None:
            bar.update(task, advance=1, description=text)

        return measure_split_plans(network, bits, device, server, config.link, Path(folder), step)


def _print_measured(table, measured) -> None:
    columns = ["plan"] + [f"{b}b {part}" for b in table.bits for part in ("device ms", "link ms", "server ms", "total ms")]
    rows = [["all on device"] + [f"{measured.device_ms:.2f}", "0", "0", f"{measured.device_ms:.2f}"] * len(table.bits)]
    for cut in measured.cuts:
        cells = ["all on server" if cut == "server" else f"after {cut}"]
        for b in table.bits:
            t = measured.timings[(cut, b)]
            cells += [f"{t.device_ms:.2f}", f"{t.link_ms:.2f}", f"{t.server_ms:.2f}", f"{t.latency_ms:.2f}"]
        rows.append(cells)
    print_table("measured per frame (device: head + encoding; server: decoding + tail; link: bytes over the "
                "config's bandwidth + one round trip)", columns, rows, justify_right=range(1, len(columns)))


def _plan_name(row) -> str:
    return {"device": "all on device", "server": "all on server"}.get(row.plan, f"after {row.after}")
