"""The latency watch: a measurement the model disbelieves is repeated, a surely-too-slow plan is predicted,
and a real drift (a CPU hog started and stopped by the test) is detected and what it touched measured again."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from optiseg import records
from optiseg.config.device import DeviceConfig
from optiseg.config.latency import LatencyConfig
from optiseg.devices import LocalRunner
from optiseg.modes import get_mode
from optiseg.network import Network
from optiseg.search import latency_watch
from optiseg.search.latency_watch import LatencyWatch

RESOLUTIONS = tuple(range(64, 64 + 32 * 12, 32))


def plan_at(size: int, a: float = 0.25):
    network = Network.create("fastscnn", {"a": a, "t": 6, "r": 1, "pp": 0}, f"{size}x{size}", num_classes=1)
    return get_mode("device").plan(network, {})


class ScriptedDevice:
    """A device whose speed the test sets (what cannot run here: a Pi's speed); every call is kept."""

    device_key = "scripted"

    def __init__(self, speed):
        self.speed = speed  # (path) -> ms
        self.calls: list[str] = []

    def measure(self, path):
        self.calls.append(Path(path).name)
        ms = float(self.speed(Path(path)))
        return SimpleNamespace(to_dict=lambda: {"median_ms": ms, "p90_ms": ms, "runs": 5, "device_key": self.device_key})

    def check(self):
        return {"facts": {"load_1m": 0.1, "usable_cores": 2}}


def macs_law(plan) -> float:
    """A smooth law in pixels, so the model learns it from a few plans."""
    side = plan.network.resolution[0]
    return 0.02 + 1e-4 * side * side


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def learnt_watch(study, settings: LatencyConfig, device, tmp_path: Path, sizes=RESOLUTIONS[:8]) -> LatencyWatch:
    lines: list[str] = []
    watch = LatencyWatch(study, settings, log=lines.append, reference=lambda: None)
    watch.lines = lines
    for size in sizes:
        plan = plan_at(size)
        path = tmp_path / f"{size}.onnx"
        path.write_bytes(b"")
        device.speed = lambda p, plan=plan: macs_law(plan)
        watch.measure(device, plan, 0, path, ())
    return watch


def test_a_measurement_the_model_disbelieves_is_measured_twice_more(study, tmp_path):
    device = ScriptedDevice(lambda p: 0.0)
    watch = learnt_watch(study, LatencyConfig(drift_every=0), device, tmp_path)
    plan = plan_at(RESOLUTIONS[9])
    expected = macs_law(plan)
    figures = iter([expected * 4, expected * 1.02, expected * 0.99])  # one disturbed run, then the truth
    device.speed = lambda p: next(figures)
    device.calls.clear()
    latency, prediction = watch.measure(device, plan, 1, tmp_path / "x.onnx", ())
    assert len(device.calls) == 3 and watch.repeats == 1
    assert latency["median_ms"] == pytest.approx(expected * 1.02) and len(latency["repeats"]) == 3
    assert prediction is not None and prediction.low_ms < expected < prediction.high_ms
    assert any("measuring twice more" in line for line in watch.lines)

    believed = plan_at(RESOLUTIONS[10])
    device.speed = lambda p: macs_law(believed)
    device.calls.clear()
    latency, _ = watch.measure(device, believed, 2, tmp_path / "y.onnx", ())
    assert len(device.calls) == 1 and "repeats" not in latency  # inside the interval: believed at once


def test_repeating_can_be_turned_off(study, tmp_path):
    device = ScriptedDevice(lambda p: 0.0)
    watch = learnt_watch(study, LatencyConfig(drift_every=0, repeat_on_disagreement=False), device, tmp_path)
    device.speed = lambda p: 50.0
    device.calls.clear()
    watch.measure(device, plan_at(RESOLUTIONS[9]), 1, tmp_path / "x.onnx", ())
    assert len(device.calls) == 1


def test_a_plan_is_predicted_too_slow_only_when_allowed_and_sure(study, tmp_path):
    device = ScriptedDevice(lambda p: 0.0)
    big = plan_at(RESOLUTIONS[-1])
    limit = macs_law(big) / 3  # the big plan is three times over the limit
    off = learnt_watch(study, LatencyConfig(drift_every=0), device, tmp_path)
    assert off.predicted_too_slow(big, limit) is None  # off by default

    early = learnt_watch(study, LatencyConfig(drift_every=0, predict_too_slow=True, predict_after=20), device, tmp_path)
    assert early.predicted_too_slow(big, limit) is None  # not before predict_after measurements

    watch = learnt_watch(study, LatencyConfig(drift_every=0, predict_too_slow=True, predict_after=6), device, tmp_path)
    found = watch.predicted_too_slow(big, limit)
    assert found is not None and found[0].low_ms > limit
    assert watch.predicted_too_slow(big, macs_law(big) * 1.05) is None  # within the margin: measure it


def test_a_search_records_a_predicted_plan_as_too_slow_without_measuring_it(study, tmp_path):
    from optiseg.search.objectives import Constraint
    from optiseg.search.trial import TooSlow, _gate_on_prediction

    device = ScriptedDevice(lambda p: 0.0)
    watch = learnt_watch(study, LatencyConfig(drift_every=0, predict_too_slow=True, predict_after=6), device, tmp_path)
    big = plan_at(RESOLUTIONS[-1])

    class Env:
        latency_watch = watch
        constraints = (Constraint("max_latency_ms", "latency_ms", "max", macs_law(big) / 3),)
        progress = type("P", (), {"stage": staticmethod(lambda text: None)})()

    trial = study.ask()
    writer = records.TrialWriter(trial)
    writer.start(big, "candidates/x", "test")
    with pytest.raises(TooSlow, match="not measured, not trained"):
        _gate_on_prediction(Env, big, get_mode("device"), writer)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    record = records.read_record(study.trials[-1])
    assert record.status == records.TOO_SLOW and record.latency_ms is None  # the front never holds a prediction
    assert record.evaluation.details["latency_predicted"]["low_ms"] > Env.constraints[0].value
    assert record.violations["max_latency_ms"] > 0


def _hog(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def test_a_real_drift_is_detected_and_what_it_touched_measured_again(study, tmp_path, monkeypatch):
    """A CPU hog (real processes) slows this machine down between two measurements; the reference check
    sees it, the watch waits for the test to stop the hog, then measures both plans again."""
    from optiseg.export import export_onnx

    monkeypatch.setattr(latency_watch, "FIRST_WAIT_S", 1.0)
    runner = LocalRunner(DeviceConfig.model_validate(
        {"kind": "local", "measure": {"threads": 2, "warmup": 3, "min_runs": 20, "min_seconds": 0.5}}))
    plans, paths = [], []
    for size in (192, 160, 128):
        plan = plan_at(size, a=1)
        exported = export_onnx(plan.network.build().eval(), tmp_path / f"{size}.onnx", plan.network)
        plans.append(plan)
        paths.append(exported.path)
    reference, first_file = paths[0], tmp_path / "reference-latency.json"
    reference_ms = runner.measure(reference).median_ms
    first_file.write_text(f'{{"median_ms": {reference_ms}}}')

    lines: list[str] = []
    watch = LatencyWatch(study, LatencyConfig(drift_every=2, drift_tolerance=0.35, drift_wait_s=120,
                                              repeat_on_disagreement=False),
                         log=lines.append, reference=lambda: (reference, first_file))
    finished = study.ask()
    files = (tmp_path / "first.json",)
    files[0].write_text("{}")
    calm, _ = watch.measure(runner, plans[1], finished.number, paths[1], files)
    study.tell(finished, [0.9, calm["median_ms"]])

    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_hog, args=(stop,), daemon=True) for _ in range(6)]
    for hog in hogs:
        hog.start()
    timer = threading.Timer(6.0, stop.set)  # the device comes back while the watch waits
    timer.start()
    try:
        time.sleep(0.5)
        running = study.ask()
        latency, _ = watch.measure(runner, plans[2], running.number, paths[2], ())
    finally:
        stop.set()
        timer.cancel()
        for hog in hogs:
            hog.join(timeout=10)

    events = records.drift_events(study)
    assert watch.drifts >= 1 and events, lines
    event = events[0]
    assert event["drifted_ms"] > event["level_ms"] * 1.35 and event["back"] is True
    assert {item["plan"] for item in event["remeasured"]} == {plans[1].key, plans[2].key}
    assert latency.get("remeasured_after_drift")  # the running trial got the figure measured after the drift
    revision = records.latency_revisions(study)[plans[1].key]  # the finished one got a revision
    assert revision.source == "drift" and revision.first_ms == pytest.approx(calm["median_ms"])
    assert '"remeasured_after_drift"' in files[0].read_text()  # its kept figure was replaced too
    assert any("drifted" in line for line in lines) and any("is back" in line for line in lines)


