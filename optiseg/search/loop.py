"""The search: ask, evaluate, tell, until the budget is spent; resumable and shareable by many workers.

Budget: ``n_trials`` counts the distinct networks evaluated (trained, or
measured too slow) or being evaluated, across every worker of the study; each
worker checks its place in the queue after asking, so the global total holds
even when workers race. Every deployment plan of a network that was evaluated
(another precision, ...) is queued as a trial of its own and costs no training
and no budget. A sampler proposing a plan already evaluated gets its figures
again at no cost, and that trial does not count; neither do failed trials. ``timeout`` limits one run of the command. Three failures in a row
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

from .. import records
from ..config import LoadedConfig, check_batch_size
from ..errors import OptisegError, StudyError
from ..layout import StudyLayout
from ..quantize import QuantizationSettings
from ..records import COMPLETE, FAILED, INTERRUPTED, TOO_SLOW, TrialRecord, load_records
from ..results import pareto_front, training_totals, with_partial
from .budget import finish_best, promote_within_budget, promotion_over_budget
from .confirm import confirm_at_end_of_search
from .latency_watch import LatencyWatch
from .lease import LeaseSettings, TrialLease, recover_stale_trials
from .objectives import constraints_from, objectives_from
from .progress import SearchProgress
from .sampler import grid_queue, make_sampler, resolve_sampler_name
from .space import PlanNotApplicable, build_search_space
from .storage import SQLiteWriterLock
from .study import NewFolders, open_study, resolve_storage, study_settings
from .trial import InProgressElsewhere, OverBudget, TooSlow, TrialEnvironment, evaluate, latency_cache_dir
from .warm_start import import_trials, prepare_import

MAX_CONSECUTIVE_FAILURES = 3
MAX_CONSECUTIVE_DUPLICATES = 25
MAX_BUDGET_SKIPS = 10  # new networks in a row too big for the rest of budget.train_compute: the search ends
CLAIM_WAIT_S = 10.0  # how long a budget check waits for an earlier running trial to name its network
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
    confirmation: dict | None = None  # what the end-of-search confirmation did (ConfirmReport.as_dict), if it ran
    partial_on_front: int = 0  # multi-fidelity: partial networks on the front that takes them in (`front --partial`)


def run_search(
    loaded: LoadedConfig,
    *,
    force: bool = False,
    quiet: bool = False,
    progress: SearchProgress | None = None,
    lease: LeaseSettings = LeaseSettings(),
) -> SearchSummary:
    """Run (or resume) the study that ``loaded`` describes until its budget is spent.

    Everything that can fail on bad input (data, devices, the warm-start source)
    is checked before the study is created, and a creation that fails anyway is
    undone: a failed start leaves no study behind.
    """
    from ..data import DatasetCache, load_dataset
    from ..devices import open_pool

    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress view and search.log report every step
    config = loaded.config
    layout = StudyLayout((config.output / loaded.study_name).resolve())
    space = build_search_space(config.model, config.effort, config.search_space, config.resolution, source=str(loaded.path),
                               modes=config.mode)
    objectives = objectives_from(config.objectives)
    constraints = constraints_from(config.constraints)
    storage_spec = resolve_storage(loaded, layout.folder)
    dataset = load_dataset(config.data)  # checks the data first: bad data stops here, before anything is made
    check_batch_size(config.training, len(dataset.train), str(loaded.path))
    settings = study_settings(loaded, space, dataset.fingerprint(), len(dataset.train))
    warm_source = prepare_import(config.warm_start, settings) if config.warm_start is not None else None
    n_trials = config.budget.n_trials
    latency_constrained = any(c.on_cost for c in constraints)
    # A grid when n_trials covers the space; not when training compute limits it (or rungs do): then who knows
    sampling_trials = n_trials if config.budget.train_compute is None and config.fidelity is None else None
    sampler_name = resolve_sampler_name(config.sampler, space, sampling_trials, latency_constrained, storage_spec.shared)

    new_folders = NewFolders.above(layout.folder)  # removed again if the start fails before the study exists
    pool = open_pool(config.device)
    server_pool = open_pool(config.server) if config.server is not None and _uses_server(config) else None
    try:
        for runner in (*pool.runners, *(server_pool.runners if server_pool else ())):
            runner.connect()  # host keys, logins, a missing onnxruntime: reported now, before anything is made
    except BaseException:
        pool.close()
        if server_pool is not None:
            server_pool.close()
        raise
    try:
        progress = progress or SearchProgress(layout.log, quiet=quiet)
        for runner in pool.runners:
            progress.log(f"connected to {runner.label}")
        for runner in server_pool.runners if server_pool else ():
            progress.log(f"connected to {runner.label} (server)")
        lock = SQLiteWriterLock(storage_spec.path) if storage_spec.kind == "sqlite" else contextlib.nullcontext()
        with lock:
            def import_warm_start(study: optuna.Study) -> None:
                if warm_source is not None:
                    imported = import_trials(study, space, layout, warm_source, dataset.num_classes)
                    progress.log(f"warm start: {imported} plans imported from {config.warm_start}")

            try:
                study, _created = open_study(
                    loaded, layout, storage_spec, settings, space, optuna.samplers.RandomSampler(),
                    [o.direction for o in objectives], force=force, on_create=import_warm_start,
                )
            except BaseException:
                new_folders.remove()
                raise
            recover_stale_trials(study, all_running_are_dead=storage_spec.kind == "sqlite", settings=lease)
            retried = requeue_retryable_failures(study)
            if retried:
                progress.log(f"retrying {len(retried)} trial(s) that failed because of the device or the environment: {retried}")
            if sampler_name == "grid":
                _enqueue_untried(study, grid_queue(space))
            study.sampler = make_sampler(
                config.sampler, space, seed=_sampler_seed(config.seed, study, storage_spec.shared),
                n_trials=sampling_trials, latency_constrained=latency_constrained, multi_worker=storage_spec.shared,
            )
            env = TrialEnvironment(
                study=study, layout=layout, space=space, config=config, dataset=dataset,
                cache=DatasetCache(dataset, budget_mb=config.data.cache_mb), pool=pool,
                class_names=list(getattr(dataset, "class_names", []) or []) or None, progress=progress,
                objectives=objectives, constraints=constraints,
                quantization=QuantizationSettings(**config.quantization.model_dump(), seed=config.seed),
                latency_cache=latency_cache_dir(config.output, settings["device"]),
                server_pool=server_pool,
                server_latency_cache=latency_cache_dir(config.output, settings["server"]) if server_pool else None,
            )
            env.latency_watch = LatencyWatch(
                study, config.latency, log=progress.log, reference=lambda: _reference_graph(study, layout),
                cache=env.latency_cache,
            )
            progress.start(loaded.study_name, n_trials, config.budget.timeout, _counted(study))
            previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
            finished_this_run = 0
            interrupted = False
            confirmation = None
            try:
                stop_reason, finished_this_run = _loop(
                    study, env, space, n_trials, config.budget.timeout, lease, progress, grid=sampler_name == "grid"
                )
                if "cascade" in config.mode:
                    _add_cascade_plans(study, env)
                confirmation = confirm_at_end_of_search(  # the front measured again, interleaved (README: "Confirmation rounds")
                    study, layout, pool, objectives, config.confirm, progress, fresh=finished_this_run > 0)
            except (KeyboardInterrupt, Interrupted):
                interrupted = True
                stop_reason = "interrupted"
            finally:
                signal.signal(signal.SIGTERM, previous_handler)
                progress.stop()
            trial_records = load_records(study)
    finally:
        pool.close()
        if server_pool is not None:
            server_pool.close()
    counts = count_statuses(trial_records)
    return SearchSummary(
        study=loaded.study_name, folder=layout.folder, storage=storage_spec.shown, sampler=sampler_name,
        stop_reason=stop_reason, finished_this_run=finished_this_run, counts=counts,
        front=pareto_front(trial_records, objectives), elapsed_s=time.monotonic() - started, interrupted=interrupted,
        confirmation=confirmation.as_dict() if confirmation is not None else None,
        partial_on_front=sum(1 for r in pareto_front(with_partial(trial_records), objectives) if r.status == records.PARTIAL),
    )


def _add_cascade_plans(study: optuna.Study, env: TrialEnvironment) -> None:
    """The cascade of the study's trained pair, its thresholds stored as plans; a failure is logged, the study stands."""
    from .derived import add_cascade_plans

    try:
        add_cascade_plans(study, env)
    except OptisegError as exc:
        env.progress.log(f"cascade: not built ({exc.message}{'; ' + exc.hint if exc.hint else ''})")
    except Exception as exc:  # noqa: BLE001  (a cascade that cannot be built costs its plans, never the study)
        env.progress.log(f"cascade: not built ({type(exc).__name__}: {exc})")


