"""One trial: sample a candidate, measure it on the device, and train it only if it can meet the constraints.

Stages: sample knobs -> build and profile -> export ONNX -> measure latency on
the device -> (too slow: stop, no IoU) -> train and score -> report
(IoU, latency). Everything a stage produces is written to the trial's user
attributes and the candidate's folder as soon as it exists, so a trial cut off
at any point loses nothing that was finished: a retried trial reuses the
candidate's ONNX and latency and resumes training from its last epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .._atomic import write_json_atomic
from ..config import StudyConfig
from ..export import export_onnx
from ..models import build_model, format_resolution
from ..profile import profile_model
from ..results import COMPLETE, TOO_SLOW
from .space import SearchSpace
from .study import StudyPaths

LATENCY_FILE = "latency.json"
CANDIDATE_ONNX = "candidate.onnx"


class TooSlow(Exception):
    """The candidate's measured latency exceeds ``max_latency_ms``: it is not trained."""


class InProgressElsewhere(Exception):
    """Another worker is evaluating the same candidate right now; this trial steps aside."""

    def __init__(self, number: int):
        super().__init__(f"trial {number} is evaluating the same candidate")
        self.number = number


@dataclass
class TrialEnvironment:
    """What every trial of one search process shares."""

    study: optuna.Study
    paths: StudyPaths
    space: SearchSpace
    config: StudyConfig
    dataset: Any
    cache: Any
    pool: Any
    class_names: list[str] | None
    progress: Any  # SearchProgress
    latency_cache: Path | None = None  # shared by the studies of one output folder; see latency_cache_dir

    @property
    def worker(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"


def evaluate(trial: optuna.Trial, env: TrialEnvironment) -> tuple[float, float]:
    """Run ``trial`` to the end. Returns (IoU, latency ms); raises :class:`TooSlow` for a candidate not trained."""
    candidate = env.space.suggest(trial)
    folder = env.paths.candidate(candidate.key)
    folder.mkdir(parents=True, exist_ok=True)
    _link_trial(env.paths, trial.number, folder)
    timings: dict[str, float] = {}
    trial.set_user_attr("candidate", candidate.key)
    trial.set_user_attr("model", candidate.model)
    trial.set_user_attr("knobs", _json_safe(candidate.knob_dict))
    trial.set_user_attr("resolution", format_resolution(candidate.resolution))
    trial.set_user_attr("in_channels", candidate.in_channels)
    trial.set_user_attr("artifacts", str(folder.relative_to(env.paths.folder)))
    trial.set_user_attr("worker", env.worker)
    env.progress.trial_started(trial.number, candidate)

    previous = _finished_trial_of(env.study, candidate.key, exclude=trial.number)
    if previous is not None:
        return _reuse(trial, previous, env)
    running = _running_trial_of(env.study, candidate.key, exclude=trial.number)
    if running is not None:
        raise InProgressElsewhere(running)

    with _timed(timings, "profile_s"):
        env.progress.stage("building")
        num_classes = env.dataset.num_classes
        model = build_model(candidate.model, candidate.knob_dict, num_classes, candidate.in_channels)
        profile = profile_model(model, (1, candidate.in_channels, *candidate.resolution))
    trial.set_user_attr("params", profile.params)
    trial.set_user_attr("macs", profile.macs)
    trial.set_user_attr("activation_mb", round(profile.activation_mb, 3))

    onnx_path = folder / CANDIDATE_ONNX
    if not onnx_path.exists():
        with _timed(timings, "export_s"):
            env.progress.stage("exporting ONNX")
            export_onnx(
                model, onnx_path, resolution=candidate.resolution, model_name=candidate.model,
                knobs=candidate.knob_dict, num_classes=num_classes, in_channels=candidate.in_channels,
                class_names=env.class_names,
            )
    trial.set_user_attr("onnx_mb", round(onnx_path.stat().st_size / 2**20, 4))

    shared_file = env.latency_cache / f"{candidate.key}-c{num_classes}.json" if env.latency_cache else None
    latency = _read_json(folder / LATENCY_FILE) or (_read_json(shared_file) if shared_file else None)
    if latency is None:
        with _timed(timings, "measure_s"):
            with env.pool.acquire() as runner:
                env.progress.stage(f"measuring latency on {runner.device_key}")
                latency = runner.measure(onnx_path).to_dict()
        if shared_file is not None:
            shared_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(shared_file, latency)
    else:
        env.progress.stage(f"latency known: {float(latency['median_ms']):.2f} ms")
    if not (folder / LATENCY_FILE).exists():
        write_json_atomic(folder / LATENCY_FILE, latency)
    latency_ms = float(latency["median_ms"])
    trial.set_user_attr("latency", latency)
    trial.set_user_attr("latency_ms", latency_ms)
    trial.set_user_attr("timings", timings)

    constraints = env.config.constraints
    if constraints.max_latency_ms is not None:
        trial.set_constraint("latency_ms", latency_ms - constraints.max_latency_ms)
        if latency_ms > constraints.max_latency_ms:
            if constraints.min_iou is not None:
                trial.set_constraint("iou", 0.0)  # unknown, not violated: the latency alone rules it out
            trial.set_user_attr("status", TOO_SLOW)
            env.progress.stage(f"too slow ({latency_ms:.1f} ms > {constraints.max_latency_ms:g} ms): not trained")
            raise TooSlow(f"{latency_ms:.2f} ms > max_latency_ms {constraints.max_latency_ms:g}")

    from ..training import train_candidate

    with _timed(timings, "train_s"):
        env.progress.stage("training")
        result = train_candidate(
            model_name=candidate.model,
            knobs=candidate.knob_dict,
            resolution=candidate.resolution,
            in_channels=candidate.in_channels,
            dataset=env.dataset,
            training=env.config.training,
            run_dir=folder / "train",
            cache=env.cache,
            reporter=env.progress.training_reporter(),
            export_onnx=True,
        )
    iou = float(result.metrics["test_iou"])
    trial.set_user_attr("iou", iou)
    trial.set_user_attr("metrics", _json_safe(result.metrics))
    trial.set_user_attr("timings", timings)
    trial.set_user_attr("status", COMPLETE)
    if constraints.min_iou is not None:
        trial.set_constraint("iou", constraints.min_iou - iou)
    return iou, latency_ms


def _reuse(trial: optuna.Trial, previous: optuna.trial.FrozenTrial, env: TrialEnvironment) -> tuple[float, float]:
    """The sampler proposed a candidate already evaluated: copy its figures instead of measuring or training again."""
    env.progress.stage(f"same candidate as trial {previous.number}: reusing its results")
    trial.set_user_attr("duplicate_of", previous.number)
    for key in ("params", "macs", "activation_mb", "onnx_mb", "latency", "latency_ms", "iou", "metrics", "status"):
        if key in previous.user_attrs:
            trial.set_user_attr(key, previous.user_attrs[key])
    trial.set_user_attr("timings", {})
    for key, value in previous.constraints.items():
        trial.set_constraint(key, value)
    if previous.state == TrialState.PRUNED:
        raise TooSlow(f"same candidate as trial {previous.number}, which was too slow")
    return float(previous.values[0]), float(previous.values[1])


def _finished_trial_of(study: optuna.Study, key: str, exclude: int) -> optuna.trial.FrozenTrial | None:
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number != exclude and other.user_attrs.get("candidate") == key and "duplicate_of" not in other.user_attrs:
            return other
    return None


def _running_trial_of(study: optuna.Study, key: str, exclude: int) -> int | None:
    """The lowest-numbered other RUNNING trial on this candidate (the lower number keeps it, so exactly one does)."""
    numbers = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.number != exclude and t.user_attrs.get("candidate") == key
    ]
    return min(numbers) if numbers and min(numbers) < exclude else None


def latency_cache_dir(output: Path, device_settings: dict[str, Any]) -> Path:
    """Where latencies measured on one device with one timing protocol are kept for every study in ``output``.

    A latency depends on the exported graph and the device only, not on training; the
    folder is keyed by the device's kind, name and timing protocol (and the host name
    for a local device, so machines sharing an output folder keep theirs apart).
    """
    identity = dict(device_settings)
    if identity.get("kind") == "local":
        identity["host"] = socket.gethostname()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return output / "latency-cache" / digest


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a torn write from a killed run: measure again


def _link_trial(paths: StudyPaths, number: int, folder: Path) -> None:
    paths.trials.mkdir(parents=True, exist_ok=True)
    link = paths.trials / f"{number:04d}"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(os.path.relpath(folder, paths.trials))


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@contextmanager
def _timed(timings: dict[str, float], key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - start, 3)

