"""Warm start: a higher-tier study begins with the plans a lower-tier study already evaluated.

Tiers nest, so every beginner candidate is also an intermediate candidate (with
the new knobs at their baseline values). When a study with ``warm_start:`` is
created, each finished plan of the source study that exists in the new search
space is stored in it as a finished trial with its knobs, record, constraints
and artifacts: it appears on the new front, is never trained again, and does
not count against the new budget. The source must share the data, training,
objectives, constraints, device and deployment settings
(``COMPARABLE_SECTIONS``), or its figures would not be comparable; that is
checked before the new study is created.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import records
from ..errors import ConfigError
from ..layout import StudyLayout
from ..modes import get_mode
from .space import SearchSpace
from .study import StudyHandle, describe_changes

COMPARABLE_SECTIONS = ("data", "training", "objectives", "constraints", "device", "quantization", "mode", "server",
                       "link", "inherit_weights")


@dataclass(frozen=True)
class ImportSource:
    handle: StudyHandle
    source: Path


def prepare_import(source: str | Path, settings: dict) -> ImportSource:
    """Open the warm-start source and check it is comparable; raise before anything is created."""
    from ..errors import OptisegError
    from .study import open_existing_study

    try:
        handle = open_existing_study(source)
    except OptisegError as exc:  # not a study, a config that is no config, a study never run: said as the key's fault
        raise ConfigError(f"warm_start = {str(source)!r}: {exc.message}", hint=exc.hint or "fix the path, or remove warm_start") from None
    source_settings = records.study_settings(handle.study)
    source_settings["constraints"] = {k: v for k, v in (source_settings.get("constraints") or {}).items() if v is not None}
    changes = [
        change
        for section in COMPARABLE_SECTIONS
        for change in describe_changes({section: source_settings.get(section)}, {section: settings.get(section)})
    ]
    if changes:
        raise ConfigError(
            f"warm_start: study {handle.name!r} at {source} was run with other settings, so its figures are not "
            f"comparable: {'; '.join(changes[:5])}",
            hint="warm-start only from a study on the same data, training, constraints and device, or remove warm_start",
        )
    return ImportSource(handle, Path(source))


def import_trials(study: optuna.Study, space: SearchSpace, layout: StudyLayout, source: ImportSource, num_classes: int) -> int:
    """Replay the finished plans of ``source`` into ``study``; returns how many."""
    handle = source.handle
    imported = 0
    seen: set[str] = set()
    for old in handle.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        record = records.read_record(old)
        if record.plan is None or record.plan_key in seen or record.duplicate_of is not None:
            continue
        params = _params_in(space, record, num_classes)
        if params is None:
            continue  # not a plan of the new space (a choice the new study does not offer)
        seen.add(record.plan_key)
        source_folder = handle.paths.folder / record.artifacts if record.artifacts else None
        target_folder = layout.candidate(record.candidate)
        if source_folder is not None and source_folder.is_dir() and not target_folder.exists():
            shutil.copytree(source_folder, target_folder)
        asked, distributions = space.as_asked(params)
        complete = old.state == TrialState.COMPLETE
        trial = optuna.trial.create_trial(state=TrialState.COMPLETE if complete else TrialState.PRUNED,
                                          values=list(old.values) if complete else None,
                                          params=asked, distributions=distributions)
        records.write_attrs(trial, records.upgrade_to_current(old))
        writer = records.TrialWriter(trial)
        writer.artifacts(layout.relative(target_folder))
        writer.imported_from(f"{handle.name}#{old.number}")
        for name, value in records.constraints_of(old).items():
            writer.constraint(name, value)
        study.add_trial(trial)  # stored as it is: the queue (the new study's baseline first) is left alone
        imported += 1
    return imported


def _params_in(space: SearchSpace, record: records.TrialRecord, num_classes: int) -> dict | None:
    """The new space's params for a plan, or None if the new space cannot express it."""
    network = record.plan.network
    if network.model != space.model or network.num_classes != num_classes:
        return None
    height, width = network.resolution
    family = getattr(get_mode(record.plan.mode), "family", record.plan.mode)
    values = {**network.knob_dict, "in_channels": network.in_channels,
              "resolution": height if height == width else network.resolution_text, **record.plan.knob_dict, "mode": family}
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
