"""Train the thesis's baseline on the packages data set and report IoU, speed and the data pipeline's share.

    python benchmarks/train_packages.py [--data ../shared/datasets/packages] [--epochs 40]
        [--resolution 192] [--knobs a=1,t=6,r=3,pp=1] [--set batch_size=16 --set augment.crop=random]
        [--compare batch_size=16 --compare lr=0.006] [-o RUN_DIR] [--json]

Trains Fast-SCNN with the default `training:` settings (plus any --set) into a
run folder (a temporary one unless -o), exactly as `optiseg train` does, and
then measures the training speed with and without loading, in alternating
rounds (so both see the same load on a shared machine): training steps on
batches prepared beforehand give the images/s without loading; the same
steps fetching each batch from the cache (augmentation, batching, tensor
conversion) give the images/s with loading. The loading share is
1 - (with / without). The trainer's own measure (time spent fetching batches
inside the epochs) is reported too. Peak memory is the process's maximum
resident set size.

The thesis reached a test IoU of 0.972 at 192x192 after 400 GPU epochs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from optiseg.cli._common import parse_knobs
from optiseg.config import DataConfig, TrainingConfig
from optiseg.data import IGNORE, DatasetCache, build_train_transform, epoch_batches, load_dataset, train_source_sizes
from optiseg.data._cache import resize_image
from optiseg.models import build_model, parse_resolution
from optiseg.models._layers import Dropout
from optiseg.network import Network
from optiseg.training import SegmentationLoss, train_network
from optiseg.training.evaluate import to_model_input
from optiseg.training.losses import soft_dice_loss
from optiseg.training.trainer import effective_label_scale

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "packages"


class EpochPrinter:
    """One line per epoch on stderr."""

    def on_epoch_end(self, epoch: int, epochs: int, m: dict[str, Any]) -> None:
        print(
            f"epoch {epoch:3d}/{epochs} loss {m['train_loss']:.4f} val_loss {m['val_loss']:.4f} "
            f"val_iou {m['val_iou']:.4f} {m['seconds']:.1f}s {m['images_per_second']:.1f} img/s "
            f"data {m['data_share']:.1%}{' *' if m['best'] else ''}",
            file=sys.stderr,
            flush=True,
        )


def training_overrides(items: list[str]) -> dict[str, Any]:
    """``["batch_size=16", "augment.crop=random"]`` -> nested dict, values parsed as YAML scalars."""
    settings: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        target = settings
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    return settings


class LossBefore(SegmentationLoss):
    """The binary loss as the trainer computed it before the speed work (the same values): BCE over the valid
    pixels gathered by a boolean mask, soft Dice through one-hot tensors. For the ``before`` speed probe only."""

    def forward(self, logits, target):
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        valid = target != self.ignore_index
        if self.num_logits != 1 or not bool(valid.any()):
            return super().forward(logits, target)
        logits, truth = logits[:, 0], (target == 1).float()
        loss = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")[valid].mean()
        return loss + self.dice_weight * soft_dice_loss(torch.sigmoid(logits)[:, None], truth[:, None], valid[:, None].float())


def with_torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with torch's ``nn.Dropout`` (a random draw per element) where optiseg's ``Dropout`` is, as the
    networks were built before the speed work. For the speed probes only: the same drop rate."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))
    return model


class TransformBefore:
    """The augmentation as the trainer ran it before the speed work (the same distribution): albumentations' crop,
    flip and shift-scale-rotate on image and mask at the mask's size, the image then shrunk to the input size, the
    photometric steps. For the ``before`` speed probe only."""

    def __init__(self, resolution, augment, label_scale):
        import albumentations as A
        import cv2

        self.resolution = resolution
        height, width = resolution[0] * label_scale, resolution[1] * label_scale
        crop = {"none": [], "random": [A.RandomCrop(height=height, width=width)],
                "scale": [A.RandomResizedCrop(size=(height, width), scale=(augment.min_scale, 1.0),
                                              ratio=(width / height * 0.8, width / height * 1.25), area_for_downscale="image")]}
        self.geometric = A.Compose([*crop[augment.crop], A.HorizontalFlip(p=augment.hflip), A.Affine(
            scale=(1 - augment.scale, 1 + augment.scale), translate_percent=(-augment.shift, augment.shift),
            rotate=(-augment.rotate, augment.rotate), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE,
            p=augment.affine)])
        self.photometric = build_train_transform(resolution, augment, label_scale)

    def reseed(self, seed: int) -> None:
        self.geometric.set_random_seed(seed)
        self.photometric.reseed(seed)

    def __call__(self, image, mask):
        moved = self.geometric(image=image, mask=mask)
        return self.photometric.photometric(resize_image(moved["image"], self.resolution)), moved["mask"]


class SpeedProbe:
    """One training configuration's speed, one round at a time (so that several configurations alternate rounds):
    training images/s with loading (decode cache -> augment -> tensor -> step) and without (steps on batches
    prepared beforehand), and the loading pipeline alone."""

    def __init__(self, model_name, knobs, resolution, dataset, cache, training: TrainingConfig, images: int = 96,
                 loss: type[SegmentationLoss] = SegmentationLoss, before: bool = False):
        torch.manual_seed(0)
        self.training, self.batches = training, max(2, images // training.batch_size)  # the same images at every batch size
        self.model = build_model(model_name, knobs, dataset.num_classes, 3).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=training.lr, fused=training.fused_optimizer or None)
        self.loss_fn = loss(dataset.num_classes, training.dice_weight)
        label_scale = effective_label_scale(training.label_scale, resolution, cache.original_masks("val")[0].shape)
        sizes = train_source_sizes(resolution, training.augment, label_scale)
        if before:  # images cached at the mask's size, warped there and shrunk; torch's dropout
            with_torch_dropout(self.model)
            self.source = cache.resized("train", sizes.mask)
            self.transform = TransformBefore(resolution, training.augment, label_scale)
        else:
            self.source = cache.resized("train", *sizes)
            self.transform = build_train_transform(resolution, training.augment, label_scale)
        self.times: dict[str, list[float]] = {"with": [], "without": [], "pipeline": []}
        self.model.train()

    def _fetch(self, iterator):
        images, masks = next(iterator)
        return to_model_input(images, 3, torch.device("cpu")), torch.from_numpy(masks)

    def _step(self, inputs, target):
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn(self.model(inputs), target).backward()
        self.optimizer.step()

    def round(self, index: int) -> None:
        def timed(function) -> float:
            started = time.perf_counter()
            function()
            return time.perf_counter() - started

        self.transform.reseed(index)
        iterator = epoch_batches(self.source, self.transform, self.training.batch_size, np.random.default_rng(index))
        prepared = []
        self.times["pipeline"].append(timed(lambda: prepared.extend(self._fetch(iterator) for _ in range(self.batches))))
        self.times["without"].append(timed(lambda: [self._step(*batch) for batch in prepared]))
        iterator = epoch_batches(self.source, self.transform, self.training.batch_size, np.random.default_rng(index + 100))
        self.times["with"].append(timed(lambda: [self._step(*self._fetch(iterator)) for _ in range(self.batches)]))

    def speeds(self) -> dict[str, float]:
        """Images/s, medians over the rounds; the first round warms up and is left out."""
        images = self.batches * self.training.batch_size
        return {name: images / float(np.median(times[1:])) for name, times in self.times.items()}


def alternating_speeds(probes: list[SpeedProbe], rounds: int = 3) -> list[dict[str, float]]:
    """Every probe's speeds, the probes taking turns round by round (A B A B ...): the same machine load for each."""
    for index in range(rounds + 1):
        for probe in probes:
            probe.round(index)
    return [probe.speeds() for probe in probes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="fastscnn")
    parser.add_argument("--knobs", default="a=1,t=6,r=3,pp=1")
    parser.add_argument("--resolution", default="192")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training setting, e.g. lr=0.002")
    parser.add_argument("--compare", action="append", default=None, metavar="KEY=VALUE",
                        help="also train a candidate with these settings (over --set) and compare: speeds measured in "
                             "alternating rounds, e.g. --compare batch_size=16 --compare lr=0.006")
    parser.add_argument("-o", "--output", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    resolution = parse_resolution(args.resolution)
    knobs = parse_knobs(args.knobs)
    training = TrainingConfig.model_validate({**training_overrides(args.set), "epochs": args.epochs})
    data_cfg = DataConfig.model_validate({"root": str(args.data.resolve())})
    run_dir = args.output or Path(tempfile.mkdtemp(prefix="optiseg-bench-"))

    started = time.perf_counter()
    dataset = load_dataset(data_cfg)
    cache = DatasetCache(dataset, budget_mb=data_cfg.cache_mb)
    check_seconds = time.perf_counter() - started
    network = Network.create(args.model, knobs, resolution, num_classes=dataset.num_classes)
    contenders = {"today": training}
    if args.compare:
        contenders["candidate"] = TrainingConfig.model_validate(
            _merged(training.model_dump(mode="json"), training_overrides(args.compare)))
    contenders = {name: settings.for_split(len(dataset.train)) for name, settings in contenders.items()}  # what null stands for
    results = {}
    for name, settings in contenders.items():
        print(f"== training {name}: batch_size {settings.batch_size}, lr {settings.lr:g}", file=sys.stderr, flush=True)
        results[name] = train_network(network, dataset=dataset, training=settings, run_dir=run_dir / name, cache=cache,
                                      reporter=EpochPrinter(), export_onnx=True)
    probes = [SpeedProbe(args.model, knobs, resolution, dataset, cache, settings) for settings in contenders.values()]
    # the step as it was (no training of its own): the former default batch and rate, Adam's loop
    before = training.model_copy(update={"batch_size": 4, "lr": 0.003, "fused_optimizer": False})
    probes.append(SpeedProbe(args.model, knobs, resolution, dataset, cache, before, loss=LossBefore, before=True))
    speeds = dict(zip([*contenders, "before"], alternating_speeds(probes, rounds=5)))
    reports = {name: _report(args, contenders[name], results[name].metrics, speeds[name], check_seconds, run_dir / name)
               for name in contenders}
    if "candidate" in reports:
        reports["speed_up"] = {key: speeds["candidate"][key] / speeds["today"][key] for key in ("with", "without")}
    reports["before"] = {f"images_per_second_{key}_loading": speeds["before"][key] for key in ("with", "without")}
    reports["speed_up_over_before"] = {name: {key: speeds[name][key] / speeds["before"][key] for key in ("with", "without")}
                                       for name in contenders}
    report = reports if len(contenders) > 1 else {**reports["today"], "before": reports["before"],
                                                   "speed_up_over_before": reports["speed_up_over_before"]["today"]}
    if args.json:
        print(json.dumps(report))
    elif len(contenders) > 1:
        keys = list(reports["today"])
        width = max(map(len, keys))
        print(f"{'':<{width}}  {'today':>22}  {'candidate':>22}")
        for key in keys:
            cells = [reports[n][key] for n in ("today", "candidate")]
            print(f"{key:<{width}}  " + "  ".join(f"{v:>22.4f}" if isinstance(v, float) else f"{str(v)[:22]:>22}" for v in cells))
        print(f"{'speed-up with loading':<{width}}  {reports['speed_up']['with']:>22.3f}x")
        print(f"{'speed-up without loading':<{width}}  {reports['speed_up']['without']:>22.3f}x")
        _print_before(reports, width)
    else:
        width = max(map(len, report))
        for key, value in report.items():
            if key in ("before", "speed_up_over_before"):
                continue
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
        _print_before(reports, width)
    return 0


def _print_before(reports: dict[str, Any], width: int) -> None:
    before = reports["before"]
    print(f"{'before the speed work':<{width}}  {before['images_per_second_with_loading']:.1f} images/s with loading, "
          f"{before['images_per_second_without_loading']:.1f} without (same settings as today, Adam's loop, the gathering loss, augmentation at the mask's size)")
    for name, ratio in reports["speed_up_over_before"].items():
        print(f"{name + ' over before':<{width}}  {ratio['with']:.3f}x with loading, {ratio['without']:.3f}x without")


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _report(args, training: TrainingConfig, m: dict[str, Any], speed: dict[str, float], check_seconds: float, run_dir: Path) -> dict[str, Any]:
    return {
        "model": args.model,
        "knobs": m["knobs"],
        "resolution": m["resolution"],
        "batch_size": training.batch_size,
        "lr": training.lr,
        "test_iou": m["test_iou"],
        "test_miou": m["test_miou"],
        "val_iou": m["val_iou"],
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "train_seconds": m["train_seconds"],
        "images_per_second_in_training": m["images_per_second"],
        "images_per_second_with_loading": speed["with"],
        "images_per_second_without_loading": speed["without"],
        "images_per_second_of_the_pipeline_alone": speed["pipeline"],
        "loading_share": 1 - speed["with"] / speed["without"],
        "data_share_measured_in_training": m["data_share"],
        "check_and_load_seconds": check_seconds,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "run_dir": str(run_dir),
    }


if __name__ == "__main__":
    sys.exit(main())
