"""The one owner of what optiseg stores in an Optuna study: every attribute key is named here and nowhere else.

A trial holds one deployment plan and its evaluation, written as typed values
(:class:`~optiseg.plans.DeploymentPlan`, :class:`~optiseg.plans.Evaluation`)
under a schema version; :func:`read_record` turns any stored trial back into a
:class:`TrialRecord`. Studies written by optiseg 0.1 (schema 1: about twenty
loose keys per trial) are read as FP32 plans of their candidate; newer schemas
are refused with a message. Writers go through :class:`TrialWriter` (one per
running trial) and the study-level functions below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import StudyError
from .network import Network
from .plans import DeploymentPlan, Evaluation
from .secrets import mask_credentials

SCHEMA = 2

# Trial attributes (schema 2).
_SCHEMA = "optiseg_schema"
_PLAN = "plan"
_PLAN_KEY = "plan_key"
_NETWORK_KEY = "network_key"
_EVALUATION = "evaluation"
_STATUS = "status"
_ERROR = "error"
_ERROR_RETRYABLE = "error_retryable"
_TIMINGS = "timings"
_ARTIFACTS = "artifacts"
_WORKER = "worker"
_TRAINED = "trained"
_DUPLICATE_OF = "duplicate_of"
_IMPORTED_FROM = "imported_from"
_RETRY_OF = "optiseg_retry_of"
_LEASE_UNTIL = "optiseg_lease_until"
_BASELINE = "baseline"
_SIBLING_OF = "sibling_of"
_RUNG = "optiseg_rung"  # multi-fidelity: the rung (0 = lowest) this trial trains its network to
_PROMOTION_OF = "optiseg_promotion_of"  # the lower rung's trial whose network this trial trains on
_DERIVED_FROM = "optiseg_derived_from"  # a plan made from trained networks of other trials (a cascade): their numbers
# Study attributes.
_SETTINGS = "optiseg_settings"
_SETTINGS_HASH = "optiseg_settings_hash"
_STUDY_SCHEMA = "optiseg_schema"
_REVISION = "optiseg_latency_revision:"  # + plan key: a plan's latency measured again (one key per plan: no lost writes)
_DRIFT = "optiseg_drift:"  # + a time stamp: one drift event

# What became of a trial.
COMPLETE = "complete"  # cost measured and trained: every objective known
PARTIAL = "partial"  # multi-fidelity: trained for a lower rung's epochs, judged on validation IoU; on a front only marked
TOO_SLOW = "too_slow"  # cost measured, over a cost constraint: not trained, quality unknown
FAILED = "failed"  # an error; see `error`
INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or a dead worker; retried on the next run
RUNNING = "running"
WAITING = "waiting"  # queued (the baseline, a grid candidate, a sibling plan, a retry), not started yet
SKIPPED = "skipped"  # the budget: used up, or no room for its training (a promotion, a new network); or stepped aside
STATUSES = (COMPLETE, PARTIAL, TOO_SLOW, FAILED, INTERRUPTED, RUNNING, WAITING, SKIPPED)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as read back: its plan, what it scored, and what became of it."""

    number: int
    status: str
    plan: DeploymentPlan | None = None
    evaluation: Evaluation = field(default_factory=Evaluation)
    values: tuple[float, ...] | None = None
    feasible: bool = False
    violations: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)  # every constraint's value (> 0: violated)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: str | None = None
    error: str | None = None
    error_retryable: bool = False
    trained: bool = False
    retry_of: int | None = None
    duplicate_of: int | None = None
    imported_from: str | None = None
    sibling_of: int | None = None
    rung: int | None = None  # multi-fidelity: the rung the trial trained its network to
    promotion_of: int | None = None  # multi-fidelity: the lower rung's trial it went on from
    derived_from: tuple[int, ...] | None = None  # a derived plan (a cascade): the trials whose networks it deploys
    worker: str | None = None
    seconds: float | None = None
    schema: int = SCHEMA
    label: str | None = None  # the key of a hand-made record without a plan (see make)

    @classmethod
    def make(cls, number: int, status: str, *, model: str | None = None, knobs: Mapping[str, Any] | None = None,
             resolution: str | None = None, in_channels: int = 3, num_classes: int = 1, precision: str = "fp32",
             candidate: str | None = None, figures: Mapping[str, float | None] | None = None,
             latency: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
             **fields: Any) -> TrialRecord:
        """A record built by hand (tests, tools): a plan from ``model``/``knobs``/``resolution``.

        ``iou=``, ``latency_ms=``, ``params=`` ... (any name of :data:`~optiseg.plans.METRICS`) and
        ``figures`` go to the named metrics; ``metrics`` is the training run's scores, ``latency`` the
        device measurement.
        """
        figures = dict(figures or {})
        training = metrics
        for name in list(fields):
            from .plans import METRICS

            if name in METRICS:
                figures[name] = fields.pop(name)
        plan = None
        if model is not None or knobs is not None or resolution is not None:
            from .modes import mode_for

            plain = {k: v for k, v in (knobs or {}).items() if k not in ("resolution", "in_channels")}
            network = Network(model=model or "fastscnn", knobs=tuple(plain.items()),
                              resolution=_resolution_pair(resolution or "64x64"), in_channels=in_channels,
                              num_classes=num_classes)
            plan = mode_for({"precision": precision}).plan(network, {"precision": precision})
        details: dict[str, Any] = {}
        if latency:
            details["latency"] = dict(latency)
        if training:
            details["training"] = dict(training)
        evaluation = Evaluation(metrics={k: v for k, v in figures.items() if v is not None}, details=details)
        return cls(number=number, status=status, plan=plan, evaluation=evaluation, label=candidate, **fields)

    # What the plan deploys, for tables and the report.
    @property
    def network(self) -> Network | None:
        return self.plan.network if self.plan else None

    @property
    def candidate(self) -> str | None:
        """The network's key (its folder below ``candidates/``)."""
        return self.label or (self.plan.network.key if self.plan else None)

    @property
    def plan_key(self) -> str | None:
        if self.label and self.plan is not None and self.plan.mode != "device":
            return f"{self.label}@{self.plan.mode}"
        return self.label or (self.plan.key if self.plan else None)

    @property
    def mode(self) -> str | None:
        return self.plan.mode if self.plan else None

    @property
    def precision(self) -> str | None:
        return self.plan.precision if self.plan else None

    @property
    def model(self) -> str | None:
        return self.plan.network.model if self.plan else None

    @property
    def knobs(self) -> dict[str, Any]:
        return self.plan.network.knob_dict if self.plan else {}

    @property
    def resolution(self) -> str | None:
        return self.plan.network.resolution_text if self.plan else None

    @property
    def in_channels(self) -> int | None:
        return self.plan.network.in_channels if self.plan else None

    # The named metrics most views show.
    def metric(self, name: str) -> float | None:
        value = self.evaluation.get(name)
        if name == "fps" and value is None and self.latency_ms:
            return 1000.0 / self.latency_ms
        return value

    @property
    def iou(self) -> float | None:
        # a partial network's figure counts only where a front takes it in, marked (results.with_partial)
        return self.evaluation.get("iou") if self.status == COMPLETE or (self.status == PARTIAL and self.feasible) else None

    @property
    def latency_ms(self) -> float | None:
        return self.evaluation.get("latency_ms")

    @property
    def latency_p90_ms(self) -> float | None:
        return self.evaluation.get("latency_p90_ms")

    @property
    def params(self) -> int | None:
        value = self.evaluation.get("params")
        return None if value is None else int(value)

    @property
    def macs(self) -> int | None:
        value = self.evaluation.get("macs")
        return None if value is None else int(value)

    @property
    def activation_mb(self) -> float | None:
        return self.evaluation.get("activation_mb")

    @property
    def onnx_mb(self) -> float | None:
        return self.evaluation.get("onnx_mb")

    @property
    def fps(self) -> float | None:
        return 1000.0 / self.latency_ms if self.latency_ms else None

    @property
    def latency(self) -> dict[str, Any]:
        """The device part's latency measurement (``LatencyResult.to_dict``), or {}."""
        return dict(self.evaluation.details.get("latency") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        """The training run's scores (``metrics.json`` without its history), or {}."""
        return dict(self.evaluation.details.get("training") or {})

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: every field, the plan and evaluation as dicts, and the headline figures flat."""
        row = {k: v for k, v in asdict(self).items() if k not in ("plan", "evaluation", "label")}
        row.update({
            "plan": self.plan.as_dict() if self.plan else None,
            "plan_key": self.plan_key,
            "candidate": self.candidate,
            "mode": self.mode,
            "precision": self.precision,
            "model": self.model,
            "knobs": self.knobs,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "metrics": dict(self.evaluation.metrics),
            "per_class_iou": dict(self.evaluation.per_class_iou),
            "operating_points": [p.as_dict() for p in self.evaluation.operating_points],
            "iou": self.iou,
            "latency_ms": self.latency_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "params": self.params,
            "macs": self.macs,
            "activation_mb": self.activation_mb,
            "onnx_mb": self.onnx_mb,
            "fps": self.fps,
        })
        return row


# ---------------------------------------------------------------- reading

def read_record(trial) -> TrialRecord:
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial`` written by any optiseg that this one reads."""
    attrs = trial.user_attrs
    schema = attrs.get(_SCHEMA, 1 if attrs else SCHEMA)
    if schema > SCHEMA:
        raise StudyError(
            f"trial {trial.number} was written by a newer optiseg (record schema {schema}; this one reads up to {SCHEMA})",
            hint="upgrade optiseg (pip install -U optiseg) to read this study",
        )
    if schema == 1:
        return _read_schema_1(trial)
    status = _status(trial)
    plan = DeploymentPlan.from_dict(attrs[_PLAN]) if attrs.get(_PLAN) else None
    evaluation = Evaluation.from_dict(attrs.get(_EVALUATION) or {})
    return _record(trial, status, plan, evaluation, attrs, schema=SCHEMA)


def load_records(study) -> list[TrialRecord]:
    """Every trial of ``study`` as a record, each plan's latest :class:`LatencyRevision` applied."""
    revisions = latency_revisions(study)
    loaded = [read_record(t) for t in study.get_trials(deepcopy=False)]
    return [apply_revision(r, revisions[r.plan_key]) if r.plan_key in revisions else r for r in loaded]


# ---------------------------------------------------------------- latencies measured again

REVISED_METRICS = ("latency_ms", "device_latency_ms")  # what a revision replaces (wholly-on-device plans)


@dataclass(frozen=True)
class LatencyRevision:
    """A plan's latency measured again after its trial finished (Optuna forbids changing a finished trial).

    ``source`` says why: ``confirm`` (interleaved confirmation rounds: ``latency_ms`` is the median of the
    rounds' medians, ``low_ms``..``high_ms`` its confidence interval) or ``drift`` (first measured while the
    device's speed had drifted, measured again once it was back). The trial keeps its first figure; every
    reader (front, report, ``--json``) sees the revised one through :func:`load_records`.
    """

    plan_key: str
    latency_ms: float
    low_ms: float
    high_ms: float
    rounds: tuple[float, ...]
    source: str
    first_ms: float | None = None
    when: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rounds": list(self.rounds)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyRevision:
        return cls(**{**data, "rounds": tuple(float(v) for v in data.get("rounds", ()))})


def write_latency_revision(study, revision: LatencyRevision) -> None:
    study.set_user_attr(_REVISION + revision.plan_key, _json_safe(revision.as_dict()))


def latency_revisions(study) -> dict[str, LatencyRevision]:
    """The latest revision of each revised plan, by plan key."""
    return {
        key[len(_REVISION):]: LatencyRevision.from_dict(value)
        for key, value in study.user_attrs.items() if key.startswith(_REVISION)
    }


def apply_revision(record: TrialRecord, revision: LatencyRevision) -> TrialRecord:
    """``record`` with its revised latency (and the constraints on it judged again); the first figure kept in details."""
    from dataclasses import replace

    if record.evaluation.get("latency_ms") is None:
        return record
    first = record.evaluation.get("latency_ms")
    metrics = {name: revision.latency_ms for name in REVISED_METRICS if record.evaluation.get(name) is not None}
    if record.evaluation.get("fps") is not None and revision.latency_ms > 0:
        metrics["fps"] = 1000.0 / revision.latency_ms
    evaluation = record.evaluation.merged(
        metrics=metrics,
        details={"latency_revision": {**revision.as_dict(), "first_ms": first if revision.first_ms is None else revision.first_ms}},
    )
    violations = dict(record.violations)
    constraints = {}
    for key, violation in record.constraints.items():
        kind, _, metric = key.partition("_")
        if metric in metrics and kind in ("max", "min"):
            limit = record.evaluation.get(metric) - violation if kind == "max" else record.evaluation.get(metric) + violation
            violation = metrics[metric] - limit if kind == "max" else limit - metrics[metric]
        constraints[key] = violation
    violations = {k: v for k, v in constraints.items() if v > 0} if constraints else violations
    feasible = record.status == COMPLETE and not violations
    return replace(record, evaluation=evaluation, violations=violations, feasible=feasible, constraints=constraints)


def record_drift(study, event: Mapping[str, Any]) -> None:
    """Keep one drift event (when, the reference's figure against its first, what was measured again)."""
    import datetime as _dt

    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    study.set_user_attr(_DRIFT + stamp, _json_safe({"when": stamp, **dict(event)}))


def drift_events(study) -> list[dict[str, Any]]:
    return [value for key, value in sorted(study.user_attrs.items()) if key.startswith(_DRIFT)]


def _status(trial) -> str:
    from optuna.trial import TrialState

    stored = trial.user_attrs.get(_STATUS)
    if trial.state == TrialState.COMPLETE or (trial.state == TrialState.FAIL and stored == COMPLETE and _DERIVED_FROM in trial.user_attrs):
        return PARTIAL if stored == PARTIAL else COMPLETE
    if trial.state == TrialState.PRUNED:
        return TOO_SLOW
    if trial.state == TrialState.RUNNING:
        return RUNNING
    if trial.state == TrialState.WAITING:
        return WAITING
    return stored if stored in (SKIPPED, INTERRUPTED) else FAILED


def _record(trial, status: str, plan, evaluation: Evaluation, attrs: Mapping[str, Any], schema: int) -> TrialRecord:
    constraints = constraints_of(trial)
    violations = {k: v for k, v in constraints.items() if v > 0}
    return TrialRecord(
        number=trial.number,
        status=status,
        plan=plan,
        evaluation=evaluation,
        values=tuple(trial.values) if trial.values is not None else None,
        feasible=status == COMPLETE and not violations,
        violations=violations,
        constraints=constraints,
        timings=dict(attrs.get(_TIMINGS) or {}),
        artifacts=attrs.get(_ARTIFACTS),
        error=attrs.get(_ERROR),
        error_retryable=bool(attrs.get(_ERROR_RETRYABLE, False)),
        trained=bool(attrs.get(_TRAINED, False)),
        retry_of=attrs.get(_RETRY_OF),
        duplicate_of=attrs.get(_DUPLICATE_OF),
        imported_from=attrs.get(_IMPORTED_FROM),
        sibling_of=attrs.get(_SIBLING_OF),
        rung=attrs.get(_RUNG),
        promotion_of=attrs.get(_PROMOTION_OF),
        derived_from=tuple(attrs[_DERIVED_FROM]) if attrs.get(_DERIVED_FROM) else None,
        worker=attrs.get(_WORKER),
        seconds=trial.duration.total_seconds() if trial.duration else None,
        schema=schema,
        label=attrs.get(_NETWORK_KEY) if plan is None else None,  # cut off before its plan was written
    )


def _read_schema_1(trial) -> TrialRecord:
    """optiseg 0.1's loose keys, read as the FP32 plan of the candidate."""
    attrs = trial.user_attrs
    status = _status(trial)
    if status == FAILED and attrs.get(_STATUS) == SKIPPED:
        status = SKIPPED
    plan = None
    if attrs.get("model") and attrs.get("resolution"):
        metrics = attrs.get("metrics") or {}
        network = Network.create(
            attrs["model"], attrs.get("knobs") or {}, attrs["resolution"],
            in_channels=int(attrs.get("in_channels") or 3), num_classes=int(metrics.get("num_classes") or 1),
        )
        plan = DeploymentPlan(mode="device", networks=(network,), knobs=(("precision", "fp32"),))
    figures = {k: attrs.get(k) for k in ("params", "macs", "activation_mb", "onnx_mb", "latency_ms")}
    latency = attrs.get("latency") or {}
    figures["latency_p90_ms"] = latency.get("p90_ms")
    figures["device_latency_ms"] = attrs.get("latency_ms")
    training = dict(attrs.get("metrics") or {})
    if status == COMPLETE:
        figures["iou"] = attrs.get("iou")
        figures["miou"] = training.get("test_miou")
    evaluation = Evaluation(
        metrics={k: v for k, v in figures.items() if v is not None},
        details={"latency": latency, "training": training} if training else {"latency": latency},
    )
    record = _record(trial, status, plan, evaluation, attrs, schema=1)
    if plan is None and attrs.get("candidate"):
        from dataclasses import replace

        record = replace(record, label=attrs["candidate"])
    return record


# ---------------------------------------------------------------- per-trial questions the search asks

def plan_key_of(trial) -> str | None:
    attrs = trial.user_attrs
    if _PLAN_KEY in attrs:
        return attrs[_PLAN_KEY]
    if attrs.get("candidate"):  # schema 1: one FP32 plan per candidate, keyed as its record is
        return read_record(trial).plan_key
    return None


def network_key_of(trial) -> str | None:
    return trial.user_attrs.get(_NETWORK_KEY) or trial.user_attrs.get("candidate")


def is_duplicate(trial) -> bool:
    return _DUPLICATE_OF in trial.user_attrs


def is_imported(trial) -> bool:
    return _IMPORTED_FROM in trial.user_attrs


def is_baseline(trial) -> bool:
    return bool(trial.user_attrs.get(_BASELINE))


def is_skipped(trial) -> bool:
    return trial.user_attrs.get(_STATUS) == SKIPPED


def is_retryable_failure(trial) -> bool:
    """A failure caused by the device or the environment: a later run evaluates the plan again."""
    return bool(trial.user_attrs.get(_ERROR_RETRYABLE))


def error_of(trial) -> str | None:
    return trial.user_attrs.get(_ERROR)


def lease_until(trial) -> float | None:
    return trial.user_attrs.get(_LEASE_UNTIL)


def params_of(trial) -> dict[str, Any]:
    """The params a trial has or, queued and not started yet, will have (Optuna keeps those apart)."""
    return dict(trial.system_attrs.get("fixed_params", trial.params))


def retry_attrs(trial) -> dict[str, Any]:
    """User attributes for the enqueued retry of ``trial`` (the rung it was training to, if any, is kept)."""
    rung = rung_of(trial)
    return {_RETRY_OF: trial.number, **({_RUNG: rung} if rung is not None else {})}


def rung_of(trial) -> int | None:
    """The multi-fidelity rung a trial trains to (None: no multi-fidelity, or a new network: the lowest rung)."""
    value = trial.user_attrs.get(_RUNG)
    return None if value is None else int(value)


def promotion_attrs(number: int, rung: int) -> dict[str, Any]:
    """User attributes of the trial queued to train trial ``number``'s network on to ``rung``."""
    return {_RUNG: rung, _PROMOTION_OF: number}


def promotion_of(trial) -> int | None:
    """The lower rung's trial whose network this (queued or running) trial trains on, or None."""
    value = trial.user_attrs.get(_PROMOTION_OF)
    return None if value is None else int(value)


def enqueue_promotion(study, number: int, rung: int) -> None:
    """Queue the trial that trains trial ``number``'s network on to ``rung``, with the same params."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    study.enqueue_trial(params_of(frozen), user_attrs=promotion_attrs(number, rung), skip_if_exists=False)


def promoted_trials(study) -> set[int]:
    """The trials whose network a trial of the next rung was queued for (whatever became of that one)."""
    return {int(t.user_attrs[_PROMOTION_OF]) for t in study.get_trials(deepcopy=False) if _PROMOTION_OF in t.user_attrs}


def baseline_attrs() -> dict[str, Any]:
    return {_BASELINE: True}


def sibling_attrs(number: int) -> dict[str, Any]:
    """User attributes for a plan enqueued because trial ``number`` evaluated the same network."""
    return {_SIBLING_OF: number}


# ---------------------------------------------------------------- writing

class TrialWriter:
    """Writes one running trial's record, piece by piece as the stages finish (so a cut-off trial keeps what it had)."""

    def __init__(self, trial):
        self.trial = trial
        self._evaluation = Evaluation()
        trial.set_user_attr(_SCHEMA, SCHEMA)

    @property
    def evaluation(self) -> Evaluation:
        return self._evaluation

    def start(self, plan: DeploymentPlan, artifacts: str, worker: str) -> None:
        self.trial.set_user_attr(_PLAN, plan.as_dict())
        self.trial.set_user_attr(_PLAN_KEY, plan.key)
        self.trial.set_user_attr(_NETWORK_KEY, plan.network.key)
        self.trial.set_user_attr(_ARTIFACTS, artifacts)
        self.trial.set_user_attr(_WORKER, worker)

    def evaluate(self, evaluation: Evaluation) -> None:
        self._evaluation = evaluation
        self.trial.set_user_attr(_EVALUATION, _json_safe(evaluation.as_dict()))

    def timings(self, timings: Mapping[str, float]) -> None:
        self.trial.set_user_attr(_TIMINGS, dict(timings))

    def status(self, status: str) -> None:
        self.trial.set_user_attr(_STATUS, status)

    def trained(self) -> None:
        self.trial.set_user_attr(_TRAINED, True)

    def rung(self, rung: int) -> None:
        self.trial.set_user_attr(_RUNG, int(rung))

    def constraint(self, name: str, value: float) -> None:
        self.trial.set_constraint(name, float(value))

    def duplicate_of(self, previous) -> None:
        """Copy the figures of ``previous`` (a FrozenTrial of the same plan) instead of evaluating again."""
        self.trial.set_user_attr(_DUPLICATE_OF, previous.number)
        copy_record(previous, self.trial, keep=(_PLAN, _PLAN_KEY, _NETWORK_KEY, _EVALUATION, _STATUS, _ARTIFACTS))
        self.timings({})

    def imported_from(self, source: str) -> None:
        self.trial.set_user_attr(_IMPORTED_FROM, source)

    def artifacts(self, relative: str) -> None:
        self.trial.set_user_attr(_ARTIFACTS, relative)


def add_derived_trial(study, plan: DeploymentPlan, evaluation: Evaluation, *, artifacts: str, worker: str,
                      derived_from: Iterable[int], constraints: Mapping[str, float] = ()) -> int:
    """Store a plan made from networks other trials trained (a cascade's operating point) as a trial; its number.

    It is kept in Optuna's FAIL state, which every sampler ignores: its figures say nothing about any point of the
    search space (it has no params), and a trial without params would empty the GP sampler's search space. Every
    optiseg reader sees it as complete (``derived_from`` set); nothing retries it and it costs no budget.
    """
    import optuna
    from optuna.trial import TrialState

    frozen = optuna.trial.create_trial(state=TrialState.FAIL)
    writer = TrialWriter(frozen)
    writer.start(plan, artifacts, worker)
    writer.evaluate(evaluation)
    for key, violation in dict(constraints).items():
        writer.constraint(key, violation)
    frozen.set_user_attr(_DERIVED_FROM, [int(n) for n in derived_from])
    writer.status(COMPLETE)
    study.add_trial(frozen)
    return max(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.user_attrs.get(_PLAN_KEY) == plan.key)


def is_derived(trial) -> bool:
    return _DERIVED_FROM in trial.user_attrs


def record_failure(trial, message: str, *, retryable: bool) -> None:
    trial.set_user_attr(_ERROR, mask_credentials(message)[:500])
    trial.set_user_attr(_ERROR_RETRYABLE, bool(retryable))
    trial.set_user_attr(_STATUS, FAILED)


def claim_network(trial, plan: DeploymentPlan) -> None:
    """Say at once which network ``trial`` evaluates, so that other workers' budget checks count it."""
    trial.set_user_attr(_NETWORK_KEY, plan.network.key)
    trial.set_user_attr(_PLAN_KEY, plan.key)


def record_skipped(trial, reason: str | None = None) -> None:
    trial.set_user_attr(_STATUS, SKIPPED)
    if reason:
        trial.set_user_attr(_ERROR, reason)


def record_interrupted(trial, reason: str = "interrupted") -> None:
    trial.set_user_attr(_STATUS, INTERRUPTED)
    trial.set_user_attr(_ERROR, reason)


def mark_stale(study, frozen) -> None:
    """Note on a RUNNING trial of a dead worker that it was interrupted (before it is failed and retried)."""
    storage = study._storage
    storage.set_trial_user_attr(frozen._trial_id, _STATUS, INTERRUPTED)
    storage.set_trial_user_attr(frozen._trial_id, _ERROR, "its worker stopped (killed, lost power or network); retried")


def retry_of(trial) -> int | None:
    return trial.user_attrs.get(_RETRY_OF)


def renew_lease(trial, until: float) -> None:
    trial.set_user_attr(_LEASE_UNTIL, until)


_SCHEMA_1_CONSTRAINTS = {"latency_ms": "max_latency_ms", "iou": "min_iou"}


def constraints_of(trial) -> dict[str, float]:
    """A stored trial's constraints under their current names (schema 1 named them by metric only)."""
    if _SCHEMA in trial.user_attrs:
        return dict(trial.constraints)
    return {_SCHEMA_1_CONSTRAINTS.get(k, k): v for k, v in trial.constraints.items()}


def copy_record(source, target, keep: Iterable[str] | None = None) -> None:
    """Copy a stored trial's record attributes and constraints onto a running trial (import, duplicate)."""
    names = tuple(keep) if keep is not None else (
        _SCHEMA, _PLAN, _PLAN_KEY, _NETWORK_KEY, _EVALUATION, _STATUS, _TIMINGS, _WORKER, _TRAINED)
    for name in names:
        if name in source.user_attrs:
            target.set_user_attr(name, source.user_attrs[name])
    for name, value in constraints_of(source).items():
        target.set_constraint(name, value)


def upgrade_to_current(source) -> dict[str, Any]:
    """The schema-2 attributes of a stored trial of any readable schema (to import an old study's trials)."""
    record = read_record(source)
    if record.plan is None:
        return {}
    return {
        _SCHEMA: SCHEMA,
        _PLAN: record.plan.as_dict(),
        _PLAN_KEY: record.plan.key,
        _NETWORK_KEY: record.plan.network.key,
        _EVALUATION: _json_safe(record.evaluation.as_dict()),
        _STATUS: record.status,
        _TIMINGS: record.timings,
        _TRAINED: record.trained or record.status == COMPLETE,
    }


def write_attrs(trial, attrs: Mapping[str, Any]) -> None:
    for name, value in attrs.items():
        trial.set_user_attr(name, value)


# ---------------------------------------------------------------- the study's own record

def study_settings(study) -> dict[str, Any]:
    return dict(study.user_attrs.get(_SETTINGS) or {})


def study_settings_hash(study) -> str | None:
    return study.user_attrs.get(_SETTINGS_HASH)


def study_schema(study) -> int:
    """The record schema of a study (1 for studies written by optiseg 0.1, which did not store one)."""
    return int(study.user_attrs.get(_STUDY_SCHEMA, 1 if _SETTINGS in study.user_attrs else SCHEMA))


def write_study_settings(study, settings: Mapping[str, Any], digest: str) -> None:
    """The schema first and the hash last: another worker that sees the hash sees a complete study."""
    study.set_user_attr(_STUDY_SCHEMA, SCHEMA)
    study.set_user_attr(_SETTINGS, dict(settings))
    study.set_user_attr(_SETTINGS_HASH, digest)


def check_study_schema(study, name: str, *, for_writing: bool) -> None:
    """Refuse a study this optiseg cannot read, or (for a search) one it would mix schemas in."""
    schema = study_schema(study)
    if schema > SCHEMA:
        raise StudyError(
            f"study {name!r} was written by a newer optiseg (record schema {schema}; this one knows {SCHEMA})",
            hint="upgrade optiseg to read or resume it",
        )
    if for_writing and schema < SCHEMA:
        raise StudyError(
            f"study {name!r} was written by an older optiseg (record schema {schema}): `optiseg front`, `report` and "
            "`deploy` read it, but a search cannot add trials of the new schema to it",
            hint="give the study a new `study:` name and set `warm_start:` to the old study folder to reuse its "
            "results, or run with --force to archive it and start anew",
        )


def _resolution_pair(text: str) -> tuple[int, int]:
    from .models import parse_resolution

    return parse_resolution(text)


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
