"""One trial, orchestrated: suggest -> cost -> gate on constraints -> train -> quality -> record.

The sampler's params name a :class:`~optiseg.plans.DeploymentPlan` (a
network and its deployment knobs); the plan's mode (:mod:`optiseg.modes`)
measures its cost on the untrained network, and only a plan that can meet the
cost constraints gets its network trained. A network is trained once, into
its own folder, whatever the plans that deploy it: a plan of an already
trained network (another precision, later a cut point or a threshold) costs
no training. Everything a stage produces is written to the trial's record and
the network's folder as soon as it exists, so a trial cut off at any point
loses nothing that was finished: a retried trial reuses the ONNX files and
latencies and resumes training from its last epoch.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .._atomic import write_json_atomic
from ..config import StudyConfig
from ..errors import StudyError
from ..layout import NetworkFolder, StudyLayout
from ..modes import ModeContext, get_mode
from ..plans import DeploymentPlan, Evaluation
from ..quantize import QuantizationSettings
from .. import records
from ..records import COMPLETE, TOO_SLOW, TrialWriter, network_key_of, plan_key_of
from .budget import new_network_over_budget
from .objectives import Constraint, Objective
from .space import SearchSpace


class TooSlow(Exception):
    """The plan's cost violates a constraint (e.g. ``max_latency_ms``): its network is not trained for it."""


class OverBudget(Exception):
    """A new network whose whole training would take the study past ``budget.train_compute`` (see budget.py): not trained."""


class InProgressElsewhere(Exception):
    """Another worker is evaluating the same network right now; this trial steps aside."""

    def __init__(self, number: int):
        super().__init__(f"trial {number} is evaluating the same network")
        self.number = number