def test_a_throttled_device_is_waited_for_before_the_next_measurement(study, tmp_path, monkeypatch):
    monkeypatch.setattr(latency_watch, "FIRST_WAIT_S", 0.05)
    states = iter(["0x50005", "0x50004", "0x50000"])  # throttled now, still, then only "has been" bits

    class HotDevice(ScriptedDevice):
        def measure(self, path):
            result = super().measure(path)
            figures = result.to_dict()
            return SimpleNamespace(to_dict=lambda: {**figures, "facts": {"throttled": "0x50005", "temperature_c": 70.0}})

        def check(self):
            self.calls.append("check")
            return {"facts": {"throttled": next(states), "temperature_c": 70.0}}

    device = HotDevice(lambda p: 1.0)
    lines: list[str] = []
    watch = LatencyWatch(study, LatencyConfig(drift_every=0), log=lines.append, reference=lambda: None)
    watch.measure(device, plan_at(64), 0, tmp_path / "a.onnx", ())
    watch.measure(device, plan_at(96), 1, tmp_path / "b.onnx", ())
    assert device.calls == ["a.onnx", "check", "check", "check", "b.onnx"]
    assert "throttled (get_throttled=0x50005)" in lines[0] and "ready" in lines[-1]
    assert latency_watch.throttling({"temperature_c": 85.0}) == "at 85 °C"
    assert latency_watch.throttling({"throttled": "0x50000", "temperature_c": 60}) is None


def test_the_model_starts_from_what_earlier_studies_measured_on_the_same_device(study, tmp_path):
    """A second study on the same device does not start blind: the cache's figures (with their plans) train its model."""
    cache = tmp_path / "latency-cache"
    cache.mkdir()
    for size in RESOLUTIONS[:8]:
        plan = plan_at(size)
        write = {"median_ms": macs_law(plan), "p90_ms": macs_law(plan), "identity": latency_watch.cache_identity(plan)}
        import json

        (cache / f"{plan.network.key}.json").write_text(json.dumps(write))
    (cache / "stray.json").write_text("{not json")  # a torn write: skipped
    (cache / "old.json").write_text('{"median_ms": 3.0}')  # no identity (an older optiseg): skipped
    lines: list[str] = []
    watch = LatencyWatch(study, LatencyConfig(), log=lines.append, reference=lambda: None, cache=cache)
    model = watch.model("device")
    assert model.samples == 8 and any("8 of earlier studies" in line for line in lines)
    far = plan_at(RESOLUTIONS[10])
    assert watch.predict(far).median_ms == pytest.approx(macs_law(far), rel=0.15)
    assert LatencyWatch(study, LatencyConfig(), log=lines.append, reference=lambda: None, cache=cache).model("int8").samples == 0
