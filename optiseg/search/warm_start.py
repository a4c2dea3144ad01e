"""Warm start: a higher-tier study begins with the candidates a lower-tier study already evaluated.

Tiers nest, so every beginner candidate is also an intermediate candidate (with
the new knobs at their baseline values). When a study with ``warm_start:`` is
created, each finished candidate of the source study that exists in the new
search space is replayed into it through ask/tell with its figures, constraints
and artifacts: it appears on the new front, is never trained again, and does
not count against the new budget. The source must share the data, training,
constraints and device settings, or its figures would not be comparable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import StudyError
from .space import SearchSpace
from .study import SETTINGS_ATTR, StudyPaths, describe_changes

IMPORTED_ATTR = "imported_from"
COMPARABLE_SECTIONS = ("data", "training", "constraints", "device")
COPIED_ATTRS = ("candidate", "model", "knobs", "resolution", "in_channels", "params", "macs", "activation_mb",
                "onnx_mb", "latency", "latency_ms", "iou", "metrics", "status", "timings", "worker")


def import_trials(study: optuna.Study, space: SearchSpace, paths: StudyPaths, settings: dict, source: str | Path) -> int:
    """Replay the finished candidates of the study at ``source`` into ``study``; returns how many."""
    from .study import open_existing_study

    handle = open_existing_study(source)
    source_settings = handle.study.user_attrs.get(SETTINGS_ATTR, {})
    changes = [
        change
        for section in COMPARABLE_SECTIONS
        for change in describe_changes({section: source_settings.get(section)}, {section: settings.get(section)})
    ]
    if changes:
        raise StudyError(
            f"warm_start: study {handle.name!r} at {source} was run with other settings, so its figures are not "
            f"comparable: {'; '.join(changes[:5])}",
            hint="warm-start only from a study on the same data, training, constraints and device, or remove warm_start",
        )
    imported = 0
    seen: set[str] = set()
    for old in handle.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        key = old.user_attrs.get("candidate")
        if key is None or key in seen or "duplicate_of" in old.user_attrs:
            continue
        params = _params_in(space, old.user_attrs)
        if params is None:
            continue  # not a candidate of the new space (a choice the new study does not offer)
        seen.add(key)
        source_folder = handle.paths.candidate(key)
        target_folder = paths.candidate(key)
        if source_folder.is_dir() and not target_folder.exists():
            shutil.copytree(source_folder, target_folder)
        study.enqueue_trial(params, skip_if_exists=False)
        trial = study.ask()
        for attr in COPIED_ATTRS:
            if attr in old.user_attrs:
                trial.set_user_attr(attr, old.user_attrs[attr])
        trial.set_user_attr("artifacts", str(target_folder.relative_to(paths.folder)))
        trial.set_user_attr(IMPORTED_ATTR, f"{handle.name}#{old.number}")
        for name, value in old.constraints.items():
            trial.set_constraint(name, value)
        if old.state == TrialState.COMPLETE:
            study.tell(trial, list(old.values))
        else:
            study.tell(trial, state=TrialState.PRUNED)
        imported += 1
    return imported


def _params_in(space: SearchSpace, attrs: dict) -> dict | None:
    """The new space's params for a candidate, or None if the new space cannot express it."""
    values = {**attrs.get("knobs", {}), "in_channels": attrs.get("in_channels", 3)}
    resolution = attrs.get("resolution", "")
    height, _, width = resolution.partition("x")
    values["resolution"] = int(height) if height == width else resolution
    params = {}
    for name, value in space.baseline.items():
        wanted = values.get(name, value)
        wanted = int(wanted) if isinstance(wanted, bool) else wanted
        if name in space.choices:
            if wanted not in space.choices[name]:
                return None
            params[name] = wanted
        elif wanted != value:
            return None
    return params
