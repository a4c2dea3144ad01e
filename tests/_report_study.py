"""Small studies for the report tests, written through optiseg.records as the search writes its trials.

No search runs: each trial gets the record, constraints and candidate files
that a real trial leaves behind (complete, too slow, failed
before or after measuring, a duplicate, interrupted), with tiny random-weight networks
as checkpoints, so the report is built from the same records, folders and
files a real study has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

EVIL = "<script>alert(1)</script> \"q\" 'x' &amp;"
MAX_LATENCY_MS = 5.0
MIN_IOU = 0.5
SEARCH_SPACE = {"resolution": [64, 96], "a": [1, 0.5, 0.25], "t": [6, 2]}
FACTS = {
    "hostname": "bench", "cpu_model": "Test CPU <b>x</b>", "cores": 4, "usable_cores": 2, "python_version": "3.11.2",
    "onnxruntime_version": "1.31.1", "machine": "aarch64", "governor": "performance", "temperature_c": 51.0,
}


@dataclass(frozen=True)
class Plan:
    """One trial: its knobs (Optuna params) and what became of it."""

    params: dict[str, Any]
    outcome: str  # complete / too_slow / failed / failed_measured / duplicate / interrupted
    latency_ms: float | None = None
    iou: float | None = None
    duplicate_of: int | None = None
    error: str | None = None
    retryable: bool = False  # a failure of the device or the environment (retried on the next run)


# Trial numbers follow the list order; trial 0 is the baseline the search enqueues first.
PLANS = (
    Plan({"resolution": 64, "a": 1, "t": 6}, "complete", 4.0, 0.90),
    Plan({"resolution": 64, "a": 0.5, "t": 6}, "complete", 2.0, 0.88),
    Plan({"resolution": 64, "a": 0.25, "t": 2}, "complete", 1.0, 0.70),
    Plan({"resolution": 96, "a": 1, "t": 6}, "too_slow", 8.0),
    Plan({"resolution": 96, "a": 0.5, "t": 2}, "complete", 3.0, 0.40),  # below min IoU: trained, not feasible
    Plan({"resolution": 96, "a": 0.25, "t": 6}, "failed", error=f"out of memory while building {EVIL}"),
    Plan({"resolution": 64, "a": 0.5, "t": 6}, "duplicate", 2.0, 0.88, duplicate_of=1),
    Plan({"resolution": 96, "a": 0.5, "t": 6}, "failed_measured", 3.5, error="training diverged"),
)
FRONT = (2, 1, 0)  # fastest first


def search_space():
    from optiseg.search.space import build_search_space

    return build_search_space("fastscnn", "intermediate", SEARCH_SPACE, 64)


def settings(space, class_names=("background", EVIL), content: str = "unknown") -> dict[str, Any]:
    return {
        "search_space": space.as_dict(),
        "data": {"masks": "binary", "classes": list(class_names), "content": content},
        "training": {"epochs": 3, "batch_size": 4},
        "constraints": {"max_latency_ms": MAX_LATENCY_MS, "min_iou": MIN_IOU},
        "device": {"name": "bench", "kind": "local", "measure": {"threads": 2}},
    }


def add_trials(study: optuna.Study, space, folder: Path | None = None, class_names=("background", EVIL), plans=PLANS) -> None:
    """Tell ``study`` one trial per plan, through optiseg.records as a real trial writes them (and, given ``folder``, the files)."""
    from optiseg import records
    from optiseg.layout import StudyLayout
    from optiseg.plans import Evaluation

    layout = StudyLayout(folder or Path("."))
    for plan in plans:
        study.enqueue_trial(plan.params)
        trial = study.ask()
        deployment = space.suggest(trial)  # the enqueued params, as the search asks for them
        network = deployment.network
        writer = records.TrialWriter(trial)
        writer.start(deployment, layout.relative(layout.candidate(network.key)), "bench:1")
        if plan.outcome == "failed":
            records.record_failure(trial, plan.error, retryable=plan.retryable)
            study.tell(trial, state=TrialState.FAIL)
            continue
        if plan.outcome == "interrupted":  # Ctrl-C during the trial, as the search records it
            records.record_interrupted(trial)
            study.tell(trial, state=TrialState.FAIL)
            continue
        if plan.outcome == "duplicate":
            previous = next(t for t in study.get_trials(deepcopy=False) if t.number == plan.duplicate_of)
            writer.duplicate_of(previous)
            study.tell(trial, list(previous.values))
            continue
        a = network.knob_dict["a"]
        latency = {
            "median_ms": plan.latency_ms, "mean_ms": plan.latency_ms, "p90_ms": plan.latency_ms * 1.1, "std_ms": 0.1,
            "runs": 50, "warmup": 10, "threads": 2, "graph_optimization": "all", "device_key": "local:bench",
            "facts": FACTS,
        }
        cost = Evaluation(
            metrics={"params": int(1_100_000 * a * a), "macs": int(80e6 * a * a * (network.resolution[0] / 64) ** 2),
                     "activation_mb": 3.5 * a, "onnx_mb": 4.2 * a * a, "latency_ms": plan.latency_ms,
                     "latency_p90_ms": plan.latency_ms * 1.1, "device_latency_ms": plan.latency_ms},
            details={"latency": latency},
        )
        writer.evaluate(cost)
        writer.timings({"profile_s": 0.2, "export_s": 0.6, "measure_s": 1.5})
        writer.constraint("max_latency_ms", plan.latency_ms - MAX_LATENCY_MS)
        if plan.outcome == "too_slow":
            writer.constraint("min_iou", 0.0)
            writer.status(records.TOO_SLOW)
            study.tell(trial, state=TrialState.PRUNED)
            continue
        if plan.outcome == "failed_measured":
            records.record_failure(trial, plan.error, retryable=False)
            study.tell(trial, state=TrialState.FAIL)
            continue
        training = {"test_iou": plan.iou, "test_class_iou": {class_names[0]: 0.97, class_names[1]: plan.iou}, "best_epoch": 3}
        writer.evaluate(cost.merged(metrics={"iou": plan.iou}, per_class_iou=training["test_class_iou"],
                                    details={"training": training}))
        writer.timings({"profile_s": 0.2, "export_s": 0.6, "measure_s": 1.5, "train_s": 20.0})
        writer.trained()
        writer.status(records.COMPLETE)
        writer.constraint("min_iou", MIN_IOU - plan.iou)
        if folder is not None:
            _write_training_files(layout.network(network.key).train, network, class_names, plan.iou)
        study.tell(trial, [plan.iou, plan.latency_ms])


def _write_training_files(run_dir: Path, candidate, class_names, iou: float) -> None:
    import torch

    from optiseg.checkpoint import save_checkpoint
    from optiseg.models import build_model

    torch.manual_seed(0)
    model = build_model(candidate.model, candidate.knob_dict, 1, candidate.in_channels).eval()
    save_checkpoint(run_dir / "best.pt", {
        "model": candidate.model, "knobs": candidate.knob_dict, "num_classes": 1, "in_channels": candidate.in_channels,
        "state_dict": model.state_dict(), "class_names": list(class_names), "resolution": list(candidate.resolution),
        "epoch": 3,
    })
    history = [
        {"epoch": e, "train_loss": 0.6 / e, "val_loss": 0.7 / e, "val_iou": iou - 0.1 / e, "best": e == 3} for e in (1, 2, 3)
    ]
    (run_dir / "metrics.json").write_text(json.dumps({"test_iou": iou, "history": history}), encoding="utf-8")


def _write_settings(study, values) -> None:
    from optiseg import records

    records.write_study_settings(study, values, "test")


def memory_study(class_names=("background", EVIL)) -> optuna.Study:
    """An in-memory study holding :data:`PLANS`, with the settings a search stores."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space()
    study = optuna.create_study(directions=["maximize", "minimize"], study_name=EVIL)
    _write_settings(study, settings(space, class_names))
    add_trials(study, space, class_names=class_names)
    return study


