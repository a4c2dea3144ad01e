"""Latency you can trust: every fresh measurement of a search goes through here.

Three checks (settings: the ``latency:`` section, :class:`~optiseg.config.latency.LatencyConfig`):

* **The latency model** (:mod:`optiseg.latency_model`, one per deployment mode, learnt from the
  study's measurements and updated as they arrive) predicts each plan before it is measured. A
  measurement outside its 99 % interval is measured twice more and the median of the three is
  believed. Optionally, a plan predicted too slow by a safe margin is recorded as too slow
  without occupying the device (:meth:`LatencyWatch.predicted_too_slow`).
* **Drift.** After every ``drift_every`` fresh measurements on a device (and at once after a
  disagreement), the device's reference, the baseline's untrained graph, is measured again and
  compared with its level so far. A change beyond ``drift_tolerance`` is a drift: optiseg
  warns, records the event in the study, waits (measuring the reference with backoff, up to
  ``drift_wait_s``) for the device to come back, then measures again everything measured on it
  since the last good check. A plan whose trial has finished gets a
  :class:`~optiseg.records.LatencyRevision`; the running one just gets the new figure.
* **Throttling.** When the last measurement on a device saw it throttling right now (Raspberry
  Pi firmware flags) or at 80 °C or more, the next measurement first waits for it to cool down
  (``runner.check()`` polled with backoff, up to ``drift_wait_s``). The load and throttling state
  read while waiting for a drift to end are kept with the drift event. (The load average is not a
  reason to wait: on this machine it counts optiseg's own training.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import records
from .._atomic import write_json_atomic
from ..config.latency import LatencyConfig
from ..latency_model import LatencyFeatures, LatencyModel, Prediction, fit_from_records
from ..network import Network
from ..plans import DeploymentPlan

REPEATS_ON_DISAGREEMENT = 2
DISAGREEMENT_COVERAGE = 0.99
FIRST_WAIT_S = 5.0


@dataclass
class _Measured:
    """A fresh measurement since the device's last good drift check."""

    plan_key: str
    trial_number: int
    onnx_path: Path
    files: tuple[Path, ...]  # where its figure is kept (the plan's latency file, the shared cache)
    latency: dict[str, Any]
    mode: str = ""
    features: LatencyFeatures | None = None


@dataclass
class _DeviceState:
    level_ms: list[float] = field(default_factory=list)  # the reference's figures in good checks
    since_check: list[_Measured] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # as the last measurement on the device read them


