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
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .._paths import NotRegularFile, path_kind, read_regular, shown
from ..config import LoadedConfig
from ..config.training import HOW_NOT_WHAT
from ..errors import StudyError, UsageError
from .. import records
from ..layout import STUDY_FILE, StudyLayout
from .space import SearchSpace
from .storage import StorageSpec, open_storage, parse_storage

SETTINGS_WAIT_S = 10.0  # how long a worker waits for the settings of a study another worker has just created


def study_settings(loaded: LoadedConfig, space: SearchSpace, data_fingerprint: str, train_images: int) -> dict[str, Any]:
    """The settings whose change makes old trials incomparable with new ones (JSON-safe); the training settings as
    they train on ``train_images`` images (the batch size and learning rate a default stands for)."""
    config = loaded.config
    data = config.data.model_dump(mode="json", exclude={"root", "cache_mb", "synthetic"})
    training = config.training.for_split(train_images).model_dump(mode="json", exclude=set(HOW_NOT_WHAT))
    device = config.device.model_dump(mode="json")
    return {
        "search_space": space.as_dict(),
        "data": {**data, "content": data_fingerprint},
        "training": training,
        "objectives": list(config.objectives),
        "constraints": {k: v for k, v in config.constraints.model_dump(mode="json").items() if v is not None},
        "quantization": config.quantization.model_dump(mode="json"),
        "device": {"name": device.get("name"), "kind": device.get("kind"), "measure": device.get("measure")},
        # Sections added after a study format was in use count only when set, so older studies keep their hash.
        **({"mode": list(config.mode)} if list(config.mode) != ["device"] else {}),
        **({"server": _runner_identity(config.server)} if config.server is not None else {}),
        **({"link": config.link.model_dump(mode="json", exclude={"measured"})} if config.link is not None else {}),
        **({"fidelity": config.fidelity.model_dump(mode="json")} if config.fidelity is not None else {}),
        **({"inherit_weights": True} if config.inherit_weights else {}),
    }


def _runner_identity(section) -> dict[str, Any]:
    dumped = section.model_dump(mode="json")
    return {"name": dumped.get("name"), "kind": dumped.get("kind"), "measure": dumped.get("measure")}


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