@dataclass
class TrialEnvironment:
    """What every trial of one search process shares."""

    study: optuna.Study
    layout: StudyLayout
    space: SearchSpace
    config: StudyConfig
    dataset: Any
    cache: Any
    pool: Any
    class_names: list[str] | None
    progress: Any  # SearchProgress
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    latency_cache: Path | None = None  # shared by the studies of one output folder; see latency_cache_dir
    latency_watch: Any = None  # LatencyWatch: checks every fresh measurement (see latency_watch.py)
    server_pool: Any = None  # where the server's part of a plan is timed (split, cascade); None without `server:`
    server_latency_cache: Path | None = None

    @property
    def worker(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"


def evaluate(trial: optuna.Trial, env: TrialEnvironment, plan: DeploymentPlan) -> tuple[float, ...]:
    """Run ``trial`` (whose params describe ``plan``) to the end. Returns the objective values; raises :class:`TooSlow`."""
    network_folder = env.layout.network(plan.network.key)
    network_folder.path.mkdir(parents=True, exist_ok=True)
    _link_trial(env.layout, trial.number, network_folder.path)
    writer = TrialWriter(trial)
    writer.start(plan, env.layout.relative(network_folder.path), env.worker)
    env.progress.trial_started(trial.number, plan)

    rungs = env.config.fidelity.rungs(env.config.training.epochs) if env.config.fidelity is not None else None
    rung = None
    if rungs is not None and len(rungs) > 1:
        rung = records.rung_of(trial)
        rung = 0 if rung is None else min(rung, len(rungs) - 1)
        writer.rung(rung)
    previous = _finished_trial_of(env.study, plan.key, exclude=trial.number, rung=rung, last_rung=len(rungs or ()) - 1)
    if previous is not None:
        env.progress.stage(f"same plan as trial {previous.number}: reusing its results")
        writer.duplicate_of(previous)
        if previous.state == TrialState.PRUNED:
            raise TooSlow(f"same plan as trial {previous.number}, which was too slow")
        return tuple(float(v) for v in previous.values)
    running = _running_trial_of(env.study, plan.network.key, exclude=trial.number)
    if running is not None:
        raise InProgressElsewhere(running)

    mode = get_mode(plan.mode)
    context = ModeContext(
        network_folder=network_folder,
        measure=lambda onnx, local, shared, codec=None: _measure(
            env, onnx, local, shared, plan, trial.number, codec=codec, watched=mode.latency_is_one_model,
            before_measuring=lambda: _gate_on_prediction(env, plan, mode, writer)),
        measure_server=None if env.server_pool is None else lambda onnx, local, shared, codec=None: _measure(
            env, onnx, local, shared, plan, trial.number, codec=codec, watched=False, on_server=True),
        link=env.config.link, device_label=env.config.device.label,
        server_label=env.config.server.label if env.config.server is not None else "server",
        dataset=env.dataset, cache=env.cache, class_names=env.class_names, quantization=env.quantization,
        stage=env.progress.stage,
    )
    cost = mode.cost(plan, context)
    writer.evaluate(cost)
    writer.timings(context.timings)

    # Optuna keeps the first value a trial sets for a constraint (later ones are ignored with a warning), so each
    # is written once: when the trial ends, from its final figures; one not known by then (say, min_iou of a
    # network that is not trained) as 0, not violated.
    violated, settled = [], {}
    for constraint in env.constraints:
        value = cost.get(constraint.metric)
        if value is not None:
            settled[constraint.key] = constraint.violation(value)
            if settled[constraint.key] > 0:
                violated.append(constraint.describe(value))
    if violated:
        _write_constraints(writer, env.constraints, settled)
        writer.status(TOO_SLOW)
        env.progress.stage(f"over a constraint ({'; '.join(violated)}): not trained")
        raise TooSlow("; ".join(violated))

    from ..training import CHECKPOINT

    if records.promotion_of(trial) is None and not (network_folder.train / CHECKPOINT).is_file():  # a new network
        over = new_network_over_budget(env.study, env, plan.network, cost.get("macs"))
        if over is not None:
            env.progress.stage(over)
            raise OverBudget(over)

    if rung is not None and rung < len(rungs) - 1:
        partial = _train_to_rung(plan, env, network_folder, context, writer, cost, rung, rungs)
        if partial is not None:
            _write_constraints(writer, env.constraints, settled)
            return partial
    trained, did_train = _train(plan, env, network_folder, context)
    if did_train:
        writer.trained()
    quality = mode.quality(plan, trained, context, cost)
    quality = quality.merged(metrics=training_cost(trained.metrics, len(env.dataset.split("train")), cost.get("macs")),
                             details={**({"fidelity": {"rung": rung, "rungs": list(rungs)}} if rung is not None else {}),
                                      **({"initialized_from": trained.metrics["initialized_from"]}
                                         if trained.metrics.get("initialized_from") else {})})
    writer.evaluate(quality)
    writer.timings(context.timings)
    final = {}
    for constraint in env.constraints:
        value = quality.get(constraint.metric)
        if value is None:
            raise StudyError(f"plan {plan.key} ({plan.mode} mode) records no {constraint.metric!r}, which constraint "
                             f"{constraint.key} needs", hint="remove the constraint, or the mode from `mode:`")
        final[constraint.key] = constraint.violation(value)
    _write_constraints(writer, env.constraints, final)
    writer.status(COMPLETE)
    return objective_values(quality, env.objectives, plan)


def _write_constraints(writer: TrialWriter, constraints: tuple[Constraint, ...], values: dict[str, float]) -> None:
    for constraint in constraints:
        writer.constraint(constraint.key, values.get(constraint.key, 0.0))


def _gate_on_prediction(env: TrialEnvironment, plan: DeploymentPlan, mode, writer: TrialWriter) -> None:
    """Record ``plan`` as too slow from the latency model alone, if the ``latency:`` settings allow it and
    the model is sure (its optimistic bound over ``max_latency_ms`` by the margin). No device time is spent;
    the record says the latency was predicted, and holds no ``latency_ms``: the front never shows it.
    Called only when the plan's graph is about to be measured (a figure already known is never predicted)."""
    watch = env.latency_watch
    limit = next((c for c in env.constraints if c.metric == "latency_ms" and c.bound == "max"), None)
    if watch is None or limit is None or not getattr(mode, "latency_is_one_model", False):
        return
    found = watch.predicted_too_slow(plan, limit.value)
    if found is None:
        return
    prediction, features = found
    writer.evaluate(Evaluation(
        metrics={"params": features.params, "macs": features.macs, "activation_mb": round(features.activation_mb, 3)},
        details={"latency_predicted": prediction.as_dict()},
    ))
    writer.constraint(limit.key, limit.violation(watch.optimistic_ms(plan)))  # the bound the decision used
    writer.status(TOO_SLOW)
    reason = (f"predicted {prediction.median_ms:.4g} ms (at least {prediction.low_ms:.4g}) > {limit.key} {limit.value:g}: "
              "not measured, not trained")
    env.progress.stage(reason)
    raise TooSlow(reason)


def _train_to_rung(plan, env, folder, context, writer, cost, rung: int, rungs) -> tuple[float, ...] | None:
    """Train the plan's network on to the rung's epochs (resuming from its checkpoint) and record it as partial:
    its best validation IoU so far stands for the test IoU in the sampler's objectives; the front proper ignores it.
    None when the training finished whole before the rung (early stopping): then it is scored as a full one."""
    import time

    from ..records import PARTIAL
    from ..training import METRICS, train_network
    from .fidelity import RungReached, StopAtEpoch, low_fidelity_value, partial_scores

    epochs = rungs[rung]
    env.progress.stage(f"training to rung {rung + 1} of {len(rungs)}: {epochs} of {rungs[-1]} epochs")
    began = time.perf_counter()
    try:
        train_network(plan.network, dataset=env.dataset, training=env.config.training, run_dir=folder.train, cache=env.cache,
                      reporter=StopAtEpoch(env.progress.training_reporter(), epochs), export_onnx=True,
                      initial_weights=_starting_weights(plan, env, folder))
    except RungReached:
        pass
    context.timings["train_s"] = round(context.timings.get("train_s", 0.0) + time.perf_counter() - began, 3)
    writer.trained()
    if (folder.train / METRICS).is_file():  # the whole training ended by the rung (early stopping): a full result
        return None
    scores = partial_scores(folder.train)
    evaluation = cost.merged(
        metrics={"val_iou": scores["val_iou"], **training_cost(scores, len(env.dataset.split("train")), cost.get("macs"))},
        details={"fidelity": {"rung": rung, "rungs": list(rungs), "epochs": scores["epochs_run"], "of": rungs[-1],
                              "best_epoch": scores["best_epoch"], "val_miou": scores["val_miou"]},
                 **({"initialized_from": scores["initialized_from"]} if scores.get("initialized_from") else {})},
    )
    if plan.mode == "device":
        evaluation = _scored_as_it_stands(plan, env, folder, evaluation, scores["epochs_run"])
    writer.evaluate(evaluation)
    writer.timings(context.timings)
    writer.status(PARTIAL)
    from ..records import TrialRecord

    record = TrialRecord(number=-1, status=PARTIAL, plan=plan, evaluation=evaluation)
    values = tuple(low_fidelity_value(o.metric, record) for o in env.objectives)
    if any(v is None for v in values):
        raise ValueError(f"plan {plan.key} has no validation IoU after {scores['epochs_run']} epochs")
    return tuple(float(v) for v in values)


def _scored_as_it_stands(plan, env, folder: NetworkFolder, evaluation: Evaluation, epochs: int) -> Evaluation:
    """A partial network as it stands after ``epochs``: its best weights so far scored on the test split and
    exported (``train/model-<epochs>-epochs.onnx``), so that it can stand on a front marked partial
    (``optiseg front --partial``). Its constraints are judged on these figures here, for that front only:
    the sampler and the promotions go on judging it on its validation IoU."""
    from ..training import score_best_so_far

    env.progress.stage(f"scoring the network after {epochs} epoch{'' if epochs == 1 else 's'} on the test split")
    onnx = folder.rung_onnx(epochs)
    scores = score_best_so_far(plan.network, dataset=env.dataset, training=env.config.training, run_dir=folder.train,
                               onnx_path=onnx, cache=env.cache)
    scored = evaluation.merged(
        metrics={"iou": scores.get("test_iou"), "miou": scores.get("test_miou")},
        per_class_iou={name: value for name, value in (scores.get("test_class_iou") or {}).items() if value is not None},
    )
    judged = {}
    for constraint in env.constraints:
        value = scored.get(constraint.metric)
        judged[constraint.key] = None if value is None else constraint.violation(value)
    fidelity = {**evaluation.details["fidelity"], "onnx": str(onnx.relative_to(folder.path)),
                "test_best_epoch": scores["best_epoch"], "constraints": judged}
    return scored.merged(details={"fidelity": fidelity, "iou_source": "PyTorch network on the test split, best weights so far"})


def training_cost(metrics: dict[str, Any], train_images: int, macs: float | None) -> dict[str, float | None]:
    """The network's training compute (epochs run x training images x forward MACs per image) and wall seconds."""
    epochs = metrics.get("epochs_run")
    compute = float(epochs) * train_images * float(macs) if epochs is not None and macs else None
    return {"train_compute": compute, "train_s": metrics.get("train_seconds")}


def objective_values(evaluation: Evaluation, objectives: tuple[Objective, ...], plan: DeploymentPlan) -> tuple[float, ...]:
    values = []
    for objective in objectives:
        value = evaluation.get(objective.metric)
        if value is None:
            raise ValueError(f"plan {plan.key} recorded no {objective.metric!r}, which is an objective")
        values.append(float(value))
    return tuple(values)


def _train(plan: DeploymentPlan, env: TrialEnvironment, folder: NetworkFolder, context: ModeContext):
    """Train the plan's network into its folder (once per network; a finished run is returned as it is)."""
    from ..training import METRICS, train_network

    did_train = not (folder.train / METRICS).is_file()
    start = context.timings.get("train_s", 0.0)
    import time

    began = time.perf_counter()
    env.progress.stage("training" if did_train else "network already trained")
    result = train_network(
        plan.network, dataset=env.dataset, training=env.config.training, run_dir=folder.train,
        cache=env.cache, reporter=env.progress.training_reporter(), export_onnx=True,
        initial_weights=_starting_weights(plan, env, folder) if did_train else None,
    )
    context.timings["train_s"] = round(start + time.perf_counter() - began, 3)
    return result, did_train


def _starting_weights(plan: DeploymentPlan, env: TrialEnvironment, folder: NetworkFolder):
    """With ``inherit_weights``, the weights a new training starts from (see inheritance.py); None otherwise."""
    from ..training import CHECKPOINT
    from .inheritance import initial_weights

    if not env.config.inherit_weights or (folder.train / CHECKPOINT).is_file():
        return None
    chosen = initial_weights(records.load_records(env.study), env.layout, plan.network)
    if chosen is not None:
        env.progress.stage(f"starting from the weights of {chosen.source}")
    return chosen


def _measure(env: TrialEnvironment, onnx_path: Path, local_file: Path, shared_name: str | None,
             plan: DeploymentPlan, trial_number: int, before_measuring=lambda: None, *, codec=None,
             watched: bool = True, on_server: bool = False) -> dict[str, Any]:
    """The latency of ``onnx_path`` on the device (``on_server``: the server): from ``local_file``, the shared
    cache, or measured now (and kept in both).

    A fresh measurement of a one-graph plan (``watched``) goes through the latency watch (model check,
    drift); its prediction is returned with the figure (``prediction``) but not kept in the files, which
    hold measurements only. ``codec`` (a CodecStep) times the link's encoding or decoding with each run."""
    from ..modes._common import read_json

    cache = env.server_latency_cache if on_server else env.latency_cache
    shared = cache / f"{shared_name}.json" if cache and shared_name else None
    latency = read_json(local_file) or (read_json(shared) if shared else None)
    if latency is not None:
        latency.pop("identity", None)  # the cache's note of which plan it was, for latency models
    prediction = None
    if latency is None:
        before_measuring()
        with _lend(env.server_pool if on_server else env.pool, env.progress) as runner:
            env.progress.stage(f"measuring latency on {runner.device_key}{' (server)' if on_server else ''}")
            if env.latency_watch is None or not watched or codec is not None:
                latency = runner.measure(onnx_path, codec).to_dict() if codec is not None else runner.measure(onnx_path).to_dict()
            else:
                files = (local_file,) + ((shared,) if shared is not None else ())
                latency, prediction = env.latency_watch.measure(runner, plan, trial_number, onnx_path, files)
        if shared is not None:
            from .latency_watch import cache_identity

            shared.parent.mkdir(parents=True, exist_ok=True)
            keep = {**latency, "identity": cache_identity(plan)} if watched and codec is None and not on_server else latency
            write_json_atomic(shared, keep)
    else:
        env.progress.stage(f"latency known: {float(latency['median_ms']):.2f} ms")
    if not local_file.exists():
        local_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(local_file, latency)
    return latency if prediction is None else {**latency, "prediction": prediction.as_dict()}


@contextlib.contextmanager
def _lend(pool, progress):
    """A runner of ``pool``; while another process holds every device, the progress says so instead of hanging silently."""
    from ..errors import DeviceError

    with contextlib.ExitStack() as stack:
        try:
            runner = stack.enter_context(pool.acquire(timeout=1.0))
        except DeviceError:  # from the claim only: nothing was lent
            progress.stage(f"waiting for {pool.label}: another optiseg process is measuring on it")
            runner = stack.enter_context(pool.acquire())
        yield runner


def _finished_trial_of(study: optuna.Study, plan_key: str, exclude: int, rung: int | None = None,
                       last_rung: int = 0) -> optuna.trial.FrozenTrial | None:
    """A finished trial of the same plan that got at least as far: too slow, fully trained, or (multi-fidelity)
    trained to ``rung`` or a higher one."""
    from ..records import PARTIAL, is_duplicate, read_record

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number == exclude or plan_key_of(other) != plan_key or is_duplicate(other):
            continue
        if rung is not None and other.state == TrialState.COMPLETE and read_record(other).status == PARTIAL:
            if (records.rung_of(other) or 0) < rung:
                continue  # trained to a lower rung: this trial goes on from there
        return other
    return None


def _running_trial_of(study: optuna.Study, network_key: str, exclude: int) -> int | None:
    """The lowest-numbered other RUNNING trial on this network (the lower number keeps it, so exactly one does)."""
    numbers = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.number != exclude and network_key_of(t) == network_key
    ]
    return min(numbers) if numbers and min(numbers) < exclude else None


def latency_cache_dir(output: Path, device_settings: dict[str, Any]) -> Path:
    """Where latencies measured on one device with one timing protocol are kept for every study in ``output``.

    A latency depends on the exported graph and the device only, not on training; the
    folder is keyed by the device's kind, name and timing protocol (and the host name
    for a local device, so machines sharing an output folder keep theirs apart).
    """
    import hashlib
    import json

    from ..layout import latency_cache_folder

    identity = dict(device_settings)
    if identity.get("kind") == "local":
        identity["host"] = socket.gethostname()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return latency_cache_folder(output, digest)


def _link_trial(layout: StudyLayout, number: int, folder: Path) -> None:
    layout.trials.mkdir(parents=True, exist_ok=True)
    link = layout.trial_link(number)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(os.path.relpath(folder, layout.trials))
