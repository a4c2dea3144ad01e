"""Training one candidate network into a run folder, resumable at every epoch.

The protocol is the thesis's: Adam with polynomial learning-rate decay per
step, BCE (one logit) or cross-entropy (C logits) optionally plus Dice, the
best epoch chosen on the validation loss (or IoU), scores at each image's
original size. A run folder holds:

* ``checkpoint.pt``: the last finished epoch with optimizer state (for resume);
* ``best.pt``: the best epoch's weights (an optiseg checkpoint);
* ``metrics.json``: scores, timings and the per-epoch history, written when done;
* ``model.onnx``: the best weights exported for deployment;
* ``train.log``: one line per epoch and per resume.

Calling :func:`train_network` again on the same folder resumes after the
last finished epoch, with the same shuffling and augmentation as an
uninterrupted run, or returns the stored result if the run is complete.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_json_atomic
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import TrainingConfig
from ..data import Dataset, DatasetCache, build_train_transform, epoch_batches, train_source_sizes
from ..errors import OptisegError, UsageError
from ..models import INPUT, OUTPUT, format_resolution, output_names, run_stages
from ..network import Network
from ._run_folder import (
    BEST,
    CHECKPOINT,
    LOG,
    METRICS,
    ONNX,
    TrainResult,
    locked,
    refuse_other_run,
    result_from_metrics,
    run_identity,
    stored_result,
)
from ..models._exits import exit_head_modules, exit_sources
from ._phases import Phase, parameter_groups, plan_phases, selection_weights
from .evaluate import SplitEvaluation, evaluate, evaluate_outputs, to_model_input
from .inherit import InitialWeights, inherit
from .losses import SegmentationLoss

class Reporter:
    """Told how training goes; every method is a no-op here, so override only what you need.

    Any object with some of these methods works as ``reporter`` (missing ones are
    skipped). A reporter may raise to abort training: the checkpoint of the last
    finished epoch stays, and the next call resumes from it.
    """

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        """Before the first epoch of this call: epochs, start_epoch, batches, device, resolution, ..."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins."""

    def on_batch_end(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        """Batch ``batch`` (1-based) of ``batches`` is done; ``loss`` is its training loss."""

    def on_epoch_end(self, epoch: int, epochs: int, metrics: Mapping[str, Any]) -> None:
        """Epoch ``epoch`` is done and checkpointed; ``metrics`` is its history entry."""

    def on_evaluate(self, split: str) -> None:
        """The best weights are being scored on ``split`` (after the last epoch)."""


def train_network(
    network: Network,
    *,
    dataset: Dataset,
    training: TrainingConfig,
    run_dir: str | os.PathLike,
    cache: DatasetCache | None = None,
    reporter: Any = None,
    export_onnx: bool = True,
    initial_weights: InitialWeights | None = None,
) -> TrainResult:
    """Train ``network`` on ``dataset`` into ``run_dir``.

    Resumes an interrupted run in ``run_dir`` and returns a finished one without
    training again; a ``run_dir`` holding another network, data set or training
    settings is refused (:class:`UsageError`). ``cache`` shares decoded images
    between calls (one is made if omitted). ``initial_weights`` (see
    :mod:`.inherit`) start a new run; a run that resumes ignores them.
    """
    if network.num_classes != dataset.num_classes:
        raise UsageError(
            f"{network.describe()} has {network.num_classes} output(s) but the data set has {dataset.num_classes} classes",
            hint="build the network with num_classes = dataset.num_classes",
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    training = training.for_split(len(dataset.train))
    identity = run_identity(network, dataset, training)
    with locked(run_dir):
        stored = stored_result(run_dir, identity)
        if stored is not None and (stored.onnx is not None or not export_onnx):
            return stored
        run = _Run(network, dataset, training, run_dir, identity, cache or DatasetCache(dataset), reporter, initial_weights)
        if stored is None:
            run.train()
        return run.finish(export_onnx)


def score_best_so_far(
    network: Network,
    *,
    dataset: Dataset,
    training: TrainingConfig,
    run_dir: str | os.PathLike,
    onnx_path: str | os.PathLike,
    cache: DatasetCache | None = None,
) -> dict[str, Any]:
    """Score an unfinished run's best weights so far (``best.pt``) on the test split and export them to ``onnx_path``.

    What a training stopped early on purpose (a multi-fidelity rung) is worth as it stands: the test
    figures (``test_iou``, ``test_miou``, ``test_class_iou`` ...) of the weights the run would keep, and a
    deployable ONNX file beside the run's own, which later epochs leave as it is. The run is not changed.
    """
    run_dir = Path(run_dir)
    training = training.for_split(len(dataset.train))
    identity = run_identity(network, dataset, training)
    with locked(run_dir):
        run = _Run(network, dataset, training, run_dir, identity, cache or DatasetCache(dataset), None)
        best = load_checkpoint(run_dir / BEST)
        refuse_other_run(run_dir, best.get("run", identity), identity)
        run._load_best(best)
        evaluations = run._evaluate(run.cache.resized("test", run.resolution), run.cache.original_masks("test"))
        scores = {**evaluations[-1].scores.to_dict("test_"), "test_loss": evaluations[-1].loss, "best_epoch": int(best["epoch"])}
        run._export(scores, Path(onnx_path))
    return scores


def _notify(reporter: Any, event: str, *args: Any) -> None:
    method = getattr(reporter, event, None)
    if method is not None:
        method(*args)


def effective_label_scale(requested: int, resolution: tuple[int, int], original: tuple[int, int]) -> int:
    """``requested``, lowered so that training masks are no larger than the images are (finer masks add nothing)."""
    room = min(original[0] // resolution[0], original[1] // resolution[1])
    return max(1, min(requested, room))


def pick_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("training.device is 'cuda' but PyTorch sees no CUDA device", hint="use device: auto (or cpu)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


class _Run:
    """The state of one training run: model, optimizer, progress, and the files of its folder."""

    def __init__(self, network: Network, dataset, training, run_dir, identity, cache, reporter, initial_weights=None):
        self.network = network
        self.model_name, self.knobs, self.resolution, self.in_channels = (
            network.model, network.knob_dict, network.resolution, network.in_channels)
        self.dataset, self.training, self.run_dir, self.identity = dataset, training, run_dir, identity
        self.cache, self.reporter = cache, reporter
        self.device = pick_device(training.device)
        self.amp = training.amp and self.device.type == "cuda"
        self.loss_fn = SegmentationLoss(dataset.num_classes, training.dice_weight)
        torch.manual_seed(training.seed)
        self.model = network.build()
        self.initialized_from = None
        if initial_weights is not None and not (run_dir / CHECKPOINT).is_file():
            inherit(self.model, initial_weights.state_dict)
            self.initialized_from = initial_weights.source
        self.model.to(self.device, memory_format=torch.channels_last)
        self.outputs = output_names(self.model.stages())
        self.exits = len(self.outputs) - 1
        self.phases = plan_phases(training, self.exits)
        self.loss_weights = training.exits.loss_weights(self.exits) if self.exits else (1.0,)
        self.phase_index, self.phase_start_epoch, self.phase_start_step = 0, 0, 0
        self.optimizer = self._optimizer(self.phases[0])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch = 0  # finished epochs
        self.step = 0
        self.best_epoch, self.best_value, self.bad_epochs = 0, math.inf, 0
        self.history: list[dict[str, Any]] = []
        self.resumed_from: list[int] = []
        self.stopped_early = False

    # ------------------------------------------------------------ training

    def train(self) -> None:
        training = self.training
        self._resume()
        if len(self.dataset.train) < training.batch_size:
            raise UsageError(
                f"the training split has {len(self.dataset.train)} image(s), fewer than training.batch_size = {training.batch_size}",
                hint="lower training.batch_size (>= 2) or add training images",
            )
        val_images = self.cache.resized("val", self.resolution)
        val_masks = self.cache.original_masks("val")
        label_scale = effective_label_scale(training.label_scale, self.resolution, val_masks[0].shape[:2])
        source = self.cache.resized("train", *train_source_sizes(self.resolution, training.augment, label_scale))
        batches = len(source) // training.batch_size
        transform = build_train_transform(self.resolution, training.augment, label_scale)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        _notify(self.reporter, "on_train_start", {
            "epochs": self._planned_epochs(), "start_epoch": self.epoch, "batches": batches, "device": str(self.device),
            "amp": self.amp, "resolution": format_resolution(self.resolution), "train_images": len(source),
            "batch_size": training.batch_size,
        })
        if self.epoch == 0:
            for problem in self.dataset.warnings:
                self._log(f"data warning: {problem}")
            self._log(f"training {self.model_name} {self.knobs} at {format_resolution(self.resolution)} on {self.device}"
                      f"{' with mixed precision' if self.amp else ''}: {self._planned_epochs()} epochs of {batches} batches of "
                      f"{training.batch_size} at lr {training.lr:.3g}, "
                      f"masks at {label_scale}x the input size" + self._phases_text()
                      + (f"; starting from the weights of {self.initialized_from}" if self.initialized_from else ""))
        while True:
            phase = self.phases[self.phase_index]
            if self.stopped_early or self.epoch - self.phase_start_epoch >= phase.epochs:
                if self.phase_index + 1 == len(self.phases):
                    break
                self._next_phase()
                continue
            epoch = self.epoch + 1
            _notify(self.reporter, "on_epoch_start", epoch, self._planned_epochs())
            started = time.perf_counter()
            train_loss, data_seconds = self._train_epoch(epoch, phase, source, transform, batches, phase.epochs * batches)
            train_seconds = time.perf_counter() - started
            validation = self._evaluate(val_images, val_masks)
            entry = self._record(epoch, phase, train_loss, validation, batches, train_seconds, data_seconds, time.perf_counter() - started)
            _notify(self.reporter, "on_epoch_end", epoch, self._planned_epochs(), entry)

    def _optimizer(self, phase: Phase) -> torch.optim.Adam:
        return torch.optim.Adam(parameter_groups(self.model, phase), lr=phase.heads_lr, weight_decay=self.training.weight_decay,
                                fused=self.training.fused_optimizer or None)

    def _planned_epochs(self) -> int:
        """Epochs of the whole run: those before the current phase, then every phase's from it on."""
        return self.phase_start_epoch + sum(p.epochs for p in self.phases[self.phase_index:])

    def _phases_text(self) -> str:
        if not self.exits:
            return ""
        phases = ", then ".join(f"{p.name} ({p.epochs} epochs, loss weights {list(p.loss_weights)})" for p in self.phases)
        return f"; {self.exits} exit(s), {self.training.exits.schedule}: {phases}"

    def _next_phase(self) -> None:
        """Start the next phase from the best epoch of this one, with a fresh optimizer and its own best epoch."""
        self._load_best()
        self.phase_index += 1
        self.phase_start_epoch, self.phase_start_step = self.epoch, self.step
        self.optimizer = self._optimizer(self.phases[self.phase_index])
        self.best_value, self.bad_epochs, self.stopped_early = math.inf, 0, False
        self._log(f"phase {self.phases[self.phase_index].name} from the best epoch {self.best_epoch} of phase "
                  f"{self.phases[self.phase_index - 1].name}")

    def _train_epoch(self, epoch: int, phase: Phase, source, transform, batches: int, total_steps: int) -> tuple[float, float]:
        training = self.training
        seed = [training.seed, epoch]
        transform.reseed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        torch.manual_seed(int(np.random.SeedSequence([*seed, 1]).generate_state(1)[0]))
        rng = np.random.default_rng(seed)
        trained = phase.trained_outputs(self.outputs)
        weights = [w for w in phase.loss_weights if w > 0]
        bases = [phase.heads_lr, phase.backbone_lr][: len(self.optimizer.param_groups)]
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if self.amp else nullcontext()
        loss_sum, data_seconds = 0.0, 0.0
        iterator = epoch_batches(source, transform, training.batch_size, rng)
        with self._training_mode(phase):
            for batch_index in range(1, batches + 1):
                fetched = time.perf_counter()
                images, masks = next(iterator)
                inputs = to_model_input(images, self.in_channels, self.device)
                target = torch.from_numpy(masks).to(self.device, non_blocking=True)
                data_seconds += time.perf_counter() - fetched
                for group, base in zip(self.optimizer.param_groups, bases):
                    group["lr"] = base * (1 - (self.step - self.phase_start_step) / total_steps) ** training.lr_power
                self.optimizer.zero_grad(set_to_none=True)
                with autocast:
                    if trained == (OUTPUT,):
                        logits = [self.model(inputs)]
                    else:
                        outputs = run_stages(self.model.stages(), {INPUT: inputs}, inputs.shape[-2:], trained)
                        logits = [outputs[name] for name in trained]
                if weights == [1.0]:
                    loss = self.loss_fn(logits[0], target)
                else:
                    loss = sum(weight * self.loss_fn(output, target) for weight, output in zip(weights, logits))
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step += 1
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise OptisegError(
                        f"training diverged at epoch {epoch}, batch {batch_index}: the loss is {loss_value}",
                        hint="lower training.lr (e.g. by 10x) and train into a new run folder",
                    )
                loss_sum += loss_value
                _notify(self.reporter, "on_batch_end", epoch, batch_index, batches, loss_value)
        return loss_sum / batches, data_seconds

    @contextmanager
    def _training_mode(self, phase: Phase) -> Iterator[None]:
        """The model in training mode; with a frozen backbone only the exit heads train (and update BatchNorm statistics)."""
        self.model.train()
        if not (phase.name == "branches" and phase.frozen_backbone):
            yield
            return
        self.model.eval()
        heads = exit_head_modules(self.model.stages())
        for head in heads:
            head.train()
        head_ids = {id(p) for head in heads for p in head.parameters()}
        frozen = [p for p in self.model.parameters() if id(p) not in head_ids and p.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)

    def _evaluate(self, images, masks) -> list[SplitEvaluation]:
        """One evaluation per output (each exit, then the final logits)."""
        score = evaluate_outputs if self.exits else evaluate
        results = score(
            self.model, images, masks, loss_fn=self.loss_fn, class_names=self.dataset.class_names,
            binary=self.dataset.binary, in_channels=self.in_channels, device=self.device, amp=self.amp,
            batch_size=max(self.training.batch_size, 16),
        )
        return results if self.exits else [results]

    def _selection_value(self, phase: Phase, evaluations: list[SplitEvaluation]) -> float:
        """The figure that picks the best epoch (lower is better): the final output's, or the outputs' weighted mean."""
        by_loss = self.training.select_by == "val_loss"
        if len(evaluations) == 1:
            return evaluations[0].loss if by_loss else -(evaluations[0].scores.primary_iou or 0.0)
        weights = selection_weights(phase, self.loss_weights)
        figures = [e.loss if by_loss else -(e.scores.primary_iou or 0.0) for e in evaluations]
        return sum(w * f for w, f in zip(weights, figures) if w > 0) / sum(weights)

    def _record(self, epoch, phase: Phase, train_loss, evaluations: list[SplitEvaluation], batches, train_seconds, data_seconds,
                seconds) -> dict[str, Any]:
        training = self.training
        validation = evaluations[-1]
        scores = validation.scores
        value = self._selection_value(phase, evaluations)
        improved = value < self.best_value or self.best_epoch == 0  # a NaN loss (no labelled pixel) still gives a best epoch
        if improved:
            self.best_epoch, self.best_value, self.bad_epochs = epoch, value, 0
        else:
            self.bad_epochs += 1
        phase_end = self.phase_start_epoch + phase.epochs
        self.stopped_early = bool(training.patience and self.bad_epochs >= training.patience and epoch < phase_end)
        images = batches * training.batch_size
        entry = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": validation.loss,
            **{k: v for k, v in scores.to_dict("val_").items()},
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "train_seconds": train_seconds,
            "images_per_second": images / train_seconds,
            "data_share": data_seconds / train_seconds,
            "best": improved,
        }
        if self.exits:
            entry["phase"] = phase.name
            entry["val_exits"] = _exit_figures(self.outputs, evaluations)
        self.history.append(entry)
        self.epoch = epoch
        if improved:
            save_checkpoint(self.run_dir / BEST, {**self._network_payload(), "epoch": epoch})
        save_checkpoint(self.run_dir / CHECKPOINT, {
            **self._network_payload(),
            "epoch": epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "resumed_from": self.resumed_from,
            "initialized_from": self.initialized_from,
            **({"phase": self.phase_index, "phase_start_epoch": self.phase_start_epoch, "phase_start_step": self.phase_start_step}
               if self.exits else {}),
        })
        val_iou = scores.primary_iou
        self._log(
            f"epoch {epoch}/{self._planned_epochs()} train_loss={train_loss:.4f} val_loss={validation.loss:.4f} "
            f"val_iou={'n/a' if val_iou is None else f'{val_iou:.4f}'} lr={entry['lr']:.2e} {seconds:.1f}s "
            f"{entry['images_per_second']:.1f} img/s data={entry['data_share']:.1%}{' best' if improved else ''}"
            + (f" phase={phase.name} exit_iou={','.join(_fmt(e['iou']) for e in entry['val_exits'])}" if self.exits else "")
            + (f"; stopping early: no better {training.select_by} for {self.bad_epochs} epochs" if self.stopped_early else "")
        )
        return entry

    def _network_payload(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "knobs": dict(self.knobs),
            "num_classes": self.dataset.num_classes,
            "in_channels": self.in_channels,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "class_names": list(self.dataset.class_names),
            "resolution": list(self.resolution),
            "run": self.identity,
        }

    def _resume(self) -> None:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return
        state = load_checkpoint(path)
        refuse_other_run(self.run_dir, state.get("run", {}), self.identity)
        self.model.load_state_dict(state["state_dict"])
        self.model.to(self.device, memory_format=torch.channels_last)
        self.phase_index = int(state.get("phase", 0))
        self.phase_start_epoch, self.phase_start_step = int(state.get("phase_start_epoch", 0)), int(state.get("phase_start_step", 0))
        self.optimizer = self._optimizer(self.phases[self.phase_index])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_epoch, self.best_value, self.bad_epochs = int(state["best_epoch"]), float(state["best_value"]), int(state["bad_epochs"])
        self.stopped_early = bool(state["stopped_early"])
        self.history = list(state["history"])
        self.resumed_from = [*state.get("resumed_from", []), self.epoch]
        self.initialized_from = state.get("initialized_from")
        self._log(f"resumed from {CHECKPOINT} after epoch {self.epoch}/{self._planned_epochs()}")

    # ------------------------------------------------------------ results

    def finish(self, export_onnx: bool) -> TrainResult:
        """Score the best weights on val and test, export them, and write ``metrics.json``."""
        stored_path = self.run_dir / METRICS
        if stored_path.is_file():
            metrics = json.loads(stored_path.read_text(encoding="utf-8"))
            self._load_best()
        else:
            self._load_best()
            metrics = self._metrics()
        if export_onnx:
            self._export(metrics)
            metrics["files"]["onnx"] = ONNX
        write_json_atomic(stored_path, metrics)
        return result_from_metrics(self.run_dir, metrics)

    def _load_best(self, best: Mapping[str, Any] | None = None) -> None:
        best = best or load_checkpoint(self.run_dir / BEST)
        self.model.load_state_dict(best["state_dict"])
        self.model.to(self.device, memory_format=torch.channels_last)

    def _metrics(self) -> dict[str, Any]:
        if not self.history:
            state = load_checkpoint(self.run_dir / CHECKPOINT)
            self.history, self.best_epoch = list(state["history"]), int(state["best_epoch"])
            self.resumed_from, self.stopped_early = list(state.get("resumed_from", [])), bool(state["stopped_early"])
            self.initialized_from = state.get("initialized_from")
        _notify(self.reporter, "on_evaluate", "test")
        evaluations = self._evaluate(self.cache.resized("test", self.resolution), self.cache.original_masks("test"))
        test = evaluations[-1]
        best = self.history[self.best_epoch - 1]
        train_seconds = sum(h["seconds"] for h in self.history)
        metrics = {
            "complete": True,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": self.model_name,
            "knobs": dict(self.knobs),
            "resolution": format_resolution(self.resolution),
            "in_channels": self.in_channels,
            "num_classes": self.dataset.num_classes,
            "class_names": list(self.dataset.class_names),
            **test.scores.to_dict("test_"),
            "test_loss": test.loss,
            "val_iou": best["val_iou"],
            "val_miou": best["val_miou"],
            "val_loss": best["val_loss"],
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "epochs": self._planned_epochs(),
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
            "initialized_from": self.initialized_from,
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / len(self.history),
            "images_per_second": float(np.median([h["images_per_second"] for h in self.history])),
            "data_share": float(np.median([h["data_share"] for h in self.history])),
            "device": str(self.device),
            "amp": self.amp,
            "run": self.identity,
            "files": {"checkpoint": BEST, "last": CHECKPOINT, "onnx": None, "log": LOG},
            "history": self.history,
        }
        if self.exits:
            metrics["exits"] = self._exit_metrics(best, evaluations)
        self._log(f"done: best epoch {self.best_epoch}, test IoU {_fmt(metrics['test_iou'])}, test mIoU {_fmt(metrics['test_miou'])}")
        return metrics

    def _exit_metrics(self, best: dict[str, Any], test: list[SplitEvaluation]) -> dict[str, Any]:
        """What metrics.json says about the exits: where they are, how they were trained, their val and test figures."""
        stages = self.model.stages()
        settings = self.training.exits
        return {
            "names": list(self.outputs[:-1]),
            "after": list(exit_sources(stages).values()),
            "schedule": settings.schedule,
            "loss_weights": list(self.loss_weights),
            "val": best["val_exits"],
            "test": _exit_figures(self.outputs, test),
        }

    def _export(self, metrics: dict[str, Any], path: Path | None = None) -> None:
        from ..export import export_onnx

        _notify(self.reporter, "on_evaluate", "export")
        model = self.model.to("cpu", memory_format=torch.contiguous_format)
        export_onnx(
            model, path or self.run_dir / ONNX, self.network, class_names=self.dataset.class_names,
            extra_metadata={"test_iou": _fmt(metrics.get("test_iou")), "best_epoch": str(metrics.get("best_epoch"))},
        )

    def _log(self, message: str) -> None:
        stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
        with open(self.run_dir / LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")


def _exit_figures(outputs: tuple[str, ...], evaluations: list[SplitEvaluation]) -> list[dict[str, Any]]:
    """Loss and scores of each exit (the final output's are the run's own figures)."""
    return [
        {"name": name, "loss": e.loss, "iou": e.scores.primary_iou, "miou": e.scores.mean_iou, "dice": e.scores.primary_dice}
        for name, e in zip(outputs[:-1], evaluations[:-1])
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