def _uses_server(config) -> bool:
    from ..modes import modes_of_family

    return any(mode.needs_server for family in config.mode for mode in modes_of_family(family))


def _loop(study, env, space, n_trials, timeout_s, lease, progress, grid: bool) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    failures_in_a_row = 0
    steps_aside = 0
    duplicates_in_a_row = 0
    budget_skips = 0
    finished = 0
    num_classes = env.dataset.num_classes
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout reached", finished
        recover_stale_trials(study, settings=lease)
        compute_budget = env.config.budget.train_compute
        if compute_budget is not None and training_totals(load_records(study))["compute_macs"] >= compute_budget:
            # No new network from here; what is queued (promotions, plans of trained networks) still runs, and a
            # study without one whole training trains its best network on, so that it ends with a front.
            if not _waiting(study) and not finish_best(study, env):
                return f"training budget of {compute_budget:.3g} MACs reached", finished
        if not _waiting(study):
            if n_trials is not None and _counted(study) >= n_trials:
                return f"budget of {n_trials} networks reached", finished
            if _evaluated_plans(study) >= space.size:
                return f"all {space.size} plans of the search space evaluated", finished
            if grid:
                return "every plan of the grid was tried (see the failed ones with `optiseg front --all`)", finished

        trial = study.ask()
        over = promotion_over_budget(study, env, trial)
        if over is not None:
            records.record_skipped(trial, over)
            study.tell(trial, state=TrialState.FAIL)
            progress.log(f"trial {trial.number}: {over}")
            continue
        try:
            plan = space.suggest(trial, num_classes)
        except PlanNotApplicable as exc:  # e.g. a split cut after a module this network leaves out
            records.record_skipped(trial, f"not applicable: {exc.message}")
            study.tell(trial, state=TrialState.FAIL)
            duplicates_in_a_row += 1  # as useless as a known plan: a sampler stuck on them has converged
            if duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES:
                return f"the sampler proposed {duplicates_in_a_row} known or inapplicable plans in a row (converged)", finished
            continue
        records.claim_network(trial, plan)
        if n_trials is not None and not _is_free(study, trial.number, plan.network.key) \
                and _networks_before(study, trial.number) >= n_trials:
            records.record_skipped(trial, f"the budget of {n_trials} networks was used up")
            study.tell(trial, state=TrialState.FAIL)
            if _waiting(study):
                continue  # queued plans of networks already evaluated still run (they cost no training)
            return f"budget of {n_trials} networks reached", finished

        try:
            with TrialLease(trial, lease):
                values = evaluate(trial, env, plan)
            study.tell(trial, values)
            failures_in_a_row = steps_aside = budget_skips = 0
            if records.read_record(_frozen(study, trial.number)).status == records.PARTIAL:
                _promote(study, env)  # a lower rung: its siblings wait for the network's whole training
            else:
                _queue_sibling_plans(study, space, trial)
        except TooSlow:
            study.tell(trial, state=TrialState.PRUNED)
            failures_in_a_row = 0
            _queue_sibling_plans(study, space, trial)
        except OverBudget as over:
            records.record_skipped(trial, str(over))
            study.tell(trial, state=TrialState.FAIL)
            progress.log(f"trial {trial.number} ({plan.network.describe()}) {over}")
            if promote_within_budget(study, env):
                budget_skips = 0
            else:
                budget_skips += 1
                if budget_skips >= MAX_BUDGET_SKIPS and not _waiting(study):
                    return (f"{budget_skips} new networks in a row would not fit in what is left of the training budget, "
                            "and no partial network's next rung does"), finished
            continue
        except InProgressElsewhere as busy:
            records.record_skipped(trial, f"stepped aside: trial {busy.number} is evaluating the same network")
            study.tell(trial, state=TrialState.FAIL)
            progress.log(f"trial {trial.number} stepped aside: trial {busy.number} is evaluating the same network")
            steps_aside += 1
            time.sleep(min(30.0, 0.5 * 2**steps_aside))
            continue
        except (KeyboardInterrupt, Interrupted):
            records.record_interrupted(trial)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs=records.retry_attrs(trial), skip_if_exists=False)
            progress.log(f"trial {trial.number} interrupted; it will resume from its last checkpoint on the next run")
            raise
        except Exception as exc:  # a failing trial fails that trial, never the study
            failures_in_a_row += 1
            _record_failure(trial, exc, env)
            study.tell(trial, state=TrialState.FAIL)
        finished += 1
        frozen = _frozen(study, trial.number)
        duplicates_in_a_row = duplicates_in_a_row + 1 if records.is_duplicate(frozen) else 0
        if duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES:
            return f"the sampler proposed {duplicates_in_a_row} known plans in a row (converged)", finished
        trial_records = load_records(study)
        progress.trial_finished(records.read_record(frozen), pareto_front(trial_records, env.objectives), count_statuses(trial_records))
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            last = records.error_of(frozen) or "unknown error"
            raise StudyError(
                f"{MAX_CONSECUTIVE_FAILURES} trials failed in a row; the last one: {last}",
                hint=f"the study is intact; see {env.layout.log} and the trial logs, fix the cause and run the same command to resume",
            )


