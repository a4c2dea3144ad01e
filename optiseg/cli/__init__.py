"""The `optiseg` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module registers its subcommands; heavy libraries are imported inside the handlers,
# so `optiseg --help` answers at once.
COMMAND_MODULES = (
    "search_cmd", "confirm_cmd", "report_cmd", "models_cmd", "train_cmd", "data_cmd", "device_cmd", "split_cmd",
    "exits_cmd", "cascade_cmd",
)

DESCRIPTION = """\
Search the IoU-latency Pareto front of real-time segmentation networks
(Fast-SCNN, BiSeNetV2, U-Net) for your data and your edge device.
"""

EPILOG = """\
the main job:
  optiseg search examples/quickstart.yaml          search the Pareto front (resumable)
  optiseg front runs/quickstart                    print the front
  optiseg confirm runs/quickstart                  measure the front again, interleaved: intervals, ties
  optiseg report runs/quickstart --open            interactive offline HTML report
  optiseg deploy runs/quickstart --trial N -o DIR  a trained ONNX for the device

one candidate, data and devices:
  optiseg models | summary | export | train        architectures, costs, ONNX, training
  optiseg split --model M --resolution HxW         cut points: device cost, tensors crossing, bitrate
  optiseg device link-test HOST [--write CFG]      bandwidth and round-trip time to a server, as a config's link:
  optiseg exits STUDY --trial N                    early exits: per-exit IoU, MACs, latency; operating curve
  optiseg cascade STUDY [--small N] [--large M]    small on the device, hard images to a server: the curve
  optiseg data check CONFIG | data synth OUT        validate a data set, make a synthetic one
  optiseg device check NAME | device trust NAME    prepare a device; optiseg bench MODEL.onnx

Run `optiseg COMMAND --help` for the options and examples of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="optiseg",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"optiseg {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `optiseg` console script; returns the exit status."""
    from ..errors import OptisegError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except OptisegError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as exc:  # a bug: its traceback is shown as Python would, with every credential masked
        import traceback

        from ..secrets import mask_credentials

        sys.stderr.write(mask_credentials("".join(traceback.format_exception(exc))))
        return 1


def _print_error(message: str) -> None:
    """Print a user-facing failure on stderr; every message goes through the one credential mask."""
    from rich.console import Console
    from rich.markup import escape

    from ..secrets import mask_credentials

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(mask_credentials(message))}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
