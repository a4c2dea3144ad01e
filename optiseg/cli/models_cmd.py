"""`optiseg models`, `optiseg summary` and `optiseg export`: inspect and export one architecture."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ._common import format_knobs, human_count, parse_knobs, print_json, print_table, stderr_console

KNOBS_HELP = "architecture knobs as NAME=VALUE pairs, e.g. a=0.5,t=4,r=2,pp=0 (see `optiseg models`)"


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="list the architectures and their knobs",
        description="List every registered architecture with its knobs, defaults and valid ranges.",
    )
    models.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    models.set_defaults(handler=run_models)

    summary = subparsers.add_parser(
        "summary",
        help="parameters, MACs, memory and ONNX size of one candidate",
        description=(
            "Build one candidate network and report its parameters, multiply-accumulates, input and "
            "activation memory of one forward pass, and the size of its ONNX file."
        ),
        epilog=(
            "examples:\n"
            "  optiseg summary --model fastscnn --knobs a=0.25,t=2,r=1,pp=0 --resolution 192\n"
            "  optiseg summary --model bisenetv2 --resolution 544x960 --classes 3 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_network_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    summary.set_defaults(handler=run_summary)

    export = subparsers.add_parser(
        "export",
        help="export one candidate (optionally trained) to ONNX with a parity check",
        description=(
            "Export a network to ONNX for a fixed input shape (1, C, H, W), opset 17, BatchNorm folded. "
            "The file is checked with onnx.checker and compared with PyTorch through onnxruntime "
            "(max abs difference <= 1e-4) before it is written. Its metadata_props carry the model, knobs, "
            "resolution, classes, channel order and normalization a deployer needs."
        ),
        epilog=(
            "examples:\n"
            "  optiseg export --model fastscnn --knobs a=0.5 --resolution 192 -o fastscnn.onnx\n"
            "  optiseg export --checkpoint runs/train/checkpoint.pt --resolution 192 -o model.onnx"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_network_arguments(export, model_required=False)
    export.add_argument("--checkpoint", type=Path, help="trained weights (model, knobs and classes are read from it)")
    export.add_argument("-o", "--output", type=Path, required=True, help="where to write the .onnx file")
    export.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    export.set_defaults(handler=run_export)


def _add_network_arguments(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    parser.add_argument("--model", required=model_required, help="architecture name (see `optiseg models`)")
    parser.add_argument("--knobs", default=None, help=KNOBS_HELP)
    parser.add_argument("--resolution", required=True, help="input size: HxW (e.g. 544x960) or one side (e.g. 192)")
    parser.add_argument("--classes", type=int, default=None, help="output logits: 1 = binary (default), C >= 2 = C classes")
    parser.add_argument("--in-channels", type=int, default=None, choices=(1, 3), help="3 = RGB (default), 1 = luma")


def run_models(args: argparse.Namespace) -> int:
    from ..models import get_model_entry, list_models

    entries = [get_model_entry(name) for name in list_models()]
    if args.json:
        print_json(
            {
                e.name: {
                    "summary": e.summary,
                    "knobs": {
                        k.name: {"default": k.default, "type": k.kind.__name__, "range": k.range_text(), "help": k.help}
                        for k in e.knobs
                    },
                }
                for e in entries
            }
        )
        return 0
    for entry in entries:
        rows = [(k.name, _show_default(k.default), k.range_text(), k.help) for k in entry.knobs]
        print_table(f"{entry.name}: {entry.summary}", ("knob", "default", "valid values", "meaning"), rows)
    return 0


def _show_default(value) -> str:
    return str(int(value)) if isinstance(value, bool) else f"{value:g}"


def _resolve_network(args: argparse.Namespace):
    """(model name, knobs, classes, in_channels, resolution, checkpoint payload or None) from the arguments."""
    from ..errors import UsageError
    from ..models import get_model_entry, parse_resolution

    resolution = parse_resolution(args.resolution)
    payload = None
    if getattr(args, "checkpoint", None) is not None:
        from ..checkpoint import load_checkpoint

        payload = load_checkpoint(args.checkpoint)
        for flag, given, stored in (
            ("--model", args.model, payload["model"]),
            ("--classes", args.classes, payload["num_classes"]),
            ("--in-channels", args.in_channels, payload["in_channels"]),
        ):
            if given is not None and given != stored:
                raise UsageError(f"{flag} {given} disagrees with the checkpoint {args.checkpoint} ({stored}); drop {flag}")
        if args.knobs:
            raise UsageError(f"--knobs cannot be combined with --checkpoint: the knobs are those stored in {args.checkpoint}")
        name, classes, in_channels = payload["model"], payload["num_classes"], payload["in_channels"]
        knobs = get_model_entry(name).resolve_knobs(payload["knobs"])
    else:
        if args.model is None:
            raise UsageError("give --model (or --checkpoint with trained weights)")
        name = args.model
        knobs = get_model_entry(name).resolve_knobs(parse_knobs(args.knobs))
        classes = 1 if args.classes is None else args.classes
        in_channels = 3 if args.in_channels is None else args.in_channels
    return name, knobs, classes, in_channels, resolution, payload


def run_summary(args: argparse.Namespace) -> int:
    from ..export import export_onnx
    from ..models import format_resolution
    from ..network import Network
    from ..profile import profile_model

    name, knobs, classes, in_channels, resolution, _ = _resolve_network(args)
    network = Network.create(name, knobs, resolution, in_channels=in_channels, num_classes=classes)
    model = network.build()
    profile = profile_model(model, network.input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(model, Path(tmp) / "model.onnx", network)
    result = {
        "model": name,
        "knobs": network.knob_dict,
        "resolution": format_resolution(resolution),
        "classes": classes,
        "in_channels": in_channels,
        "params": profile.params,
        "macs": profile.macs,
        "input_shape": list(profile.input_shape),
        "input_mb": round(profile.input_mb, 4),
        "activation_mb": round(profile.activation_mb, 3),
        "onnx_mb": round(exported.size_mb, 4),
    }
    exits = [s for s in model.stages() if s.exit is not None]
    if exits:
        from ..exits import cumulative_exit_macs

        result["exit_macs"] = cumulative_exit_macs(model, network)
    if args.json:
        print_json(result)
        return 0
    rows = [
        ("model", f"{name}  {format_knobs(network.knob_dict)}"),
        ("input", f"{'x'.join(map(str, profile.input_shape))}  ({profile.input_mb:.2f} MB)"),
        ("classes", f"{classes} ({'binary, one logit' if classes == 1 else 'softmax logits'})"),
        ("parameters", f"{profile.params:,}  ({human_count(profile.params)})"),
        ("multiply-accumulates", f"{profile.macs:,}  ({human_count(profile.macs)})" + (", without exits" if exits else "")),
        ("activation memory", f"{profile.activation_mb:.2f} MB (one forward pass, float32)"),
        ("ONNX file", f"{exported.size_mb:.3f} MB"),
        *((f"MACs up to {name} (as a chain)", f"{macs:,}  ({human_count(macs)})") for name, macs in result.get("exit_macs", {}).items()),
    ]
    print_table(None, ("", "value"), rows)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .._paths import require_output
    from ..checkpoint import model_from_checkpoint
    from ..export import export_onnx
    from ..models import format_resolution
    from ..network import Network

    require_output(args.output, "file", "-o")
    name, knobs, classes, in_channels, resolution, payload = _resolve_network(args)
    network = Network.create(name, knobs, resolution, in_channels=in_channels, num_classes=classes)
    model = model_from_checkpoint(payload) if payload is not None else network.build()
    class_names = payload.get("class_names") if payload else None
    with stderr_console().status(f"exporting {name} at {format_resolution(resolution)}"):
        result = export_onnx(model, args.output, network, class_names=class_names)
    report = {
        "path": str(result.path),
        "onnx_mb": round(result.size_mb, 4),
        "max_abs_diff": result.max_abs_diff,
        "metadata": result.metadata,
    }
    if args.json:
        print_json(report)
        return 0
    print_table(
        f"wrote {result.path}",
        ("", "value"),
        [
            ("size", f"{result.size_mb:.3f} MB"),
            ("parity (max |onnxruntime - torch|)", f"{result.max_abs_diff:.2e}"),
            *((key, value) for key, value in result.metadata.items()),
        ],
    )
    return 0
