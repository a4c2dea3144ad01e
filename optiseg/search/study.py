"""A study on disk and in storage: its folder, the settings that define it, creation and resumption.

The study folder ``<output>/<study>/`` holds ``study.json`` (name, storage,
settings), ``config.yaml`` (the config as first used), the SQLite database by
default, ``candidates/<candidate>/`` (ONNX, latency, checkpoints, metrics and
log of each distinct network) and ``trials/<number>`` (a link per trial to
its candidate's folder).

The settings that define a study (search space, data content, training,
constraints, device kind and timing protocol) are hashed and stored with the
study. Resuming with different settings is refused with the list of what
changed; ``--force`` archives the old study (kept in storage under a new name,
its folder moved aside) and starts afresh.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..config import LoadedConfig
from ..errors import StudyError
from .space import SearchSpace
from .storage import StorageSpec, open_storage, parse_storage

DIRECTIONS = ("maximize", "minimize")  # IoU, latency in ms
SETTINGS_ATTR = "optiseg_settings"
HASH_ATTR = "optiseg_settings_hash"
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class StudyPaths:
    folder: Path

    @property
    def candidates(self) -> Path:
        return self.folder / "candidates"

    @property
    def trials(self) -> Path:
        return self.folder / "trials"

    @property
    def study_file(self) -> Path:
        return self.folder / STUDY_FILE

    @property
    def config_copy(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def log(self) -> Path:
        return self.folder / "search.log"

    def candidate(self, key: str) -> Path:
        return self.candidates / key


def study_settings(loaded: LoadedConfig, space: SearchSpace, data_fingerprint: str) -> dict[str, Any]:
    """The settings whose change makes old trials incomparable with new ones (JSON-safe)."""
    config = loaded.config
    data = config.data.model_dump(mode="json", exclude={"root", "cache_mb", "synthetic"})
    training = config.training.model_dump(mode="json", exclude={"device", "amp"})
    device = config.device.model_dump(mode="json")
    return {
        "search_space": space.as_dict(),
        "data": {**data, "content": data_fingerprint},
        "training": training,
        "constraints": config.constraints.model_dump(mode="json"),
        "device": {"name": device.get("name"), "kind": device.get("kind"), "measure": device.get("measure")},
    }


def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two settings dicts, e.g. ``training.epochs: 30 -> 10``."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += describe_changes(a, b, prefix=f"{path}.")
        elif a != b:
            changes.append(f"{path}: {_short(a)} -> {_short(b)}")
    return changes


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_storage(loaded: LoadedConfig, folder: Path) -> StorageSpec:
    return parse_storage(loaded.config.storage, folder, loaded.path.parent)


def open_study(
    loaded: LoadedConfig,
    paths: StudyPaths,
    storage_spec: StorageSpec,
    settings: dict[str, Any],
    space: SearchSpace,
    sampler: optuna.samplers.BaseSampler,
    *,
    force: bool = False,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists with the same settings. Returns (study, created)."""
    name = loaded.study_name
    storage = open_storage(storage_spec)
    digest = settings_hash(settings)
    existing = name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        stored = study.user_attrs.get(HASH_ATTR)
        if stored is not None and stored != digest:
            changes = describe_changes(study.user_attrs.get(SETTINGS_ATTR, {}), settings)
            if not force:
                raise StudyError(
                    f"study {name!r} in {storage_spec.shown} was run with other settings; resuming would mix "
                    f"incomparable trials. Changed: {'; '.join(changes[:6])}{' ...' if len(changes) > 6 else ''}",
                    hint="give the study a new `study:` name, restore the old settings, or run again with --force "
                    "(the old study is kept under an archived name and its folder moved aside)",
                )
            archived = _archive(study, storage, paths)
            study = None
            existing = False
            _note(paths, f"--force: archived the previous study as {archived!r}")
        elif stored is None:
            study.set_user_attr(SETTINGS_ATTR, settings)
            study.set_user_attr(HASH_ATTR, digest)
    if not existing:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, directions=list(DIRECTIONS), load_if_exists=True
        )
        study.set_user_attr(SETTINGS_ATTR, settings)
        study.set_user_attr(HASH_ATTR, digest)
        study.enqueue_trial(space.baseline_params(), user_attrs={"baseline": True}, skip_if_exists=True)
    _write_study_file(loaded, paths, storage_spec, digest)
    return study, not existing


def _archive(study: optuna.Study, storage, paths: StudyPaths) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    archived = f"{study.study_name}.archived-{stamp}"
    optuna.copy_study(from_study_name=study.study_name, from_storage=storage, to_storage=storage, to_study_name=archived)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    aside = paths.folder / f"archived-{stamp}"
    for part in (paths.candidates, paths.trials):
        if part.exists():
            aside.mkdir(parents=True, exist_ok=True)
            shutil.move(str(part), str(aside / part.name))
    return archived


def _write_study_file(loaded: LoadedConfig, paths: StudyPaths, storage_spec: StorageSpec, digest: str) -> None:
    paths.folder.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    payload = {
        "study": loaded.study_name,
        "storage": storage_spec.url,  # ${VAR} references stay unexpanded: no secret is written
        "settings_hash": digest,
        "config": str(loaded.path),
        "optiseg_version": __version__,
    }
    paths.study_file.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if not paths.config_copy.exists():
        shutil.copyfile(loaded.path, paths.config_copy)


def _note(paths: StudyPaths, line: str) -> None:
    paths.folder.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "a", encoding="utf-8") as handle:
        handle.write(f"{_dt.datetime.now().isoformat(timespec='seconds')} {line}\n")


@dataclass(frozen=True)
class StudyHandle:
    """An existing study opened for reading (``optiseg front``, ``deploy``, ``report``)."""

    name: str
    paths: StudyPaths
    storage: StorageSpec
    study: optuna.Study
    config_path: Path | None


def open_existing_study(target: str | Path) -> StudyHandle:
    """Open a study from its folder (holding study.json) or from its config file."""
    from ..config import load_config

    target = Path(target).expanduser()
    if target.is_dir():
        study_file = target / STUDY_FILE
        if not study_file.is_file():
            raise StudyError(
                f"{target} is not a study folder (no {STUDY_FILE})",
                hint="give the folder `optiseg search` printed (e.g. runs/quickstart) or the study's config file",
            )
        info = json.loads(study_file.read_text(encoding="utf-8"))
        paths = StudyPaths(target.resolve())
        spec = parse_storage(info["storage"], paths.folder, paths.folder)
        name = info["study"]
        config_path = paths.config_copy if paths.config_copy.exists() else None
    elif target.is_file():
        loaded = load_config(target)
        paths = StudyPaths((loaded.config.output / loaded.study_name).resolve())
        spec = resolve_storage(loaded, paths.folder)
        name = loaded.study_name
        config_path = loaded.path
    else:
        raise StudyError(f"{target} does not exist", hint="give a study folder (e.g. runs/quickstart) or a config file")
    storage = open_storage(spec)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyError(
            f"study {name!r} does not exist in {spec.shown}", hint="run `optiseg search CONFIG` first"
        ) from None
    return StudyHandle(name=name, paths=paths, storage=spec, study=study, config_path=config_path)
