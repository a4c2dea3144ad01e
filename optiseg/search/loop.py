"""The search: ask, evaluate, tell, until the budget is spent; resumable and shareable by many workers.

Budget: ``n_trials`` counts the distinct candidates evaluated (complete or
too slow) or being evaluated, across every worker of the study; each worker
checks its place in the queue after asking, so the global total holds even
when workers race. A sampler proposing a candidate already evaluated gets its
figures again at no cost, and that trial does not count; neither do failed
trials. ``timeout`` limits one run of the command. Three failures in a row
stop the search (the cause is almost always the same), and so do
``MAX_CONSECUTIVE_DUPLICATES`` proposals in a row of known candidates (the
sampler has converged).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import LoadedConfig
from ..errors import OptisegError, StudyError
from ..results import COMPLETE, FAILED, SKIPPED, TOO_SLOW, TrialRecord, load_records, pareto_front, record_from_trial
from .lease import RETRY_ATTR, STATUS_ATTR, LeaseSettings, TrialLease, recover_stale_trials
from .progress import SearchProgress
from .sampler import grid_queue, make_sampler, resolve_sampler_name
from .space import build_search_space
from .storage import SQLiteWriterLock
from .study import StudyPaths, open_study, resolve_storage, study_settings
from .warm_start import IMPORTED_ATTR, import_trials
from .trial import InProgressElsewhere, TooSlow, TrialEnvironment, evaluate, latency_cache_dir

MAX_CONSECUTIVE_FAILURES = 3
MAX_CONSECUTIVE_DUPLICATES = 25
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class Interrupted(BaseException):
    """SIGTERM, handled like Ctrl-C."""


@dataclass(frozen=True)
class SearchSummary:
    study: str
    folder: Path
    storage: str
    sampler: str
    stop_reason: str
    finished_this_run: int
    counts: dict[str, int]
    front: list[TrialRecord] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False


def run_search(
    loaded: LoadedConfig,
    *,
    force: bool = False,
    quiet: bool = False,
    progress: SearchProgress | None = None,
    lease: LeaseSettings = LeaseSettings(),
) -> SearchSummary:
    """Run (or resume) the study that ``loaded`` describes until its budget is spent."""
    from ..data import DatasetCache, load_dataset
    from ..devices import open_pool

    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress view and search.log report every step
    config = loaded.config
    paths = StudyPaths((config.output / loaded.study_name).resolve())
    space = build_search_space(config.model, config.effort, config.search_space, config.resolution, source=str(loaded.path))
    storage_spec = resolve_storage(loaded, paths.folder)
    dataset = load_dataset(config.data)  # checks the data first: bad data stops here, before any trial
    settings = study_settings(loaded, space, dataset.fingerprint())
    progress = progress or SearchProgress(paths.log, quiet=quiet)
    n_trials = config.budget.n_trials
    latency_constrained = config.constraints.max_latency_ms is not None
    sampler_name = resolve_sampler_name(config.sampler, space, n_trials, latency_constrained, storage_spec.shared)

    lock = SQLiteWriterLock(storage_spec.path) if storage_spec.kind == "sqlite" else contextlib.nullcontext()
    with lock:
        probe_sampler = optuna.samplers.RandomSampler()
        study, created = open_study(loaded, paths, storage_spec, settings, space, probe_sampler, force=force)
        if created and config.warm_start is not None:
            imported = import_trials(study, space, paths, settings, config.warm_start)
            progress.log(f"warm start: {imported} candidates imported from {config.warm_start}")
        recover_stale_trials(study, all_running_are_dead=storage_spec.kind == "sqlite", settings=lease)
        if sampler_name == "grid":
            for params in grid_queue(space):
                study.enqueue_trial(params, skip_if_exists=True)
        study.sampler = make_sampler(
            config.sampler, space, seed=_sampler_seed(config.seed, study, storage_spec.shared),
            n_trials=n_trials, latency_constrained=latency_constrained, multi_worker=storage_spec.shared,
        )
        pool = open_pool(config.device)
        try:
            for runner in pool.runners:  # host keys, logins, a missing onnxruntime: reported now, not in trial 1
                progress.log(f"connecting to {runner.label}")
                runner.connect()
        except BaseException:
            pool.close()
            raise
        env = TrialEnvironment(
            study=study, paths=paths, space=space, config=config, dataset=dataset,
            cache=DatasetCache(dataset, budget_mb=config.data.cache_mb), pool=pool,
            class_names=list(getattr(dataset, "class_names", []) or []) or None, progress=progress,
            latency_cache=latency_cache_dir(config.output, settings["device"]),
        )
        progress.start(loaded.study_name, n_trials, config.budget.timeout, _counted(study))
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
        finished_this_run = 0
        interrupted = False
        try:
            stop_reason, finished_this_run = _loop(
                study, env, space, n_trials, config.budget.timeout, lease, progress, grid=sampler_name == "grid"
            )
        except (KeyboardInterrupt, Interrupted):
            interrupted = True
            stop_reason = "interrupted"
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            progress.stop()
            pool.close()
        records = load_records(study)
    counts = count_statuses(records)
    return SearchSummary(
        study=loaded.study_name, folder=paths.folder, storage=storage_spec.shown, sampler=sampler_name,
        stop_reason=stop_reason, finished_this_run=finished_this_run, counts=counts,
        front=pareto_front(records), elapsed_s=time.monotonic() - started, interrupted=interrupted,
    )


def _loop(study, env, space, n_trials, timeout_s, lease, progress, grid: bool) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    failures_in_a_row = 0
    steps_aside = 0
    duplicates_in_a_row = 0
    finished = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout reached", finished
        recover_stale_trials(study, settings=lease)
        if n_trials is not None and _counted(study) >= n_trials:
            return f"budget of {n_trials} trials reached", finished
        if not _waiting(study):
            if _evaluated_candidates(study) >= space.size:
                return f"all {space.size} candidates of the search space evaluated", finished
            if grid:
                return "every candidate of the grid was tried (see the failed ones with `optiseg front --all`)", finished

        trial = study.ask()
        if n_trials is not None and _place_in_queue(study, trial.number) >= n_trials:
            trial.set_user_attr(STATUS_ATTR, SKIPPED)
            study.tell(trial, state=TrialState.FAIL)
            return f"budget of {n_trials} trials reached", finished

        try:
            with TrialLease(trial, lease):
                values = evaluate(trial, env)
            study.tell(trial, values)
            failures_in_a_row = steps_aside = 0
        except TooSlow:
            study.tell(trial, state=TrialState.PRUNED)
            failures_in_a_row = 0
        except InProgressElsewhere as busy:
            trial.set_user_attr(STATUS_ATTR, SKIPPED)
            trial.set_user_attr("error", f"stepped aside: trial {busy.number} is evaluating the same candidate")
            study.tell(trial, state=TrialState.FAIL)
            progress.log(f"trial {trial.number} stepped aside: trial {busy.number} is evaluating the same candidate")
            steps_aside += 1
            time.sleep(min(30.0, 0.5 * 2**steps_aside))
            continue
        except (KeyboardInterrupt, Interrupted):
            trial.set_user_attr(STATUS_ATTR, "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
            progress.log(f"trial {trial.number} interrupted; it will resume from its last checkpoint on the next run")
            raise
        except Exception as exc:  # a failing trial fails that trial, never the study
            failures_in_a_row += 1
            _record_failure(trial, exc, env)
            study.tell(trial, state=TrialState.FAIL)
        finished += 1
        duplicates_in_a_row = duplicates_in_a_row + 1 if _is_duplicate(study, trial.number) else 0
        if duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES:
            return f"the sampler proposed {duplicates_in_a_row} known candidates in a row (converged)", finished
        records = load_records(study)
        progress.trial_finished(record_from_trial(_frozen(study, trial.number)), pareto_front(records), count_statuses(records))
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            last = _frozen(study, trial.number).user_attrs.get("error", "unknown error")
            raise StudyError(
                f"{MAX_CONSECUTIVE_FAILURES} trials failed in a row; the last one: {last}",
                hint=f"the study is intact; see {env.paths.log} and the trial logs, fix the cause and run the same command to resume",
            )


def _record_failure(trial: optuna.Trial, exc: Exception, env: TrialEnvironment) -> None:
    message = str(exc).splitlines()[0] if isinstance(exc, OptisegError) else f"{type(exc).__name__}: {exc}"
    trial.set_user_attr("error", message[:500])
    trial.set_user_attr(STATUS_ATTR, FAILED)
    folder = env.paths.trials
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{trial.number:04d}.error.log").write_text("".join(traceback.format_exception(exc)), encoding="utf-8")


def count_statuses(records: list[TrialRecord]) -> dict[str, int]:
    """Distinct candidates trained / too slow, failed and running trials, and re-proposals of known candidates."""
    counts = {COMPLETE: 0, TOO_SLOW: 0, FAILED: 0, "running": 0, "duplicate": 0, "imported": 0}
    for record in records:
        if record.duplicate_of is not None:
            counts["duplicate"] += 1
        elif record.imported_from is not None:
            counts["imported"] += 1
        elif record.status in counts:
            counts[record.status] += 1
    return counts


def _counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget: complete, too slow, or running in some worker; not re-proposals or imports."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=COUNTED_STATES)
        if "duplicate_of" not in t.user_attrs and IMPORTED_ATTR not in t.user_attrs
    ]


def _counted(study: optuna.Study) -> int:
    return len(_counted_trials(study))


def _place_in_queue(study: optuna.Study, number: int) -> int:
    """How many counted trials come before trial ``number``."""
    return sum(1 for t in _counted_trials(study) if t.number < number)


def _is_duplicate(study: optuna.Study, number: int) -> bool:
    return "duplicate_of" in _frozen(study, number).user_attrs


def _evaluated_candidates(study: optuna.Study) -> int:
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return len({t.user_attrs.get("candidate") for t in finished})


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _sampler_seed(seed: int, study: optuna.Study, multi_worker: bool) -> int:
    """Different on each resume (a fresh RNG would replay the first proposals) and per worker, reproducible alone."""
    import os
    import socket

    parts = [seed, len(study.get_trials(deepcopy=False))]
    if multi_worker:
        parts += [socket.gethostname(), os.getpid()]
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted()
