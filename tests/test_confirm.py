"""Confirmation rounds: which plans, the interleaved order, the interval, ties, the budget, the command line.

The study is written by hand through optiseg.records, as a search writes its
trials, with tiny ONNX models at the paths each plan's mode times; the rounds
are measured for real by a LocalRunner. Only the budget test uses a fake
runner and a fake clock: a budget is about seconds, which a test must not time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from _modes import example_plan
import yaml

from optiseg import records
from optiseg.cli import main
from optiseg.devices import DevicePool, open_pool
from optiseg.layout import StudyLayout
from optiseg.modes import get_mode, list_modes
from optiseg.network import Network
from optiseg.plans import Evaluation
from optiseg.records import LatencyRevision, TrialRecord, apply_revision
from optiseg.results import confirmed_front, pareto_front
from optiseg.search import open_existing_study
from optiseg.search.confirm import (
    ConfirmProgress,
    choose_plans,
    confirm_at_end_of_search,
    confirm_study,
    median_interval,
    run_rounds,
)

FAST_MEASURE = {"threads": 1, "warmup": 1, "min_runs": 5, "min_seconds": 0}
OBJECTIVES = (("iou", "maximize"), ("latency_ms", "minimize"))


@dataclass(frozen=True)
class Plan:
    resolution: int
    iou: float
    latency_ms: float
    precision: str = "fp32"
    wall_s: float = 0.5
    device_key: str | None = None


# The front is 0, 1, 2 (fastest first: 2, 1, 0); 3 is 5 % slower than 1 at a lower IoU (within noise);
# 4 is 2.5 times as slow as 2 at a lower IoU (far off the front).
PLANS = (
    Plan(192, 0.90, 3.0),
    Plan(128, 0.80, 2.0),
    Plan(64, 0.70, 1.0),
    Plan(160, 0.79, 2.1),
    Plan(224, 0.60, 2.5),
)


def tiny_onnx(path: Path, size: int) -> Path:
    """A valid ONNX model (a MatMul) that runs in microseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(size).random((size, 16), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16])], [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_study(root: Path, plans=PLANS, name: str = "confirming") -> Path:
    """A study folder as a search leaves it: study.json, config.yaml, SQLite storage, each plan's timed model."""
    from optiseg.config.device import parse_device_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = root / "runs" / name
    layout = StudyLayout(folder)
    folder.mkdir(parents=True)
    device = {"kind": "local", "measure": FAST_MEASURE}
    config = {"study": name, "data": {"root": str(root / "data")}, "device": device, "output": str(root / "runs")}
    layout.config_copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    storage = f"sqlite:///{layout.default_db}"
    layout.study_file.write_text(json.dumps({"study": name, "storage": storage, "settings_hash": "test"}), encoding="utf-8")
    dumped = parse_device_config(device, "test", root).model_dump(mode="json")
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    records.write_study_settings(study, {"objectives": ["iou", "latency_ms"], "device": {
        "name": dumped["name"], "kind": dumped["kind"], "measure": dumped["measure"]}}, "test")
    for index, plan in enumerate(plans):
        network = Network.create("fastscnn", {"a": 0.25}, plan.resolution)
        deployment = get_mode("int8" if plan.precision == "int8" else "device").plan(network, {"precision": plan.precision})
        folder_of = layout.network(network.key)
        tiny_onnx(get_mode(deployment.mode).timed_model(deployment, folder_of), 64 + 32 * index)
        trial = study.ask()
        writer = records.TrialWriter(trial)
        writer.start(deployment, layout.relative(folder_of.path), "test:1")
        latency = {"median_ms": plan.latency_ms, "std_ms": 0.05 * plan.latency_ms, "runs": 50, "wall_s": plan.wall_s,
                   **({"device_key": plan.device_key} if plan.device_key else {})}
        writer.evaluate(Evaluation(metrics={"iou": plan.iou, "latency_ms": plan.latency_ms,
                                            "device_latency_ms": plan.latency_ms}, details={"latency": latency}))
        writer.status(records.COMPLETE)
        study.tell(trial, [plan.iou, plan.latency_ms])
    return folder


def test_the_front_and_the_plans_within_noise_are_chosen_not_the_far_ones(tmp_path):
    study = open_existing_study(make_study(tmp_path)).study
    choices = choose_plans(records.load_records(study), OBJECTIVES)
    assert [c.record.number for c in choices] == [2, 1, 0, 3]  # front fastest first, then the near one
    assert [c.on_front for c in choices] == [True, True, True, False]
    near = choices[-1]
    assert near.gap == pytest.approx(0.05) and near.noise == pytest.approx(0.10)
    assert [c.record.number for c in choose_plans(records.load_records(study), OBJECTIVES, margin=0.01)] == [2, 1, 0]
    assert choose_plans(records.load_records(study), (("iou", "maximize"), ("params", "minimize"))) == []


@pytest.mark.parametrize("name", list_modes())
def test_every_mode_names_the_model_its_latency_was_measured_on(tmp_path, name):
    mode = get_mode(name)
    plan = example_plan(mode, Network.create("fastscnn", {"a": 0.25}, 64))
    folder = StudyLayout(tmp_path).network(plan.network.key)
    timed = mode.timed_model(plan, folder)
    if not mode.latency_is_one_model:  # several graphs (and a link): confirmation rounds leave it out
        assert timed is None
        return
    assert timed.suffix == ".onnx" and folder.path in timed.parents


def test_rounds_are_interleaved_and_revisions_reach_every_reader(tmp_path, capsys):
    folder = make_study(tmp_path)
    handle = open_existing_study(folder)
    original = {r.number: r.latency_ms for r in records.load_records(handle.study)}
    measured: list[str] = []
    with open_pool(open_device(handle)) as pool:
        runner = pool.runners[0]
        real = runner.measure
        runner.measure = lambda path: (measured.append(Path(path).parent.name), real(path))[1]
        report = confirm_study(handle.study, handle.paths, pool, OBJECTIVES, rounds=3, budget_s=600)

    chosen = [row.record for row in report.rows]
    names = [Path(row.model).parent.name for row in report.rows]
    assert [r.number for r in chosen] == [2, 1, 0, 3] and report.rounds == 3 and report.written
    assert measured == names * 3  # A B C D A B C D A B C D, never A A A B B B

    revisions = records.latency_revisions(handle.study)
    assert set(revisions) == {r.plan_key for r in chosen}  # the far plan (trial 4) is not measured
    for number, record in ((r.number, r) for r in records.load_records(handle.study) if r.plan_key in revisions):
        revision = revisions[record.plan_key]
        assert revision.source == "confirm" and len(revision.rounds) == 3
        assert revision.low_ms <= revision.latency_ms <= revision.high_ms
        assert record.latency_ms == revision.latency_ms and revision.first_ms == original[number]
        assert record.evaluation.details["latency_revision"]["first_ms"] == original[number]
    trial = next(t for t in handle.study.trials if t.number == 2)
    assert trial.values[1] == original[2]  # the trial itself keeps its first figure

    capsys.readouterr()
    assert main(["front", str(folder), "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    row = front["trials"][0]
    assert row["confirmed"] and row["latency_revision"]["source"] == "confirm" and len(row["latency_revision"]["rounds"]) == 3
    assert row["latency_ms"] == row["latency_revision"]["latency_ms"] and row["latency_first_ms"] == row["latency_revision"]["first_ms"]
    assert main(["front", str(folder)]) == 0
    assert "confirmed" in capsys.readouterr().out


def test_the_command_confirms_a_study_and_prints_the_new_front(tmp_path, capsys):
    folder = make_study(tmp_path, PLANS[1:3])
    assert main(["confirm", str(folder), "--rounds", "3", "--json", "--quiet"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["rounds"] == 3 and done["written"] and len(done["plans"]) == 2
    assert all(p["latency_revision"]["rounds"] and p["coverage"] == 0.75 for p in done["plans"])
    assert done["front"] and {p["trial"] for p in done["front"]} <= {0, 1}
    assert "confirm:" in (folder / "search.log").read_text(encoding="utf-8")
    assert main(["confirm", str(folder), "--rounds", "3", "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "confirmation, 3 interleaved rounds" in shown and "Pareto front, confirmed" in shown


def test_overlapping_intervals_are_ties_and_separate_ones_dominate():
    def rec(number, iou, latency, interval=None):
        record = TrialRecord.make(number, records.COMPLETE, iou=iou, latency_ms=latency, feasible=True, candidate=f"c{number}")
        if interval is None:
            return record
        return apply_revision(record, LatencyRevision(f"c{number}", latency, *interval, rounds=(latency,) * 3, source="confirm"))

    # Same IoU, 1 faster by its median: on point values 1 beats 0; with overlapping intervals they are tied.
    overlapping = [rec(0, 0.9, 2.1, (1.9, 2.4)), rec(1, 0.9, 2.0, (1.8, 2.2))]
    assert [r.number for r in pareto_front(overlapping)] == [1]  # the default front is unchanged
    front = confirmed_front(overlapping)
    assert [r.number for r in front.members] == [1, 0] and front.ties == {1: (0,), 0: (1,)}
    # Apart beyond the intervals: 1 dominates 0.
    apart = [rec(0, 0.9, 3.0, (2.8, 3.2)), rec(1, 0.9, 2.0, (1.8, 2.2))]
    assert [r.number for r in confirmed_front(apart).members] == [1] and confirmed_front(apart).ties == {}
    # A trade-off whose latencies overlap: both stay, tied (the front cannot say which is faster).
    trade = [rec(0, 0.92, 2.1, (1.9, 2.4)), rec(1, 0.90, 2.0, (1.8, 2.2)), rec(2, 0.80, 1.0, (0.9, 1.1))]
    front = confirmed_front(trade)
    assert [r.number for r in front.members] == [2, 1, 0] and front.tied_with(0) == (1,) and front.tied_with(2) == ()
    # Better IoU at no worse a median dominates, whatever the intervals: latency is not all there is.
    assert [r.number for r in confirmed_front([rec(0, 0.92, 2.0, (1.0, 3.0)), rec(1, 0.90, 2.0, (1.0, 3.0))]).members] == [0]
    # No revision anywhere: exactly the point-value front.
    points = [rec(0, 0.97, 100.0), rec(1, 0.95, 10.0), rec(2, 0.90, 20.0), rec(3, 0.96, 50.0)]
    assert confirmed_front(points).members == pareto_front(points) and confirmed_front(points).ties == {}


def test_the_interval_is_an_order_statistic_interval_with_its_coverage():
    three = median_interval([3.0, 1.0, 2.0])
    assert (three.median, three.low, three.high, three.coverage) == (2.0, 1.0, 3.0, 0.75)
    assert median_interval([5, 1, 4, 2, 3]).coverage == pytest.approx(0.9375)
    ten = median_interval(list(range(10)))
    assert (ten.low, ten.high) == (1.0, 8.0) and ten.coverage == pytest.approx(1 - 2 * 11 / 1024)


class FakeRunner:
    """Answers at once and moves a fake clock by its ``seconds`` (budget tests must not depend on timing)."""

    device_key = "fake:1"
    label = "fake"

    def __init__(self, clock: list[float], seconds: float = 1.0):
        self.clock, self.seconds, self.measured = clock, seconds, []

    def measure(self, path):
        self.clock[0] += self.seconds
        self.measured.append(Path(path).parent.name)
        return type("Result", (), {"median_ms": 1.0 + 0.01 * len(self.measured)})()

    def connect(self):
        pass

    def close(self):
        pass


def test_the_budget_stops_the_rounds_and_chooses_what_fits(tmp_path):
    clock = [0.0]
    runner = FakeRunner(clock)
    done = run_rounds(runner, [Path("a/m.onnx"), Path("b/m.onnx")], rounds=5, budget_s=7.0, clock=lambda: clock[0])
    assert done.count == 3 and done.spent_s == 6.0 and "budget of 7 device seconds" in done.stop_reason
    assert runner.measured == ["a", "b"] * 3  # the first 3 rounds run; a 4th (2 s) would pass 7 s
    clock[0] = 0.0
    assert run_rounds(FakeRunner(clock), [Path("a/m.onnx")], rounds=5, budget_s=100, clock=lambda: clock[0]).count == 5

    # 3 rounds of a plan cost 3 x the wall time of its first measurement: 10 s each, 50 s take one plan only.
    slow = tuple(Plan(p.resolution, p.iou, p.latency_ms, wall_s=10.0) for p in PLANS[:3])
    handle = open_existing_study(make_study(tmp_path, slow))
    pool = DevicePool([("fake", FakeRunner([0.0]))], device_key="fake:1", label="fake", lock_dir=tmp_path / "locks")
    report = confirm_study(handle.study, handle.paths, pool, OBJECTIVES, rounds=5, budget_s=50)
    assert [row.revision is not None for row in report.rows] == [True, False, False]
    assert "do not fit the budget of 50 s" in report.rows[1].note
    nothing = confirm_study(handle.study, handle.paths, pool, OBJECTIVES, rounds=5, budget_s=20)
    assert nothing.rounds == 0 and not nothing.written and "nothing measured" in nothing.stop_reason


def test_plans_measured_elsewhere_or_without_their_model_are_left_out(tmp_path):
    plans = (Plan(128, 0.8, 2.0), Plan(64, 0.7, 1.0, device_key="ssh:pi@elsewhere:22:threads=1"))
    folder = make_study(tmp_path, plans)
    handle = open_existing_study(folder)
    missing = next(folder.glob("candidates/*-128x128-*/network.onnx"))
    missing.unlink()
    pool = DevicePool([("fake", FakeRunner([0.0]))], device_key="fake:1", label="fake", lock_dir=tmp_path / "locks")
    report = confirm_study(handle.study, handle.paths, pool, OBJECTIVES, rounds=3, budget_s=100)
    notes = {row.record.number: row.note for row in report.rows}
    assert "is missing" in notes[0] and "elsewhere" in notes[1] and not report.written


def test_the_end_of_a_search_confirms_once_and_can_be_turned_off(tmp_path):
    from optiseg.config import ConfirmConfig
    from optiseg.search.progress import SearchProgress

    handle = open_existing_study(make_study(tmp_path, PLANS[:2]))
    runner = FakeRunner([0.0])
    pool = DevicePool([("fake", runner)], device_key="fake:1", label="fake", lock_dir=tmp_path / "locks")
    progress = SearchProgress(handle.paths.log, quiet=True)

    def at_end(settings, fresh):
        return confirm_at_end_of_search(handle.study, handle.paths, pool, OBJECTIVES, settings, progress, fresh=fresh)

    assert at_end(ConfirmConfig(enabled=False), fresh=True) is None and runner.measured == []
    assert at_end(ConfirmConfig(rounds=3), fresh=False).rounds == 3 and len(runner.measured) == 6
    assert at_end(ConfirmConfig(rounds=3), fresh=False) is None and len(runner.measured) == 6  # nothing new: skipped
    assert at_end(ConfirmConfig(rounds=3), fresh=True).rounds == 3  # new trials: measured again, together
    assert "every plan of the front is confirmed already" in handle.paths.log.read_text(encoding="utf-8")


def test_the_config_section_and_the_command_refuse_what_cannot_work(tmp_path, capsys):
    from pydantic import ValidationError

    from optiseg.config import StudyConfig

    base = {"data": {"root": str(tmp_path)}}
    assert StudyConfig.model_validate({**base, "confirm": False}).confirm.enabled is False
    assert StudyConfig.model_validate({**base, "confirm": {"budget_s": "2m"}}).confirm.budget_s == 120.0
    assert StudyConfig.model_validate(base).confirm.enabled  # on by default
    with pytest.raises(ValidationError, match="rounds"):
        StudyConfig.model_validate({**base, "confirm": {"rounds": 2}})

    assert main(["confirm", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "does not exist" in error and "\n" not in error and "Traceback" not in error
    assert main(["confirm", str(tmp_path)]) == 2
    assert "is not a study folder" in capsys.readouterr().err
    assert main(["confirm", str(make_study(tmp_path, PLANS[:1])), "--rounds", "2"]) == 2
    assert "at least 3 rounds" in capsys.readouterr().err


def open_device(handle):
    from optiseg.search.confirm import study_device

    return study_device(handle)


def test_progress_lines_go_to_the_log(tmp_path):
    lines: list[str] = []
    progress = ConfirmProgress(bar=False, log=lines.append)
    progress.start(2, 3, 60.0, 4.0, "local", 1)
    progress.round_done(1, 4.2)
    assert "2 plans, up to 3 interleaved rounds on local" in lines[0] and "1 left out" in lines[0]
    assert "round 1/3 done" in lines[1]


def test_a_failed_confirmation_at_the_end_of_a_search_prints_a_command_that_runs(tmp_path):
    """The hint's study folder holds a space: quoted, the printed command is one the shell runs as it is."""
    import shlex

    from optiseg.config import ConfirmConfig
    from optiseg.errors import DeviceError
    from optiseg.search.progress import SearchProgress

    class GoneRunner(FakeRunner):
        def measure(self, path):
            raise DeviceError("the device went away")

    handle = open_existing_study(make_study(tmp_path / "my studies", PLANS[:2]))
    pool = DevicePool([("fake", GoneRunner([0.0]))], device_key="fake:1", label="fake", lock_dir=tmp_path / "locks")
    progress = SearchProgress(handle.paths.log, quiet=True)
    assert confirm_at_end_of_search(handle.study, handle.paths, pool, OBJECTIVES, ConfirmConfig(rounds=3), progress,
                                    fresh=True) is None
    line = next(line for line in handle.paths.log.read_text(encoding="utf-8").splitlines() if "to try again" in line)
    command = line.split("run `")[1].split("`")[0]
    assert shlex.split(command) == ["optiseg", "confirm", str(handle.paths.folder)]