class LatencyWatch:
    """One per search process; see the module's docstring."""

    def __init__(self, study, settings: LatencyConfig, log: Callable[[str], None],
                 reference: Callable[[], tuple[Path, Path] | None], cache: Path | None = None):
        self.study = study
        self.cache = cache  # the device's latency cache: what earlier studies on it measured
        self.settings = settings
        self._log = log
        self._reference = reference  # (the baseline's untrained ONNX graph, its first latency file), once they exist
        self._models: dict[str, LatencyModel] = {}
        self._devices: dict[str, _DeviceState] = {}
        self.repeats = 0
        self.drifts = 0

    # ------------------------------------------------------------------ the model

    def model(self, mode: str) -> LatencyModel:
        """The latency model of ``mode``'s graphs on this study's device, learnt on first use from the study's
        measurements and from what earlier studies measured on the same device (its latency cache)."""
        if mode not in self._models:
            study_records = records.load_records(self.study)
            model = fit_from_records(study_records, mode=mode)
            known = {r.candidate for r in study_records if r.mode == mode}
            earlier = cached_measurements(self.cache, mode, exclude=known) if self.cache is not None else []
            model.extend(earlier, track=False)
            if earlier:
                self._log(f"latency model ({mode}): {model.samples - len(earlier)} measurement(s) of this study and "
                          f"{len(earlier)} of earlier studies on the same device")
            self._models[mode] = model
        return self._models[mode]

    def predict(self, plan: DeploymentPlan, features: LatencyFeatures | None = None) -> Prediction | None:
        model = self.model(plan.mode)
        if model.samples == 0:
            return None
        return model.predict(features or features_of(plan.network))

    def predicted_too_slow(self, plan: DeploymentPlan, limit_ms: float | None) -> tuple[Prediction, LatencyFeatures] | None:
        """The prediction that makes ``plan`` surely slower than ``limit_ms``, if the settings allow believing it."""
        if not self.settings.predict_too_slow or limit_ms is None:
            return None
        model = self.model(plan.mode)
        if model.samples < self.settings.predict_after:
            return None
        features = features_of(plan.network)
        if model.surely_slower_than(features, limit_ms, margin=self.settings.predict_margin):
            return model.predict(features, coverage=DISAGREEMENT_COVERAGE), features
        return None

    def optimistic_ms(self, plan: DeploymentPlan) -> float:
        """The optimistic bound :meth:`predicted_too_slow` judges by (the prediction's 1 % quantile)."""
        return self.model(plan.mode).quantile(features_of(plan.network), 1.0 - DISAGREEMENT_COVERAGE)

    # ------------------------------------------------------------------ measuring

    def measure(self, runner, plan: DeploymentPlan, trial_number: int, onnx_path: Path,
                files: tuple[Path, ...]) -> tuple[dict[str, Any], Prediction | None]:
        """Measure ``onnx_path`` on ``runner``: (the figure to believe, already checked; the model's prediction).

        ``files`` are where the figure is kept once returned; a drift check that measures this plan's
        earlier companions again rewrites theirs."""
        try:
            features = features_of(plan.network)
            model = self.model(plan.mode)
            prediction = model.predict(features, coverage=DISAGREEMENT_COVERAGE) if model.samples else None
        except Exception as exc:  # noqa: BLE001 - the model is a check; a measurement never fails for it
            self._log(f"no latency prediction for {plan.key} ({type(exc).__name__}: {exc}); measuring unchecked")
            features = model = prediction = None
        state = self._devices.setdefault(runner.device_key, _DeviceState())
        if throttling(state.facts):
            self._wait_while_throttled(runner, state)
        latency = runner.measure(onnx_path).to_dict()
        disagreed = (
            self.settings.repeat_on_disagreement and prediction is not None
            and model.disagrees(features, float(latency["median_ms"]), coverage=DISAGREEMENT_COVERAGE)
        )
        state.facts = dict(latency.get("facts") or {})
        measured = _Measured(plan.key, trial_number, Path(onnx_path), files, latency, plan.mode, features)
        state.since_check.append(measured)
        if disagreed or (self.settings.drift_every and len(state.since_check) >= self.settings.drift_every):
            self._check_drift(runner, state)
            latency = measured.latency  # measured again if the device had drifted
        if disagreed and "remeasured_after_drift" not in latency:
            latency = self._repeat(runner, onnx_path, latency, prediction)
            measured.latency = latency
        if model is not None:
            model.update(features, float(latency["median_ms"]))
        return latency, prediction

    def _repeat(self, runner, onnx_path: Path, first: dict[str, Any], prediction: Prediction) -> dict[str, Any]:
        self.repeats += 1
        self._log(
            f"measured {float(first['median_ms']):.3g} ms where the latency model expected {prediction.median_ms:.3g} ms "
            f"[{prediction.low_ms:.3g}, {prediction.high_ms:.3g}]: measuring twice more"
        )
        runs = [first] + [runner.measure(onnx_path).to_dict() for _ in range(REPEATS_ON_DISAGREEMENT)]
        medians = [float(r["median_ms"]) for r in runs]
        kept = sorted(runs, key=lambda r: float(r["median_ms"]))[len(runs) // 2]
        return {**kept, "repeats": medians, "repeated_because": "outside the latency model's 99 % interval"}

    # ------------------------------------------------------------------ drift

    def _check_drift(self, runner, state: _DeviceState) -> None:
        found = self._reference()
        if found is None or not found[0].is_file():
            state.since_check.clear()
            return
        reference, first_file = found
        figure = float(runner.measure(reference).to_dict()["median_ms"])
        if not state.level_ms:
            first = _figure_in(first_file)
            state.level_ms.append(first if first is not None else figure)
        level = statistics.median(state.level_ms)
        if abs(figure / level - 1.0) <= self.settings.drift_tolerance:
            state.level_ms.append(figure)
            state.since_check.clear()
            return
        self.drifts += 1
        affected = list(state.since_check)
        self._log(
            f"the device's speed drifted: its reference ({reference.parent.name}) measured {figure:.3g} ms against "
            f"{level:.3g} ms before ({figure / level - 1:+.0%}); waiting for it to come back, then measuring "
            f"{len(affected)} plan(s) again"
        )
        back, waited, figures, facts = self._wait_until_back(runner, reference, level)
        remeasured = []
        if back:
            for item in affected:
                again = runner.measure(item.onnx_path).to_dict()
                again["remeasured_after_drift"] = {"first_ms": float(item.latency["median_ms"])}
                self._store(item, again)
                self._relearn(item, float(again["median_ms"]))
                remeasured.append({"plan": item.plan_key, "trial": item.trial_number,
                                   "first_ms": float(item.latency["median_ms"]), "again_ms": float(again["median_ms"])})
                item.latency = again
        records.record_drift(self.study, {
            "device": runner.device_key, "reference": str(reference), "level_ms": level, "drifted_ms": figure,
            "waited_s": round(waited, 1), "back": back, "reference_while_waiting_ms": figures,
            "facts": facts, "remeasured": remeasured,
        })
        if back:
            self._log(f"the device is back ({figures[-1]:.3g} ms after {waited:.0f} s); {len(remeasured)} plan(s) measured again")
        else:
            # A lasting change of speed: it becomes the level, or every later check would wait again.
            state.level_ms = [figures[-1] if figures else figure]
            self._log(
                f"the device did not come back within {self.settings.drift_wait_s:.0f} s; the {len(affected)} figure(s) "
                "measured during the drift are kept, flagged in the study (see `optiseg confirm`), and its speed "
                f"now ({state.level_ms[0]:.3g} ms for the reference) is the level of later checks"
            )
        state.since_check.clear()

    def _relearn(self, item: _Measured, again_ms: float) -> None:
        """A figure measured during a drift was replaced: the model learns the new one instead."""
        model = self._models.get(item.mode)
        if model is not None and item.features is not None:
            model.replace(item.features, float(item.latency["median_ms"]), again_ms)

    def _wait_until_back(self, runner, reference: Path, level: float) -> tuple[bool, float, list[float], dict[str, Any]]:
        started = time.monotonic()
        pause = FIRST_WAIT_S
        figures: list[float] = []
        facts: dict[str, Any] = {}
        while True:
            facts = _load_facts(runner)
            elapsed = time.monotonic() - started
            if elapsed + pause > self.settings.drift_wait_s:
                return False, elapsed, figures, facts
            time.sleep(pause)
            figure = float(runner.measure(reference).to_dict()["median_ms"])
            figures.append(figure)
            if abs(figure / level - 1.0) <= self.settings.drift_tolerance:
                return True, time.monotonic() - started, figures, facts
            pause = min(pause * 2, 60.0)

    def _wait_while_throttled(self, runner, state: _DeviceState) -> None:
        """The last measurement saw the device throttling (or too hot): wait for it to cool down first."""
        self._log(f"{runner.device_key} is {throttling(state.facts)}: waiting before measuring")
        started, pause = time.monotonic(), FIRST_WAIT_S
        while time.monotonic() - started + pause <= self.settings.drift_wait_s:
            time.sleep(pause)
            state.facts = _load_facts(runner)
            if not throttling(state.facts):
                self._log(f"{runner.device_key} is ready after {time.monotonic() - started:.0f} s")
                return
            pause = min(pause * 2, 60.0)
        self._log(f"{runner.device_key} still {throttling(state.facts)} after {self.settings.drift_wait_s:.0f} s: measuring anyway")

    def _store(self, item: _Measured, latency: dict[str, Any]) -> None:
        for path in item.files:
            if path.exists():
                write_json_atomic(path, latency)
        frozen = next((t for t in self.study.get_trials(deepcopy=False) if t.number == item.trial_number), None)
        if frozen is not None and frozen.state.is_finished():
            figure = float(latency["median_ms"])
            records.write_latency_revision(self.study, records.LatencyRevision(
                plan_key=item.plan_key, latency_ms=figure, low_ms=figure, high_ms=figure, rounds=(figure,), source="drift",
                first_ms=float(item.latency["median_ms"]), when=time.strftime("%Y-%m-%dT%H:%M:%S"),
            ))


def features_of(network: Network) -> LatencyFeatures:
    return LatencyFeatures.of(network)


MAX_CACHED = 200  # earlier measurements the model learns from at most (the newest), each profiled once


def cache_identity(plan: DeploymentPlan) -> dict[str, Any]:
    """What a cached figure keeps of its plan, so that later studies' latency models can learn from it."""
    return {"mode": plan.mode, "network": plan.network.as_dict()}


def cached_measurements(cache: Path, mode: str, exclude: set = frozenset()) -> list[tuple[LatencyFeatures, float]]:
    """(features, median ms) of the figures of ``mode`` in a device's latency cache, newest first, skipping the
    networks in ``exclude`` (those the study itself measured) and any file it cannot read."""
    from ..modes._common import read_json

    found = []
    files = sorted(cache.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if cache.is_dir() else []
    for path in files:
        entry = read_json(path) or {}
        identity = entry.get("identity") or {}
        if identity.get("mode") != mode or "median_ms" not in entry:
            continue
        try:
            network = Network.from_dict(identity["network"])
            if network.key in exclude:
                continue
            found.append((features_of(network), float(entry["median_ms"])))
        except Exception:  # noqa: BLE001 - an entry from another optiseg version: not learnt from
            continue
        if len(found) >= MAX_CACHED:
            break
    return found


def _figure_in(latency_file: Path) -> float | None:
    from ..modes._common import read_json

    first = read_json(latency_file)
    return float(first["median_ms"]) if first and "median_ms" in first else None


HOT_C = 80.0  # a Raspberry Pi 4 starts to throttle its clock at 80 °C
_THROTTLING_NOW = 0x2 | 0x4 | 0x8  # get_throttled: frequency capped, throttled, soft temperature limit (right now)


def throttling(facts: dict[str, Any]) -> str | None:
    """What in the device's facts says a measurement now would be slowed ("throttled (0x4)", "at 83 °C"), or None."""
    flags = facts.get("throttled")
    try:
        current = int(str(flags), 16) if flags not in (None, "") else 0
    except ValueError:
        current = 0
    if current & _THROTTLING_NOW:
        return f"throttled (get_throttled={flags})"
    temperature = facts.get("temperature_c")
    if isinstance(temperature, (int, float)) and temperature >= HOT_C:
        return f"at {temperature:.0f} °C"
    return None


def _load_facts(runner) -> dict[str, Any]:
    """The device's load and throttling state, as its check reports them ({} if it cannot say)."""
    try:
        facts = runner.check().get("facts", {})
    except Exception:  # noqa: BLE001 - a fact we cannot read must not stop the wait
        return {}
    return {k: facts.get(k) for k in ("load_1m", "usable_cores", "throttled", "temperature_c", "governor") if k in facts}
