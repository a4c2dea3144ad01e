"""`optiseg exits`: the early-exit figures of one trained network with exits, measured on the device."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import human_count, print_json, print_table, stderr_console

EXITS_EPILOG = """\
examples:
  optiseg exits runs/exits-study --trial 3                 a trial of a study (search_space: {exits: [0, 2]})
  optiseg train study.yaml --knobs a=1,exits=2 --resolution 192 -o runs/exits2
  optiseg exits --run runs/exits2 --data study.yaml
  optiseg exits --run runs/exits2 --data study.yaml --device pi.yaml --confidence pixel_share --json
  optiseg exits --run runs/exits2 --data study.yaml --thresholds 0.8:0.99:0.01 --deploy deploy/exits2

The chain of stage graphs is written to RUN/exits (or -o); each stage graph is timed on the
device (the config's device:, or --device), and the time to exit k is the sum of stages 1..k.
The policy: an image leaves at the first exit whose confidence reaches the threshold.
"""


@dataclass(frozen=True)
class ExitsJob:
    """What the analysis needs, however it was named: the network and its trained module, the data set, the device, a folder.

    ``optiseg exits --run RUN --data CONFIG`` makes one from a training run
    folder; a study's trial resolves to the same five things.
    """

    network: Any  # Network
    model: Any  # nn.Module with trained weights
    dataset: Any  # Dataset
    cache_mb: float
    device: Any  # DeviceConfig
    folder: Path
    label: str


def register(subparsers: argparse._SubParsersAction) -> None:
    exits = subparsers.add_parser(
        "exits",
        help="early exits of a trained network: per-exit IoU, MACs and device latency, the operating curve",
        description=(
            "Export a trained network with side exits as a chain of stage graphs (stage k gives exit k's logits and\n"
            "the features later stages need), time each stage on the device, run the exit policy on every test\n"
            "image, and print the per-exit table (IoU if every image left there, MACs and latency up to there)\n"
            "and the operating curve (per threshold: share of images leaving at each exit, IoU, expected latency),\n"
            "with the fastest point that loses at most --max-iou-loss of IoU against the whole network."
        ),
        epilog=EXITS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exits.add_argument("study", type=Path, nargs="?", default=None,
                       help="a study (its folder or its config file): analyse its trial --trial N")
    exits.add_argument("--trial", type=int, default=None, help="the study's trial whose trained network has exits")
    exits.add_argument("--run", type=Path, default=None, help="or: a run folder of `optiseg train` (its best.pt) whose network has exits")
    exits.add_argument("--data", type=Path, default=None,
                       help="with --run: the study config the run was trained with (its data: and device:), or a data folder (binary masks)")
    exits.add_argument("--device", type=Path, default=None, help="YAML file with a device: section (default: the config's, else this machine)")
    exits.add_argument("--confidence", default="max_prob",
                       help="max_prob (mean largest class probability, default) or pixel_share (share of pixels >= --pixel-probability)")
    exits.add_argument("--pixel-probability", type=float, default=0.9, help="pixel_share: a pixel is sure at this probability (default 0.9)")
    exits.add_argument("--thresholds", default=None,
                       help="thresholds to sweep: comma-separated or START:STOP:STEP (default: every threshold at which an image's exit changes)")
    exits.add_argument("--max-iou-loss", type=float, default=0.01, help="IoU the best point may lose against the whole network (default 0.01)")
    exits.add_argument("--split", choices=("test", "val"), default="test", help="images the policy runs on (default test)")
    exits.add_argument("-o", "--output", type=Path, default=None, help="folder of the stage graphs (default RUN/exits)")
    exits.add_argument("--deploy", type=Path, default=None,
                       help="also write a deployment folder: stage graphs, exits.json (threshold table), early_exit.py")
    exits.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    exits.set_defaults(handler=run_exits)


def run_exits(args: argparse.Namespace) -> int:
    from ..data import DatasetCache
    from ..devices import make_runner
    from ..exits import analyse_exits, write_exit_deployment

    thresholds = parse_thresholds(args.thresholds)
    _check_options(args)
    job = _job(args)
    console = stderr_console()
    with console.status(f"exporting, timing and running the exit chain of {job.label}"):
        with make_runner(job.device) as runner:
            report = analyse_exits(
                job.model, job.network, cache=DatasetCache(job.dataset, budget_mb=job.cache_mb), runner=runner,
                folder=job.folder, thresholds=thresholds, confidence=args.confidence,
                pixel_probability=args.pixel_probability, max_iou_loss=args.max_iou_loss, split=args.split,
            )
    payload = report.as_dict()
    if args.deploy is not None:
        threshold = report.best.threshold if report.best is not None else math.inf
        written = write_exit_deployment(report.chain, report.curve, args.deploy, threshold=threshold,
                                        confidence=args.confidence, latency=report.latency.as_dict())
        payload["deployment"] = {"folder": str(args.deploy), "threshold": None if math.isinf(threshold) else threshold,
                                 "files": [p.name for p in written]}
    if args.json:
        print_json(payload)
        return 0
    print_report(report, job.label)
    if args.deploy is not None:
        print(f"deployment written to {args.deploy} (threshold {threshold_text(threshold)}): "
              f"{', '.join(payload['deployment']['files'])}")
    return 0


def parse_thresholds(text: str | None) -> list[float] | None:
    """``0.8,0.9`` or ``0.5:1:0.05`` (both ends included) -> the thresholds; None -> every threshold where a decision changes."""
    from ..errors import UsageError

    if text is None:
        return None
    bad = UsageError(f"--thresholds {text!r} is invalid: write comma-separated numbers (0.8,0.9,0.95) or START:STOP:STEP (0.5:1:0.05)")
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not step > 0 or stop < start:
                raise bad
            count = int(round((stop - start) / step)) + 1
            return [round(start + i * step, 10) for i in range(count) if start + i * step <= stop + 1e-9]
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise bad from None
    if not values:
        raise bad
    return values


def _check_options(args: argparse.Namespace) -> None:
    from ..errors import UsageError
    from ..exits import CONFIDENCES

    if args.confidence not in CONFIDENCES:
        raise UsageError(f"--confidence {args.confidence!r} is unknown: use one of {', '.join(CONFIDENCES)}")
    if not 0 < args.pixel_probability <= 1:
        raise UsageError(f"--pixel-probability {args.pixel_probability:g} is invalid: give a probability in (0, 1], e.g. 0.9")
    if not 0 <= args.max_iou_loss <= 1:
        raise UsageError(f"--max-iou-loss {args.max_iou_loss:g} is invalid: give a share of IoU in [0, 1], e.g. 0.01 for one point")


def _job(args: argparse.Namespace) -> ExitsJob:
    from ..errors import UsageError

    if args.study is not None:
        if args.run is not None or args.data is not None:
            raise UsageError("give a STUDY with --trial N, or --run RUN with --data CONFIG, not both")
        if args.trial is None:
            raise UsageError(f"which trial of {args.study}? add --trial N", hint=f"the trials are listed by `optiseg front {args.study} --all`")
        return job_from_trial(args.study, args.trial, args.device, args.output)
    if args.run is None or args.data is None:
        raise UsageError("give a STUDY with --trial N, or --run RUN with --data CONFIG",
                         hint="e.g. optiseg exits runs/study --trial 3, or optiseg exits --run runs/exits2 --data study.yaml")
    if args.trial is not None:
        raise UsageError("--trial picks a trial of a STUDY; with --run the network is the run's")
    return job_from_run(args.run, args.data, args.device, args.output)


def job_from_trial(study: Path, number: int, device: Path | None, output: Path | None) -> ExitsJob:
    """The :class:`ExitsJob` of a study's trial: its network's best weights, the study's data set and device."""
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..config.device import load_device_config
    from ..data import load_dataset
    from ..errors import UsageError
    from ..layout import StudyLayout
    from ..modes.early_exit import has_exits
    from ..records import load_records
    from ..search import open_existing_study
    from ._common import study_config

    handle = open_existing_study(study)
    records = {r.number: r for r in load_records(handle.study)}
    if number not in records:
        raise UsageError(f"--trial {number}: study {handle.name!r} has no trial {number}; it has trials 0 to {max(records, default=-1)}")
    record = records[number]
    if record.plan is None or record.artifacts is None or len(record.plan.networks) != 1:
        raise UsageError(f"--trial {number}: trial {number} of {handle.name!r} has no network to analyse ({record.status})",
                         hint=f"pick a trained trial from `optiseg front {study} --all`")
    network = record.plan.network
    if not has_exits(network):
        raise UsageError(f"--trial {number}: its network ({network.describe()}) has no exits",
                         hint="pick a trial whose knobs have exits >= 1 (search with `search_space: {exits: [0, 2]}`)")
    folder = StudyLayout(handle.paths.folder).network_at(record.artifacts)
    if not folder.best_checkpoint.is_file():
        raise UsageError(f"--trial {number}: its network was not trained here ({folder.best_checkpoint} is missing; {record.status})",
                         hint="run it on the machine that trained it, or pick a trained trial from `optiseg front`")
    config = study_config(handle)
    if config is None:
        raise UsageError(f"the config of study {handle.name!r} was not found (looked for the original and {handle.paths.config_copy})",
                         hint="the data set and device come from it; run from the machine that ran the search")
    device_config = load_device_config(device) if device is not None else config.device
    return ExitsJob(network=network, model=model_from_checkpoint(load_checkpoint(folder.best_checkpoint)),
                    dataset=load_dataset(config.data), cache_mb=config.data.cache_mb, device=device_config,
                    folder=output or folder.path / "exits", label=f"trial {number}: {network.describe()}")


def job_from_run(run: Path, data: Path, device: Path | None, output: Path | None) -> ExitsJob:
    """The :class:`ExitsJob` of a training run folder: its best weights, the data set and device of ``data``."""
    from ..checkpoint import load_checkpoint, model_from_checkpoint, network_from_checkpoint
    from ..config import DataConfig, DeviceConfig, load_config
    from ..config.device import load_device_config
    from ..data import load_dataset
    from ..errors import UsageError
    from ..models import get_model_entry
    from ..training import BEST

    if not (run / BEST).is_file():
        raise UsageError(f"{run} is not a finished run folder of `optiseg train`: {run / BEST} is missing",
                         hint="train one first, e.g. optiseg train study.yaml --knobs exits=2 -o RUN")
    payload = load_checkpoint(run / BEST)
    network = network_from_checkpoint(payload)
    if "exits" not in get_model_entry(network.model).knob_names or network.knob("exits") == 0:
        raise UsageError(f"the network in {run} ({network.describe()}) has no exits",
                         hint="train one with the knob exits (1 to 3), e.g. --knobs a=1,exits=2 (fastscnn, bisenetv2)")
    if data.is_dir():
        data_config, device_config = DataConfig(root=data), DeviceConfig()
    else:
        config = load_config(data).config
        data_config, device_config = config.data, config.device
    if device is not None:
        device_config = load_device_config(device)
    dataset = load_dataset(data_config)
    if list(dataset.class_names) != list(payload.get("class_names") or dataset.class_names):
        raise UsageError(f"{run} was trained on classes {payload['class_names']}, but {data} has {list(dataset.class_names)}",
                         hint="give the config the run was trained with")
    return ExitsJob(network=network, model=model_from_checkpoint(payload), dataset=dataset, cache_mb=data_config.cache_mb,
                    device=device_config, folder=output or run / "exits", label=network.describe())


def threshold_text(threshold: float) -> str:
    """A threshold as printed: ``never`` for the policy that never leaves early (``inf``)."""
    return "never" if math.isinf(threshold) else f"{threshold:.6g}"


def saving_text(saving: float) -> str:
    return f"{saving:.1%} saved" if saving >= 0 else f"{-saving:.1%} slower"


def print_report(report, label: str) -> None:
    """The per-exit table, the operating curve (its efficient points) and the best point, as rich tables."""
    from ..exits import efficient_points

    def iou(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = [(row.name, iou(row.iou), human_count(row.macs), f"{row.latency_ms:.3f}") for row in report.table]
    rows.append(("whole network (no exit heads)", iou(report.reference.iou), human_count(report.reference.macs),
                 f"{report.reference.latency_ms:.3f}"))
    print(f"{label}: {report.images} {report.split} images, latency on {report.latency.device_key}, "
          f"chain of {len(report.chain.stages)} stage graphs in {report.chain.folder} (parity {report.chain.max_abs_diff:.1e})")
    print_table("each output, every image leaving there", ("output", "IoU", "MACs up to it", "ms up to it"), rows,
                justify_right=range(1, 4))
    names = report.chain.exits
    points = efficient_points(report.curve)
    curve_rows = [
        (threshold_text(p.threshold), *(f"{s:.0%}" for s in p.shares), iou(p.iou), f"{p.expected_ms:.3f}",
         human_count(p.expected_macs), "best" if p is report.best else "")
        for p in points
    ]
    print_table(
        f"operating curve, confidence {report.confidence}"
        + (f" (pixels >= {report.pixel_probability:g})" if report.confidence == "pixel_share" else "")
        + f": the {len(points)} points no other beats, of {len(report.curve)} thresholds (--json: all)",
        ("threshold", *(f"at {n}" for n in names), "IoU", "expected ms", "expected MACs", ""),
        curve_rows, justify_right=range(0, len(names) + 4),
    )
    if report.best is None:
        print(f"no threshold keeps the IoU within {report.max_iou_loss:g} of the whole network's {iou(report.reference.iou)}")
    else:
        print(f"best at <= {report.max_iou_loss:g} IoU lost: threshold {threshold_text(report.best.threshold)}, "
              f"IoU {iou(report.best.iou)} (whole network {iou(report.reference.iou)}), expected {report.best.expected_ms:.3f} ms "
              f"against {report.reference.latency_ms:.3f} ms for the whole network: {saving_text(report.saving)}")
