"""`optiseg cascade`: a small network on the device, a large one on a server, a router between them; the operating curve."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import human_count, print_json, print_table, stderr_console, study_config

DEFAULT_LINK = {"uplink_mbps": 100.0, "rtt_ms": 5.0}

DESCRIPTION = """\
Pair a small trained network (on the device) with a large one (on a server) and a router that
predicts, per image, how well the small network does (the share of pixels it gets right, or
with --target iou its IoU on the image); images it predicts below a threshold go to the
server. Sweeping the threshold gives the operating curve: share of images sent, test IoU
(each image scored by the model that handled it), expected latency per frame (device + share x
(upload + server + download)), device and server time, bytes per frame, MACs; next to it the
oracle router (knows both networks' true result on each image) and a random router at the same
shares.

Two routers are trained and reported: the decision network (the small network's frozen
features, spatial pyramid pooling, fully connected layers) and a ridge baseline on the small
network's output statistics. They learn from the validation split (--flip: and its mirror
images), which the small network never trained on: no network is trained again. --crossfit K adds
K-fold cross-fitting on the training split, which trains the small network K more times.

Parts are measured on their machines: the small network with its router on the study's
device, the large network on the study's server (this machine when the study has no server:
section); transfer times come from the study's link: section (--link-mbps/--rtt-ms override
it; without either, 100 Mbit/s and 5 ms). The image goes up as uint8 RGB at the large network's input
size, its mask comes down as a uint8 class map at that size. Everything is kept in the
cascade's folder and reused when the command runs again; one process builds in a folder at a
time (another waits, then reuses its files). In a study with mode: [..., cascade] the folder's
curve.json is the study's own (its cascade plans were made from it): this command reads it back
when its settings are the study's, and keeps a curve of other settings (--points, --router, link,
runners) in curves/<digest>.json beside it, never touching curve.json.
"""

EPILOG = """\
examples:
  optiseg cascade runs/conveyor                         fastest front member + best-IoU network
  optiseg cascade runs/conveyor --small 3 --large 7 --json
  optiseg cascade runs/conveyor --router baseline --points 11 --deploy deploy/cascade
  optiseg cascade --small-run runs/train/small --large-run runs/train/large --data study.yaml --link-mbps 50 --rtt-ms 10
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    cascade = subparsers.add_parser(
        "cascade",
        help="small network on the device, large one on a server, a router between them: the operating curve",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cascade.add_argument("study", nargs="?", type=Path,
                         help="study folder (e.g. runs/conveyor) or the study's config file")
    cascade.add_argument("--small", type=int, default=None, metavar="N",
                         help="trial of the small network (default: the fastest trained front member)")
    cascade.add_argument("--large", type=int, default=None, metavar="M",
                         help="trial of the large network (default: the trained plan with the best IoU)")
    cascade.add_argument("--small-run", type=Path, default=None, metavar="DIR",
                         help="instead of a study: the small network's `optiseg train` run folder")
    cascade.add_argument("--large-run", type=Path, default=None, metavar="DIR",
                         help="instead of a study: the large network's run folder")
    cascade.add_argument("--data", type=Path, default=None, metavar="CONFIG",
                         help="with --small-run/--large-run: a study config (its data:, device:, server:, link:) or a data folder (binary masks)")
    cascade.add_argument("--router", choices=("decision", "baseline"), default="decision",
                         help="the router deployed (default decision; both are reported)")
    cascade.add_argument("--target", choices=("accuracy", "iou"), default="accuracy",
                         help="what the routers predict of the small network per image: pixel accuracy (default) or its own IoU")
    cascade.add_argument("--flip", action="store_true",
                         help="the router also learns from each validation image's mirror image")
    cascade.add_argument("--crossfit", type=int, default=0, metavar="K",
                         help="also K-fold cross-fitting on the training split (trains the small network K times; default off)")
    cascade.add_argument("--points", type=int, default=21, help="thresholds on the curve (default 21)")
    cascade.add_argument("--link-mbps", type=float, default=None,
                         help="link bandwidth, Mbit/s, both ways (default: the study's link:, else 100)")
    cascade.add_argument("--rtt-ms", type=float, default=None,
                         help="link round-trip time, ms (default: the study's link:, else 5)")
    cascade.add_argument("-o", "--output", type=Path, default=None,
                         help="the cascade's folder (default: STUDY/cascades/SMALL+LARGE)")
    cascade.add_argument("--deploy", type=Path, default=None, metavar="DIR",
                         help="also write the deployment (models, scripts, thresholds, README) to DIR")
    cascade.add_argument("--threshold", type=float, default=None,
                         help="with --deploy: the default threshold (default: fastest point within 3 IoU points of the large network)")
    cascade.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    cascade.set_defaults(handler=run_cascade)


def run_cascade(args: argparse.Namespace) -> int:
    from ..cascade import CascadeSettings, build_cascade, cascade_runners, write_cascade_deployment
    from ..config import DeviceConfig, LinkConfig
    from ..data import DatasetCache, load_dataset
    from ..errors import UsageError

    if args.crossfit == 1 or args.crossfit < 0:
        raise UsageError(f"--crossfit {args.crossfit} is invalid: give 0 (off) or 2 or more folds")
    if args.threshold is not None and args.deploy is None:
        raise UsageError("--threshold only applies with --deploy DIR")
    source = _study_source(args) if args.study is not None else _run_source(args)
    config = source["config"]
    settings = CascadeSettings(router=args.router, target=args.target, flip=args.flip, points=args.points,
                               router_data="crossfit" if args.crossfit else "val", folds=args.crossfit or 3,
                               training=config.training if config is not None else None)
    link, link_note = _link(config, args, LinkConfig)
    device_config = config.device if config is not None else DeviceConfig()
    server_config = config.server if config is not None and config.server is not None else None
    server_note = "" if server_config is not None else " (this machine: no server: section)"
    folder = args.output or source["folder"]
    console = stderr_console()
    dataset = load_dataset(source["data"])
    cache = DatasetCache(dataset, budget_mb=source["data"].cache_mb)
    result = build_cascade(source["small"], source["large"], cache=cache,
                           runners=lambda: cascade_runners(device_config, server_config or DeviceConfig()), link=link,
                           folder=folder, settings=settings, owner=_owns_curve(args, config, folder, source["folder"]),
                           stage=lambda text: console.print(f"[dim]{text}[/]", highlight=False))
    written = write_cascade_deployment(result, args.deploy, threshold=args.threshold) if args.deploy else []
    if args.json:
        print_json({**result.as_dict(), "study": source.get("study"), "small_trial": source.get("small_trial"),
                    "large_trial": source.get("large_trial"), "notes": {"server": server_note.strip(" ()"), "link": link_note},
                    "deployed": [str(p) for p in written]})
        return 0
    _print_result(result, server_note=server_note, link_note=link_note)
    if written:
        print(f"deployment written to {args.deploy}: " + ", ".join(p.name for p in written))
    return 0


# ---------------------------------------------------------------- what to pair


def _study_source(args: argparse.Namespace) -> dict[str, Any]:
    from ..cascade import pick_pair, study_member
    from ..errors import UsageError
    from ..results import load_records
    from ..search import open_existing_study

    if args.small_run or args.large_run or args.data:
        raise UsageError("give a STUDY or --small-run/--large-run/--data, not both")
    handle = open_existing_study(args.study)
    config = study_config(handle)
    small, large = pick_pair(load_records(handle.study), handle.paths.folder, handle.name, small=args.small, large=args.large)
    if config is None:
        raise UsageError(f"the config of study {handle.name!r} was not found (looked for the original and {handle.paths.config_copy})",
                         hint="the data set, device and server come from it; run from the machine that ran the search")
    return {"config": config, "data": config.data, "small": study_member(handle.paths.folder, small),
            "large": study_member(handle.paths.folder, large),
            "folder": handle.paths.folder / "cascades" / f"{small.network.key}+{large.network.key}",
            "study": handle.name, "small_trial": small.number, "large_trial": large.number}


def _run_source(args: argparse.Namespace) -> dict[str, Any]:
    from ..cascade import CascadeMember
    from ..config import DataConfig, load_config
    from ..errors import UsageError

    missing = [flag for flag, value in (("--small-run", args.small_run), ("--large-run", args.large_run), ("--data", args.data)) if value is None]
    if missing:
        raise UsageError(f"give a STUDY, or --small-run, --large-run and --data together (missing: {', '.join(missing)})",
                         hint="e.g. optiseg cascade --small-run runs/train/small --large-run runs/train/large --data study.yaml")
    if args.small is not None or args.large is not None:
        raise UsageError("--small and --large pick trials of a STUDY; with run folders use --small-run/--large-run")
    if args.data.is_dir():
        config, data = None, DataConfig.model_validate({"root": str(args.data.resolve())})
        output = Path("runs")
    elif args.data.is_file():
        config = load_config(args.data).config
        data, output = config.data, config.output
    else:
        raise UsageError(f"--data {args.data} does not exist", hint="give a study config (YAML) or a data folder")
    small = CascadeMember.from_run_folder(args.small_run, label=str(args.small_run))
    large = CascadeMember.from_run_folder(args.large_run, label=str(args.large_run))
    return {"config": config, "data": data, "small": small, "large": large,
            "folder": output / "cascades" / f"{small.network.key}+{large.network.key}"}


def _link(config, args: argparse.Namespace, link_class) -> tuple[Any, str]:
    if args.link_mbps is not None or args.rtt_ms is not None:
        base = config.link.model_dump() if config is not None and config.link is not None else dict(DEFAULT_LINK)
        if args.link_mbps is not None:
            base.update(uplink_mbps=args.link_mbps, downlink_mbps=args.link_mbps)
        if args.rtt_ms is not None:
            base["rtt_ms"] = args.rtt_ms
        return _valid_link(link_class, base), "from --link-mbps/--rtt-ms"
    if config is not None and config.link is not None:
        return config.link, "the study's link: section"
    return link_class(**DEFAULT_LINK), "default (no link: section; set --link-mbps and --rtt-ms)"


def _valid_link(link_class, values: dict[str, Any]):
    from pydantic import ValidationError

    from ..errors import UsageError

    try:
        return link_class.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise UsageError(f"--link-mbps/--rtt-ms: {'.'.join(map(str, problem['loc']))} {problem['msg'].lower()}",
                         hint="give a bandwidth above 0 Mbit/s and a round-trip time of 0 ms or more") from None


# ---------------------------------------------------------------- the tables


def _print_result(result, *, server_note: str, link_note: str) -> None:
    from ..cascade._device_graph import TARGET_WORDS

    curves = result.curves
    small, large = result.references["small"], result.references["large"]
    by_count = {name: {p.sent: p for p in curves[name]} for name in ("oracle", "random")}

    def iou(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def row(label: str, point, oracle=None, random=None) -> list[str]:
        delta = "" if point.iou is None or large.iou is None else f"{100 * (point.iou - large.iou):+.2f}"
        return [label, f"{point.share_sent:.0%}", iou(point.iou), delta, iou(oracle.iou) if oracle else "",
                iou(random.iou) if random else "", f"{point.latency_ms:.2f}", f"{point.device_latency_ms:.2f}",
                f"{point.server_latency_ms:.2f}", f"{point.link_bytes / 1e3:.1f}", human_count(point.macs)]

    rows = [row("small alone", small)]
    rows += [row(f"{p.threshold:.4f}", p, by_count["oracle"].get(p.sent), by_count["random"].get(p.sent)) for p in result.points]
    rows.append(row("large alone", large))
    columns = ["threshold", "sent", "IoU", "vs large pt", "oracle IoU", "random IoU", "latency ms", "device ms",
               "server ms", "KB/frame", "MACs"]
    print_table(
        f"cascade: {result.small.network.describe()} ({result.small.label}) -> {result.large.network.describe()} "
        f"({result.large.label}), {result.router} router, test split",
        columns, rows, justify_right=range(1, len(columns)),
    )
    fit = result.router_fit
    correlation = ", ".join(f"{name} {_fmt(result.rank_correlation.get(name))}" for name in ("decision", "baseline"))
    per_image = "; ".join(f"{role} " + ", ".join(f"{split} {m['iou']:.3f} / {m['accuracy']:.4f}" for split, m in splits.items())
                          for role, splits in result.per_image.items())
    latencies = result.latencies
    print_table(None, ("", ""), [
        ("router", f"{result.router}, predicting the small network's {TARGET_WORDS[result.target]}; "
                   f"rank correlation with the truth (test): {correlation}"),
        ("router trained on", f"{fit.get('rows')} rows from {fit.get('source_images')} images of {', '.join(fit.get('sources', []))} "
                              f"(scored by {', '.join(fit.get('scored_by', []))}); features: {fit.get('tapped')}"),
        ("mean per image IoU / accuracy", per_image),
        ("device", f"{result.measured_on['device']}: small + router {_ms(latencies, 'device-' + result.router)}, "
                   f"small alone {_ms(latencies, 'small')}"),
        ("server", f"{result.measured_on['server']}{server_note}: large {_ms(latencies, 'large')}"),
        ("link", f"{result.measured_on['link']} ({link_note}); image up {result.costs[result.router].upload_bytes:,} B, "
                 f"mask down {result.costs[result.router].download_bytes:,} B per sent frame"),
        ("files", _files_note(result)),
    ])
    print("IoU: each test image scored by the model that handled it (foreground IoU for binary data, mean IoU otherwise); "
          "latency = device + share x (upload + server + download); oracle and random at the same share")


def _owns_curve(args: argparse.Namespace, config, folder, study_folder) -> bool:
    """Whether this command's curve may be the folder's ``curve.json``: not in the folder of a study's own cascade
    (``mode:`` lists ``cascade``), which keeps its plans' curve there."""
    in_study = args.study is not None and study_folder is not None and Path(folder).resolve() == Path(study_folder).resolve()
    return not (in_study and config is not None and "cascade" in list(config.mode))


def _files_note(result) -> str:
    """The cascade's folder, and where this curve is kept when it is not the folder's own ``curve.json``."""
    from ..cascade import CURVE

    curve = result.curve_file
    if curve is None or curve.name == CURVE:
        return str(result.folder)
    return (f"{result.folder} (this curve: {Path(curve.parent.name) / curve.name}; {CURVE} keeps the study's own, "
            "which its cascade plans were made from)")


def _ms(latencies, name: str) -> str:
    return f"{float(latencies[name]['median_ms']):.2f} ms" if name in latencies else "n/a"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
