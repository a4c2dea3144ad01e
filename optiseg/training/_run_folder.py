"""The files of a run folder: their names, the run's identity, the stored result, the lock."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..config.training import HOW_NOT_WHAT
from ..data import Dataset
from ..errors import OptisegError, UsageError
from ..network import Network

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.json"
ONNX = "model.onnx"
LOG = "train.log"


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where its files are, its scores and timings, and its per-epoch history."""

    run_dir: Path
    checkpoint: Path
    onnx: Path | None
    metrics: dict[str, Any]
    history: tuple[dict[str, Any], ...]


def run_identity(network: Network, dataset: Dataset, training: TrainingConfig) -> dict[str, Any]:
    """What makes two runs the same run; a run folder only ever holds one."""
    settings = training.model_dump(mode="json", exclude=set(HOW_NOT_WHAT))
    return {
        "model": network.model,
        "knobs": network.knob_dict,
        "resolution": list(network.resolution),
        "in_channels": network.in_channels,
        "num_classes": network.num_classes,
        "class_names": list(dataset.class_names),
        "data": dataset.fingerprint(),
        "training": settings,
    }


def differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: old in the folder, new now`` for every (nested) key whose value differs."""
    changes = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} in the folder, {new!r} now")
    return changes


def refuse_other_run(run_dir: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` naming what differs if ``run_dir`` holds a run of another identity."""
    changes = differences(stored, wanted)
    if changes:
        raise UsageError(
            f"{run_dir} holds another training run ({'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''})",
            hint="train into a new run folder (-o), or delete this one to start over",
        )


def stored_result(run_dir: Path, identity: dict[str, Any]) -> TrainResult | None:
    """The finished run in ``run_dir`` (refused if it is another run), or None if it has not finished."""
    path = run_dir / METRICS
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OptisegError(f"{path} cannot be read: {exc}", hint="delete the run folder to train again") from None
    refuse_other_run(run_dir, stored.get("run", {}), identity)
    return result_from_metrics(run_dir, stored)


def result_from_metrics(run_dir: Path, stored: Mapping[str, Any]) -> TrainResult:
    """A :class:`TrainResult` from the content of ``metrics.json``."""
    onnx = run_dir / ONNX if stored.get("files", {}).get("onnx") and (run_dir / ONNX).is_file() else None
    metrics = {k: v for k, v in stored.items() if k not in ("history", "run", "files")}
    return TrainResult(run_dir, run_dir / BEST, onnx, metrics, tuple(stored.get("history", ())))


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock file, or raise :class:`UsageError` when another process holds it."""
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another optiseg process is training in {run_dir}",
                hint="wait for it to finish, or train into another folder",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