def _queue_sibling_plans(study: optuna.Study, space, trial: optuna.Trial) -> None:
    """Queue every other deployment plan of the trial's network: they cost no training, and each is a point of its own."""
    frozen = _frozen(study, trial.number)
    if records.is_duplicate(frozen):
        return
    for params in space.sibling_params(frozen.params):
        study.enqueue_trial(params, user_attrs=records.sibling_attrs(trial.number), skip_if_exists=True)


def _promote(study: optuna.Study, env) -> None:
    """Queue a trial of the next rung for each network that successive halving sends on (see fidelity.py)."""
    from .fidelity import to_promote

    fidelity = env.config.fidelity
    rungs = fidelity.rungs(env.config.training.epochs)
    trial_records = [r for r in load_records(study) if r.rung is not None and r.duplicate_of is None
                     and r.status in (COMPLETE, records.PARTIAL)]
    promoted = records.promoted_trials(study)
    pairs = [(o.metric, o.direction) for o in env.objectives]
    for rung in range(len(rungs) - 1):
        for record in to_promote([r for r in trial_records if r.rung == rung], promoted, fidelity.eta, pairs):
            records.enqueue_promotion(study, record.number, rung + 1)
            env.progress.log(f"trial {record.number} ({record.plan_key}) goes on to rung {rung + 2} of {len(rungs)}: "
                             f"{rungs[rung + 1]} epochs")


