"""`optiseg train`: train one candidate on the config's data set into a run folder."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._common import format_knobs, parse_knobs, print_json, print_table, stderr_console

RUN_FILES = "checkpoint.pt (last epoch, for resume), best.pt, metrics.json, model.onnx, train.log"


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train one candidate and write its checkpoint, metrics and ONNX",
        description=(
            "Train one network on the data set of CONFIG with its `training:` settings, score the best\n"
            "epoch on the test split at the images' original size, and write a run folder:\n"
            f"  {RUN_FILES}.\n"
            "Run the same command again to resume an interrupted run after its last finished epoch;\n"
            "a finished run is not trained again."
        ),
        epilog=(
            "examples:\n"
            "  optiseg train study.yaml --model fastscnn --knobs a=0.5,t=4 --resolution 192 --epochs 30\n"
            "  optiseg train study.yaml --resolution 256x448 -o runs/wide --json\n"
            "  optiseg train study.yaml --knobs a=0.25,r=1,pp=0 --resolution 128 --epochs 10 \\\n"
            "      --init-from runs/train/fastscnn-192x192-rgb-c1-a1_t6_r3_pp0/best.pt"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", type=Path, help="study YAML file (data: and training: sections)")
    train.add_argument("--model", default=None, help="architecture (default: the config's model)")
    train.add_argument("--knobs", default=None, help="NAME=VALUE pairs, e.g. a=0.5,t=4,r=2,pp=0 (missing knobs: defaults)")
    train.add_argument("--resolution", default=None, help="input HxW or one side, e.g. 192 (default: the config's resolution)")
    train.add_argument("--in-channels", type=int, choices=(1, 3), default=3, help="3 = RGB (default), 1 = luma Y")
    train.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    train.add_argument("-o", "--output", type=Path, default=None, help="run folder (default: OUTPUT/train/<network key>, e.g. fastscnn-192x192-rgb-c1-a0.5_t6_r3_pp1)")
    train.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                       help="start from the weights of a trained network that contains this one (its best.pt or "
                            "checkpoint.pt): the same shape at any resolution, or a wider/deeper one of the same "
                            "family, whose leading slices are taken (width slicing); ignored when the run resumes")
    train.add_argument("--no-onnx", action="store_true", help="do not export model.onnx")
    train.add_argument("--json", action="store_true", help="print one JSON object (the metrics) instead of a table")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .._paths import require_output
    from ..config import TrainingConfig, check_batch_size, load_config
    from ..data import DatasetCache, load_dataset
    from ..errors import UsageError
    from ..models import format_resolution, get_model_entry, parse_resolution
    from ..network import Network
    from ..training import train_network

    if args.output is not None:
        require_output(args.output, "folder", "-o")
    loaded = load_config(args.config)
    config = loaded.config
    model = args.model or config.model
    knobs = get_model_entry(model).resolve_knobs(parse_knobs(args.knobs))
    if args.resolution is None and config.resolution is None:
        raise UsageError("give --resolution (e.g. 192), or set `resolution:` in the config")
    resolution = parse_resolution(args.resolution if args.resolution is not None else config.resolution)
    training = config.training
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs {args.epochs} is invalid: train at least 1 epoch")
        training = TrainingConfig.model_validate({**training.model_dump(), "epochs": args.epochs})

    console = stderr_console()
    with console.status(f"checking the data set {config.data.root}"):
        dataset = load_dataset(config.data)
    check_batch_size(training, len(dataset.train), str(loaded.path))
    for problem in dataset.warnings:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    network = Network.create(model, knobs, resolution, in_channels=args.in_channels, num_classes=dataset.num_classes)
    run_dir = args.output or config.output / "train" / network.key
    if args.output is None:  # the default run folder, before any training
        require_output(run_dir, "folder", "the run folder")
    initial = _initial_weights(args.init_from, network, run_dir) if args.init_from is not None else None
    cache = DatasetCache(dataset, budget_mb=config.data.cache_mb)
    with ProgressReporter(console, f"{model} {format_knobs(network.knob_dict)} {format_resolution(resolution)}") as reporter:
        result = train_network(
            network, dataset=dataset, training=training, run_dir=run_dir, cache=cache, reporter=reporter,
            export_onnx=not args.no_onnx, initial_weights=initial,
        )
    metrics = {**result.metrics, "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
               "onnx": str(result.onnx) if result.onnx else None}
    if args.json:
        print_json(metrics)
        return 0
    _print_summary(metrics)
    return 0


def _initial_weights(path: Path, network, run_dir: Path):
    """``--init-from``'s weights, refused (exit 2) when they cannot start ``network`` or ``run_dir`` holds a run
    that started otherwise (it would resume, or be returned, as it is)."""
    from ..checkpoint import load_checkpoint
    from ..errors import UsageError
    from ..training import CHECKPOINT, InitialWeights, inheritable, knob_mismatch
    from ..training.inherit import state_shapes

    payload = load_checkpoint(path)
    source = f"{payload.get('model')} {format_knobs(payload.get('knobs') or {})}"
    wanted = f"{network.model} {format_knobs(network.knob_dict)}"
    if (payload.get("model"), payload.get("num_classes"), payload.get("in_channels")) != (
            network.model, network.num_classes, network.in_channels):
        why = (f"it is {payload.get('model')} with {payload.get('num_classes')} output(s) and {payload.get('in_channels')} "
               f"input channel(s); this is {network.model} with {network.num_classes} and {network.in_channels}")
    else:
        why = knob_mismatch(network.model, payload.get("knobs") or {}, network.knob_dict)
        if why is None and not inheritable(state_shapes(payload["state_dict"]), network.build()):
            why = f"{source} does not contain {wanted} (narrower, shallower or less expanded somewhere)"
    if why is not None:
        raise UsageError(f"--init-from {path} cannot start {wanted}: {why}",
                         hint="start from a network of the same family, classes and input channels that is at least as "
                              "wide, expanded and deep, with the same modules on (or the same shape at another resolution)")
    if (run_dir / CHECKPOINT).is_file():
        started = load_checkpoint(run_dir / CHECKPOINT).get("initialized_from")
        if started != str(path):
            raise UsageError(f"{run_dir} already holds a run of this network started from "
                             f"{started or 'random weights'}; it would go on from there, not from {path}",
                             hint="train into a new folder (-o), or remove that one")
    return InitialWeights(payload["state_dict"], str(path))


def _print_summary(m: Mapping[str, Any]) -> None:
    def figure(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    resumed = f" (resumed after epoch {', '.join(map(str, m['resumed_from']))})" if m.get("resumed_from") else ""
    rows = [
        ("model", f"{m['model']}  {format_knobs(m['knobs'])}  {m['resolution']}  in_channels={m['in_channels']}"),
        ("test IoU" + (" (foreground)" if m["num_classes"] == 1 else " (mean over classes)"), figure(m["test_iou"])),
        ("test mean IoU", figure(m["test_miou"])),
        ("test Dice", figure(m["test_dice"])),
        *((f"  IoU {name}", figure(value)) for name, value in m["test_class_iou"].items()),
        ("best epoch (val IoU, val loss)", f"{m['best_epoch']} ({figure(m['val_iou'])}, {figure(m['val_loss'])})"),
        ("epochs run", f"{m['epochs_run']} of {m['epochs']}{' (stopped early)' if m['stopped_early'] else ''}{resumed}"),
        *((("started from", m["initialized_from"]),) if m.get("initialized_from") else ()),
        ("time", f"{m['train_seconds']:.0f} s, {m['seconds_per_epoch']:.1f} s/epoch, {m['images_per_second']:.1f} img/s on {m['device']}"),
        ("run folder", m["run_dir"]),
        ("weights", m["checkpoint"]),
        ("ONNX", m["onnx"] or "not exported"),
    ]
    print_table(None, ("", "value"), rows)


class ProgressReporter:
    """A rich progress bar on stderr (epoch, batches, loss, val IoU, images/s, ETA) on a terminal, and a line per epoch."""

    def __init__(self, console, title: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.title = title
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = None
        self.epochs = 0
        self.start_epoch = 0
        self.started = 0.0
        self.last: Mapping[str, Any] = {}
        self.batch_started = 0.0
        self.batch_size = 0

    def __enter__(self) -> "ProgressReporter":
        if self.console.is_terminal:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        self.epochs, self.start_epoch = info["epochs"], info["start_epoch"]
        self.batch_size = info["batch_size"]
        self.started = time.perf_counter()
        if self.start_epoch:
            self.console.print(f"resuming {self.title} after epoch {self.start_epoch}/{self.epochs}", highlight=False)
        if self.console.is_terminal:
            self.task = self.progress.add_task(self.title, total=info["batches"], status="")

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.batch_started = time.perf_counter()
        if self.task is not None:
            self.progress.update(self.task, completed=0, description=f"epoch {epoch}/{epochs}", status=self._status(None))

    def on_batch_end(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        if self.task is None:
            return
        elapsed = time.perf_counter() - self.batch_started
        speed = batch * (self.batch_size or 1) / elapsed if elapsed else 0.0
        self.progress.update(self.task, completed=batch, status=self._status(loss, speed))

    def on_epoch_end(self, epoch: int, epochs: int, metrics: Mapping[str, Any]) -> None:
        self.last = metrics
        mark = " (best)" if metrics.get("best") else ""
        self.console.print(f"epoch {epoch}/{epochs} {self._status(metrics['train_loss'], metrics['images_per_second'])}{mark}", highlight=False)

    def on_evaluate(self, split: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description="exporting" if split == "export" else f"scoring {split}", status="")

    def _status(self, loss: float | None, speed: float | None = None) -> str:
        parts = []
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if self.last.get("val_iou") is not None:
            parts.append(f"val IoU {self.last['val_iou']:.4f}")
        if speed:
            parts.append(f"{speed:.1f} img/s")
        done = (self.last.get("epoch") or self.start_epoch) - self.start_epoch
        if done > 0:
            per_epoch = (time.perf_counter() - self.started) / done
            parts.append(f"ETA {_duration(per_epoch * (self.epochs - (self.last.get('epoch') or 0)))}")
        return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"