def study_folder(root: Path, *, name: str = EVIL, class_names=("background", EVIL), images: int = 20, plans=PLANS) -> Path:
    """A study on disk (SQLite storage, study.json, config, candidates with checkpoints) and its data set."""
    from optiseg.data import generate_synthetic

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    generate_synthetic(root / "data", images, 2, seed=0, size=(96, 64))
    config = {
        "study": "demo", "model": "fastscnn", "effort": "intermediate", "resolution": 64, "search_space": SEARCH_SPACE,
        "constraints": {"max_latency_ms": MAX_LATENCY_MS, "min_iou": MIN_IOU},
        "data": {"root": "data", "masks": "binary", "classes": list(class_names)},
        "budget": {"n_trials": 12}, "output": "runs",
    }
    config_path = root / "study.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    folder = root / "runs" / "demo"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config_path.read_text(encoding="utf-8"), encoding="utf-8")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    (folder / "study.json").write_text(json.dumps({
        "study": name, "storage": storage, "settings_hash": "test", "config": str(config_path), "optiseg_version": "0.1.0",
    }), encoding="utf-8")
    from optiseg.config import load_config
    from optiseg.data import load_dataset
    content = load_dataset(load_config(config_path).config.data).fingerprint()
    space = search_space()
    study = optuna.create_study(directions=["maximize", "minimize"], study_name=name, storage=storage)
    _write_settings(study, settings(space, class_names, content))
    add_trials(study, space, folder, class_names, plans)
    return folder