def _enqueue_untried(study: optuna.Study, queue) -> None:
    """Enqueue each params dict unless a trial already has it (a trial skipped for the budget does not count)."""
    import json

    def key(params) -> str:
        return json.dumps(params, sort_keys=True, default=str)

    tried = {key(records.params_of(t)) for t in study.get_trials(deepcopy=False)
             if not (t.state == TrialState.FAIL and records.is_skipped(t))}
    for params in queue:
        if key(params) not in tried:
            study.enqueue_trial(params, skip_if_exists=False)
            tried.add(key(params))


def requeue_retryable_failures(study: optuna.Study) -> list[int]:
    """Queue again every trial that failed because of the device or the environment and was not retried yet.

    A failure of the plan itself (it cannot be built, exported or quantized, or
    training diverged) is final: the same plan would fail the same way.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {records.retry_of(t) for t in trials}
    done = {records.plan_key_of(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or not records.is_retryable_failure(trial) or trial.number in retried:
            continue
        if records.plan_key_of(trial) in done:
            continue
        study.enqueue_trial(trial.params, user_attrs=records.retry_attrs(trial), skip_if_exists=False)
        done.add(records.plan_key_of(trial))
        queued.append(trial.number)
    return queued


def _record_failure(trial: optuna.Trial, exc: Exception, env: TrialEnvironment) -> None:
    message = str(exc).splitlines()[0] if isinstance(exc, OptisegError) else f"{type(exc).__name__}: {exc}"
    records.record_failure(trial, message, retryable=is_retryable(exc))
    env.layout.trials.mkdir(parents=True, exist_ok=True)
    env.layout.trial_error_log(trial.number).write_text("".join(traceback.format_exception(exc)), encoding="utf-8")


def is_retryable(exc: BaseException) -> bool:
    """Whether a failure comes from the device or the environment (retried on the next run) rather than the plan."""
    from ..errors import DeviceError

    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, (DeviceError, OSError, MemoryError))


def count_statuses(trial_records: list[TrialRecord]) -> dict[str, int]:
    """Plans trained / too slow, failed, interrupted, running and skipped trials, re-proposals of known plans, imports."""
    counts = {COMPLETE: 0, records.PARTIAL: 0, TOO_SLOW: 0, FAILED: 0, INTERRUPTED: 0, "running": 0, "skipped": 0,
              "duplicate": 0, "imported": 0}
    for record in trial_records:
        if record.duplicate_of is not None:
            counts["duplicate"] += 1
        elif record.imported_from is not None:
            counts["imported"] += 1
        elif record.status in counts:
            counts[record.status] += 1
    counts["networks_trained"] = len({r.candidate for r in trial_records if r.status == COMPLETE and r.imported_from is None})
    totals = training_totals(trial_records)
    counts["training_compute_macs"], counts["training_seconds"] = totals["compute_macs"], round(totals["seconds"], 1)
    return counts


def _counted_networks(study: optuna.Study, before: int | None = None) -> set[str]:
    """Networks that count against the budget: evaluated (trained or too slow) or being evaluated; not imports or re-proposals."""
    return {
        records.network_key_of(t)
        for t in study.get_trials(deepcopy=False, states=COUNTED_STATES)
        if (before is None or t.number < before) and not records.is_duplicate(t) and not records.is_imported(t)
        and records.network_key_of(t) is not None
    }


def _counted(study: optuna.Study) -> int:
    return len(_counted_networks(study))


def _networks_before(study: optuna.Study, number: int) -> int:
    """How many counted networks come before trial ``number``.

    Another worker's earlier trial may have been asked but not yet have said its network: wait for it
    (briefly; a worker killed in between leaves a trial that never will), so that two workers asking at
    the same moment cannot both take the budget's last place.
    """
    deadline = time.monotonic() + CLAIM_WAIT_S
    while time.monotonic() < deadline and any(
        t.number < number and records.network_key_of(t) is None
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ):
        time.sleep(0.2)
    return len(_counted_networks(study, before=number))


def _is_free(study: optuna.Study, number: int, network_key: str) -> bool:
    """The network of trial ``number`` was already evaluated by an earlier trial: this plan costs no training."""
    return network_key in _counted_networks(study, before=number) or any(
        records.network_key_of(t) == network_key and records.is_imported(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )


def _reference_graph(study: optuna.Study, layout) -> tuple[Path, Path] | None:
    """The drift reference: the baseline network's untrained graph and its first latency file, once they exist."""
    for trial in study.get_trials(deepcopy=False):
        key = records.network_key_of(trial) if records.is_baseline(trial) else None
        if key is not None:
            folder = layout.network(key)
            return (folder.untrained_onnx, folder.latency) if folder.untrained_onnx.is_file() else None
    return None


def _evaluated_plans(study: optuna.Study) -> int:
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return len({records.plan_key_of(t) for t in finished})


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
