"""The Pareto report: one offline, interactive HTML page per study.

>>> from optiseg.search import open_existing_study
>>> from optiseg.report import build_report
>>> result = build_report(open_existing_study("runs/quickstart"), "reports/quickstart.html")
>>> result.size_mb, result.seconds

:mod:`.data` computes every figure's data from the study's records (pure
functions), :mod:`.figures` draws them with plotly, :mod:`.samples` runs the
front's models on a few test images, and :mod:`.html` assembles the page.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .. import records as store
from .._atomic import write_text_atomic
from ..errors import OptisegError
from ..layout import StudyLayout
from ..plans import get_metric
from ..results import TrialRecord, load_records, pareto_front
from .data import (
    split_tables,
    Fact,
    budget_facts,
    device_groups,
    failed_rows,
    flatten_settings,
    format_seconds,
    front_rows,
    partial_front_rows,
    hypervolume_data,
    knob_effects,
    knob_importance,
    latency_check_data,
    search_space_rows,
    searched_knobs,
    status_counts,
    timing_data,
    tradeoff_data,
    training_curves,
)
from .html import ReportPage, render_page
from .samples import SampleGrid, sample_grid

__all__ = ["ReportOptions", "ReportPage", "ReportResult", "build_report", "default_report_path", "gather_page", "summarize"]



class ReportOptions(NamedTuple):
    """What goes into the report besides the study's figures."""

    samples: bool = True  # run the front's models on test images (needs the data set and the checkpoints)
    images_per_model: int = 3
    max_sample_models: int = 6
    image_side: int = 320  # the shown images fit in a square of this many pixels


class ReportResult(NamedTuple):
    path: Path
    size_mb: float
    seconds: float
    trials: int
    front: int
    notes: tuple[str, ...]  # what the page could not show, and why


def default_report_path(study_name: str) -> Path:
    """``reports/<study>.html``, the study name made safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    return Path("reports") / f"{safe}.html"


def build_report(handle, out_path: str | os.PathLike, *, study_arg: str | None = None,
                 options: ReportOptions = ReportOptions()) -> ReportResult:
    """Write the report of the study ``handle`` (a :class:`~optiseg.search.StudyHandle`) to ``out_path``.

    ``study_arg`` is how the user named the study (it appears in the deploy
    commands); the study folder by default. The file is written atomically.
    """
    started = time.perf_counter()
    page = gather_page(handle, study_arg=study_arg, options=options)
    text = render_page(page)
    out = Path(out_path)
    _write_atomic(out, text)
    size = out.stat().st_size / 2**20
    return ReportResult(out, round(size, 3), round(time.perf_counter() - started, 2), sum(page.counts.values()) - page.counts.get("duplicate", 0),
                        len(page.front), page.notes + (page.samples.notes if page.samples else ()))


def gather_page(handle, *, study_arg: str | None = None, options: ReportOptions = ReportOptions()) -> ReportPage:
    """Read the study, its files and its data set, and compute everything the page shows."""
    from .. import __version__

    study = handle.study
    records = load_records(study)
    settings: Mapping[str, Any] = store.study_settings(study)
    folder = Path(handle.paths.folder)
    info = _read_json(StudyLayout(folder).study_file) or {}
    notes: list[str] = []

    loaded, config_problem = _load_config(info, handle.config_path)
    if config_problem:
        notes.append(config_problem)
    constraints = dict(settings.get("constraints") or {})
    if not constraints and loaded is not None:
        constraints = loaded.config.constraints.model_dump()
    max_latency, min_iou = constraints.get("max_latency_ms"), constraints.get("min_iou")

    space = settings.get("search_space") or {}
    model = space.get("model") or next((r.model for r in records if r.model), None)
    tiers = _tiers(model)
    knobs = searched_knobs(settings, records)
    objectives = tuple((name, get_metric(name).direction) for name in settings.get("objectives") or ("iou", "latency_ms"))
    front = pareto_front(records, objectives)
    if objectives != (("iou", "maximize"), ("latency_ms", "minimize")):
        notes.append(f"The front is over the study's objectives ({', '.join(n for n, _ in objectives)}); "
                     "the trade-off chart plots IoU against latency.")

    dataset, dataset_problem = (None, None)
    if options.samples and front:
        dataset, dataset_problem = _load_dataset(loaded, settings)
    samples: SampleGrid | None = None
    samples_note = None
    if not options.samples:
        samples_note = "Sample predictions were left out (--no-samples)."
    elif not front:
        samples_note = "Sample predictions appear once a model is on the Pareto front."
    elif dataset is None:
        samples_note = f"No sample predictions: {dataset_problem}"
    else:
        samples = sample_grid(dataset, front, folder, images=options.images_per_model, models=options.max_sample_models,
                              max_side=options.image_side)
        if dataset_problem:  # loaded, with a warning
            samples_note = dataset_problem

    histories = {r.number: _history(folder, r) for r in front}
    config_file = handle.paths.config_copy if handle.paths.config_copy.is_file() else handle.config_path
    return ReportPage(
        study=handle.name,
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        optiseg_version=__version__,
        search_version=info.get("optiseg_version"),
        folder=str(folder),
        storage=handle.storage.shown,
        counts=status_counts(records),
        tradeoff=tradeoff_data(records, max_latency_ms=max_latency, min_iou=min_iou, knobs=knobs,
                               baseline=space.get("baseline") or {}, tiers=tiers, objectives=objectives),
        front=front_rows(records, study_arg or _shown_path(folder), objectives),
        partial_front=partial_front_rows(records, study_arg or _shown_path(folder), objectives),
        failed=failed_rows(records),
        importance=knob_importance(records, knobs),
        effects=knob_effects(records, knobs),
        samples=samples,
        samples_note=samples_note,
        curves=training_curves(front, histories),
        hypervolume=hypervolume_data(records, max_latency, objectives),
        timing=timing_data(records),
        budget=budget_facts(records, _budget(loaded), _span_seconds(study)),
        data=_data_facts(settings, loaded, dataset),
        devices=device_groups(records),
        space=search_space_rows(settings, tiers),
        settings=flatten_settings(settings),
        config_name=str(config_file) if config_file else None,
        config_text=_read_text(config_file),
        notes=tuple(notes),
        latency_checks=latency_check_data(records, store.drift_events(study)),
        split=split_tables(records, front),
    )


# ----------------------------------------------------------------------------------- reading the study's files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _load_config(info: Mapping[str, Any], fallback: Path | None):
    """The study's config: the original file (relative paths resolve from its folder), else the copy in the study folder."""
    from ..config import load_config

    candidates = [Path(info["config"])] if info.get("config") else []
    if fallback is not None:
        candidates.append(Path(fallback))
    problem = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return load_config(path), None
        except OptisegError as exc:
            problem = f"the config {path} cannot be read ({exc.message}); budget and data set details are missing"
    return None, problem or "the study's config file was not found; budget and data set details are missing"


