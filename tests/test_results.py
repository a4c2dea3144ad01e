"""Pure result functions: Pareto front, hypervolume (checked against Optuna's own)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from optiseg.results import TrialRecord, default_reference_latency, hypervolume, hypervolume_history, load_records, pareto_front


def rec(number, iou, latency, status="complete", feasible=True, candidate=None):
    return TrialRecord.make(number=number, status=status, iou=iou, latency_ms=latency, feasible=feasible, candidate=candidate or f"c{number}")


def test_front_keeps_only_non_dominated_feasible_points():
    records = [
        rec(0, 0.97, 100.0),
        rec(1, 0.95, 10.0),
        rec(2, 0.90, 20.0),  # dominated by 1
        rec(3, 0.99, 200.0, feasible=False),  # violates a constraint
        rec(4, None, 5.0, status="too_slow", feasible=False),
        rec(5, 0.96, 50.0),
        rec(6, 0.95, 10.0, candidate="c1"),  # same candidate as trial 1 (a duplicate)
    ]
    assert [r.number for r in pareto_front(records)] == [1, 5, 0]


def test_hypervolume_of_a_staircase():
    # reference latency 100 ms, IoU 0: strips 10..50 at 0.5 and 50..100 at 0.8
    assert hypervolume([(0.5, 10.0), (0.8, 50.0), (0.4, 60.0)], 100.0) == pytest.approx(40 * 0.5 + 50 * 0.8)
    assert hypervolume([(0.9, 150.0)], 100.0) == 0.0
    assert hypervolume([], 100.0) == 0.0


def test_hypervolume_matches_optuna():
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(0)
    points = [(float(rng.uniform(0.3, 1.0)), float(rng.uniform(1, 90))) for _ in range(40)]
    # Optuna minimizes: (-IoU, latency) with reference (0, 100)
    loss = np.array([(-iou, lat) for iou, lat in points])
    assert hypervolume(points, 100.0) == pytest.approx(compute_hypervolume(loss, np.array([0.0, 100.0])))


def test_history_is_monotone():
    records = [rec(0, 0.5, 50.0), rec(1, 0.4, 80.0), rec(2, 0.9, 30.0)]
    values = [v for _, v in hypervolume_history(records, 100.0)]
    assert values == sorted(values) and values[-1] == pytest.approx(hypervolume([(0.5, 50.0), (0.9, 30.0)], 100.0))


def test_reference_latency():
    assert default_reference_latency([rec(0, 0.5, 10.0)], 33.4) == 33.4
    assert default_reference_latency([rec(0, 0.5, 10.0), rec(1, 0.6, 20.0)], None) == pytest.approx(22.0)


def test_front_agrees_with_optuna_best_trials():
    from optiseg.plans import Evaluation
    from optiseg.records import COMPLETE, TOO_SLOW, TrialRecord, TrialWriter

    study = optuna.create_study(directions=["maximize", "minimize"])
    rng = np.random.default_rng(3)
    for i in range(31):
        trial = study.ask()
        plan = TrialRecord.make(i, COMPLETE, model="fastscnn", knobs={"a": 1}, resolution=str(64 + 32 * i)).plan
        iou, lat = float(rng.uniform(0.5, 1)), float(rng.uniform(1, 100))
        writer = TrialWriter(trial)
        writer.start(plan, f"candidates/c{i}", "test")
        if i < 30:
            writer.evaluate(Evaluation(metrics={"iou": iou, "latency_ms": lat}))
            writer.constraint("max_latency_ms", lat - 80.0)
            writer.status(COMPLETE)
            study.tell(trial, [iou, lat])
        else:
            writer.evaluate(Evaluation(metrics={"latency_ms": 150.0}))
            writer.constraint("max_latency_ms", 70.0)
            writer.status(TOO_SLOW)
            study.tell(trial, state=TrialState.PRUNED)
    records = load_records(study)
    assert len({r.plan_key for r in records}) == 31
    assert records[-1].status == "too_slow" and records[-1].iou is None and not records[-1].feasible
    assert sorted(r.number for r in pareto_front(records)) == sorted(t.number for t in study.best_trials)


def test_queued_trials_are_waiting_not_failed():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1})
    assert [r.status for r in load_records(study)] == ["waiting"]