def defaults_that_changed(loaded: LoadedConfig, stored: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """``training.KEY: value`` for each training setting the config leaves to its default (``null``) whose value in
    the study differs from what the default stands for now: a study made before that default changed (e.g.
    ``training.batch_size`` was 4 before it was 16)."""
    written = loaded.config.training.model_dump(mode="json")
    before, now = stored.get("training", {}), settings["training"]
    return [f"training.{key}: {_short(before[key])}" for key in sorted(before)
            if key in written and written[key] is None and before[key] != now.get(key)]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_storage(loaded: LoadedConfig, folder: Path) -> StorageSpec:
    return parse_storage(loaded.config.storage, folder, loaded.path.parent)


def open_study(
    loaded: LoadedConfig,
    paths: StudyLayout,
    storage_spec: StorageSpec,
    settings: dict[str, Any],
    space: SearchSpace,
    sampler: optuna.samplers.BaseSampler,
    directions: list[str],
    *,
    force: bool = False,
    on_create=None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists with the same settings. Returns (study, created).

    ``on_create(study)`` runs right after a new study is created (e.g. the warm-start
    import); if it or anything else here fails, the new study is deleted again and
    every file its creation wrote is removed: a failed start leaves nothing behind.
    """
    name = loaded.study_name
    existed_before = {p: p.exists() for p in paths.made_files()}
    storage = open_storage(storage_spec)
    digest = settings_hash(settings)
    existing = name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    created_here = False
    try:
        if not existing:
            try:
                study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions)
                created_here = True
            except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
                existing = True
        if existing:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            stored = _settings_hash_once_written(study)
            if not force:  # an older optiseg's study says so, whatever its settings
                records.check_study_schema(study, name, for_writing=True)
            mismatch = stored is not None and stored != digest
            if mismatch or (force and records.study_schema(study) < records.SCHEMA):
                changes = describe_changes(records.study_settings(study), settings)
                if not force:
                    kept = defaults_that_changed(loaded, records.study_settings(study), settings)
                    raise StudyError(
                        f"study {name!r} in {storage_spec.shown} was run with other settings; resuming would mix "
                        f"incomparable trials. Changed: {'; '.join(changes[:6])}{' ...' if len(changes) > 6 else ''}",
                        hint="give the study a new `study:` name, restore the old settings, or run again with --force "
                        "(the old study is kept under an archived name and its folder moved aside)"
                        + (f"; to resume it where a default has changed since, write the values it ran with into "
                           f"{loaded.path}: {', '.join(kept)}" if kept else ""),
                    )
                archived = _archive(study, storage, paths)
                study = None
                existing = False
                _note(paths, f"--force: archived the previous study as {archived!r}")
            elif stored is None:
                records.write_study_settings(study, settings, digest)
        if not existing:
            if not created_here:  # the old study was archived under --force
                study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions)
                created_here = True
            records.write_study_settings(study, settings, digest)
            study.enqueue_trial(space.baseline_params(), user_attrs=records.baseline_attrs(), skip_if_exists=True)
            if on_create is not None:
                on_create(study)
        _write_study_file(loaded, paths, storage_spec, digest)
    except BaseException:
        if created_here:
            optuna.delete_study(study_name=name, storage=storage)
            _dispose(storage)
            for path, existed in existed_before.items():
                if not existed and path.exists():
                    path.unlink()
        raise
    return study, not existing


def _settings_hash_once_written(study: optuna.Study, wait_s: float = SETTINGS_WAIT_S) -> str | None:
    """The study's settings hash; a study another worker has just created gets a moment to receive it.

    ``None`` after the wait: a study made by an older optiseg, or one whose creator died right after
    creating it (its settings are then written by this worker).
    """
    deadline = time.monotonic() + wait_s
    while True:
        stored = records.study_settings_hash(study)
        if stored is not None or study.trials or time.monotonic() >= deadline:
            return stored
        time.sleep(0.2)


def _dispose(storage) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def _archive(study: optuna.Study, storage, paths: StudyLayout) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    archived = f"{study.study_name}.archived-{stamp}"
    optuna.copy_study(from_study_name=study.study_name, from_storage=storage, to_storage=storage, to_study_name=archived)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    aside = paths.archive(stamp)
    for part in (paths.candidates, paths.trials):
        if part.exists():
            aside.mkdir(parents=True, exist_ok=True)
            shutil.move(str(part), str(aside / part.name))
    return archived


def _write_study_file(loaded: LoadedConfig, paths: StudyLayout, storage_spec: StorageSpec, digest: str) -> None:
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


def _note(paths: StudyLayout, line: str) -> None:
    paths.folder.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "a", encoding="utf-8") as handle:
        handle.write(f"{_dt.datetime.now().isoformat(timespec='seconds')} {line}\n")


@dataclass(frozen=True)
class NewFolders:
    """The study folder and the folders above it that do not exist yet when a start begins, deepest first.

    A start that fails before its study exists removes them again (:meth:`remove`): whatever is in them
    (``search.log``, a lock file, an empty database) was made by that start, so the next run after the fix
    starts exactly as the first one should have.
    """

    paths: tuple[Path, ...]

    @classmethod
    def above(cls, folder: Path) -> NewFolders:
        folder = folder.absolute()
        return cls(tuple(p for p in (folder, *folder.parents) if not p.exists() and not p.is_symlink()))

    def remove(self) -> None:
        if self.paths:
            shutil.rmtree(self.paths[0], ignore_errors=True)
        for folder in self.paths[1:]:
            try:
                folder.rmdir()  # only if still empty: another study may have come meanwhile
            except OSError:
                break


@dataclass(frozen=True)
class StudyHandle:
    """An existing study opened for reading (``optiseg front``, ``deploy``, ``report``)."""

    name: str
    paths: StudyLayout
    storage: StorageSpec
    study: optuna.Study
    config_path: Path | None


def open_existing_study(target: str | Path) -> StudyHandle:
    """Open a study from its folder (holding study.json) or from its config file; nothing is created.

    A path that is not a study (missing, a folder without study.json, a FIFO, ``study.json`` itself) and a
    config whose study was never run are bad input: a :class:`~optiseg.errors.UsageError` (exit status 2).
    """
    from ..config import load_config

    target = Path(target).expanduser()
    kind = path_kind(target)
    if kind == "is a folder":
        paths = StudyLayout(target.resolve())
        info = _read_study_file(target, paths.study_file)
        spec = parse_storage(info["storage"], paths.folder, paths.folder)
        name = info["study"]
        config_path = paths.config_copy if paths.config_copy.is_file() else None
        run_first = f"run `optiseg search {shlex.quote(info.get('config') or 'CONFIG')}` first"
    elif kind == "is a file" and target.name == STUDY_FILE:
        raise UsageError(f"{shown(str(target))} is the study's own file, not its config: give its folder, "
                         f"{shown(shlex.quote(str(target.parent)))}", hint="the folder `optiseg search` printed, or the study's config file")
    elif kind == "is a file":
        loaded = load_config(target)
        paths = StudyLayout(loaded.study_folder.resolve())
        spec = resolve_storage(loaded, paths.folder)
        name = loaded.study_name
        config_path = loaded.path
        run_first = f"run `optiseg search {shlex.quote(str(target))}` first"
    else:
        raise UsageError(f"{shown(str(target))} {kind}: give a study folder (e.g. runs/quickstart) or the study's config file")
    storage = open_storage(spec, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage) if storage is not None else None
    except KeyError:
        study = None
    if study is None:
        raise UsageError(f"no study yet: study {name!r} is not in {spec.shown}", hint=run_first)
    records.check_study_schema(study, name, for_writing=False)
    return StudyHandle(name=name, paths=paths, storage=spec, study=study, config_path=config_path)


def _read_study_file(folder: Path, study_file: Path) -> dict[str, Any]:
    """The name and storage a study folder's study.json holds; a UsageError naming the folder when it has none."""
    if path_kind(study_file) == "does not exist":
        raise UsageError(f"{folder} is not a study folder (no {STUDY_FILE})",
                         hint="give the folder `optiseg search` printed (e.g. runs/quickstart) or the study's config file")
    try:
        info = json.loads(read_regular(study_file).decode("utf-8"))
        if isinstance(info.get("study"), str) and isinstance(info.get("storage"), str):
            return info
        problem = "it does not name the study and its storage"
    except (OSError, ValueError, AttributeError) as exc:  # NotRegularFile, bad JSON or UTF-8, not a JSON object
        problem = str(exc) if isinstance(exc, NotRegularFile) else f"it is not the JSON `optiseg search` writes ({exc})"
    raise UsageError(f"{folder} is not a study folder: {shown(str(study_file))} cannot be read: {problem}",
                     hint="give the folder `optiseg search` printed (e.g. runs/quickstart) or the study's config file")