def _tiers(model: str | None) -> dict[str, str]:
    if not model:
        return {}
    from ..search.space import load_knob_definitions

    try:
        return {name: d.get("tier", "?") for name, d in load_knob_definitions(model).items()}
    except OptisegError:
        return {}


def _load_dataset(loaded, settings: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The data set for the sample predictions, or None and why not; never generates or modifies data."""
    if loaded is None:
        return None, "the study's config file was not found, so neither is the data set"
    from ..data import load_dataset

    root = loaded.config.data.root
    if not root.is_dir():
        return None, f"the data set folder {root} does not exist on this machine"
    try:
        dataset = load_dataset(loaded.config.data)
    except OptisegError as exc:
        return None, f"the data set at {root} cannot be loaded: {exc.message}"
    expected = (settings.get("data") or {}).get("content")
    if expected and dataset.fingerprint() != expected:
        return dataset, f"the data set at {root} has changed since the search; the images above come from its current files"
    return dataset, None


def _history(folder: Path, record: TrialRecord) -> Any:
    if not record.artifacts:
        return None
    metrics = _read_json(StudyLayout(folder).network_at(record.artifacts).train / "metrics.json")
    return metrics.get("history") if isinstance(metrics, Mapping) else None


def _budget(loaded) -> dict[str, Any] | None:
    if loaded is None:
        return None
    budget = loaded.config.budget
    return {"n_trials": budget.n_trials, "timeout": format_seconds(budget.timeout) if budget.timeout else None}


def _span_seconds(study) -> float | None:
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if not starts or not ends:
        return None
    return max(0.0, (max(ends) - min(starts)).total_seconds())


def _data_facts(settings: Mapping[str, Any], loaded, dataset) -> tuple[Fact, ...]:
    data = dict(settings.get("data") or {})
    facts = []
    if loaded is not None:
        facts.append(Fact("folder", str(loaded.config.data.root)))
    if dataset is not None:
        facts.append(Fact("images", f"{len(dataset.train)} train, {len(dataset.val)} val, {len(dataset.test)} test"))
        names = list(dataset.class_names)
    else:
        names = list(data.get("classes") or (loaded.config.data.class_names if loaded is not None else []))
    if names:
        facts.append(Fact("classes", ", ".join(str(n) for n in names)))
    for key, label in (("masks", "masks"), ("layout", "layout"), ("ignore_index", "ignored mask value"), ("content", "content fingerprint")):
        if data.get(key) is not None:
            facts.append(Fact(label, str(data[key])))
    return tuple(facts)


def _shown_path(folder: Path) -> str:
    """``folder`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def _write_atomic(path: Path, text: str) -> None:
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise OptisegError(f"cannot write the report to {path}: {exc.strerror or exc}",
                           hint="choose a writable place with -o PATH") from None


def summarize(result: ReportResult) -> str:
    """One line for the terminal."""
    return f"wrote {result.path} ({result.size_mb:.1f} MB, {result.trials} trials, {result.front} on the front) in {result.seconds:.1f} s"

