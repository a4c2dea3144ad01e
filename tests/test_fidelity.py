"""Multi-fidelity search: rungs, the promotion rule on several objectives, and a real search in rungs."""

from __future__ import annotations

import json

import pytest

from optiseg.config import FidelityConfig
from optiseg.records import COMPLETE, PARTIAL, TrialRecord, read_record
from optiseg.search.fidelity import rank, to_promote
from test_search_e2e import FAST_MEASURE, data_root, load_study, make_config  # noqa: F401  (data_root is a fixture)

OBJECTIVES = (("iou", "maximize"), ("latency_ms", "minimize"))


def partial(number: int, val_iou: float, latency_ms: float) -> TrialRecord:
    record = TrialRecord.make(number, COMPLETE, model="fastscnn", resolution="64", val_iou=val_iou, latency_ms=latency_ms)
    return TrialRecord(number=record.number, status=PARTIAL, plan=record.plan, evaluation=record.evaluation, rung=0)


def test_rungs_divide_the_epochs_by_eta_down_to_min_epochs():
    assert FidelityConfig().rungs(40) == (4, 13, 40)
    assert FidelityConfig(eta=2, min_epochs=5).rungs(40) == (5, 10, 20, 40)
    assert FidelityConfig(min_epochs=20).rungs(40) == (40,)  # too few epochs for two rungs: no halving


def test_ranking_is_by_front_layer_then_hypervolume_contribution():
    points = [partial(0, 0.90, 10.0), partial(1, 0.80, 2.0), partial(2, 0.85, 5.0), partial(3, 0.70, 9.0),
              partial(4, 0.84, 5.2), partial(5, 0.60, 1.0)]
    order = [r.number for r in rank(points, OBJECTIVES)]
    # First layer {0, 1, 2, 5} (3 and 4 are dominated by 2, and 3 by 4). Reference: IoU 0.60 - 0.03, latency
    # 10 + 0.9 ms. Areas each adds: 1: 0.20 x 3 ms, 2: 0.05 x 5, 0: 0.05 x 0.9, 5: 0.03 x 1. The extremes count
    # for the area they add: the fastest, worst network is not trained on just for being an extreme.
    assert order == [1, 2, 0, 5, 4, 3]


def test_only_the_best_third_goes_on_and_never_twice():
    reached = [partial(i, 0.5 + 0.05 * i, 5.0) for i in range(7)]  # same latency: the best IoU dominates
    assert [r.number for r in to_promote(reached, set(), 3, OBJECTIVES)] == [6, 5]
    assert [r.number for r in to_promote(reached, {6}, 3, OBJECTIVES)] == [5]
    assert to_promote(reached[:2], set(), 3, OBJECTIVES) == []  # fewer than eta reached: nobody yet


@pytest.mark.slow
def test_a_search_in_rungs_trains_the_promising_networks_on_and_keeps_the_rest_off_the_front(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "rungs", search_space={"resolution": [64, 96], "a": [0.125, 0.25, 0.5]},
                         training={"epochs": 6, "batch_size": 4}, fidelity={"eta": 3, "min_epochs": 2},
                         budget={"n_trials": 6}, sampler="grid", confirm=False)
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    trials = [read_record(t) for t in load_study(tmp_path, "rungs").trials]
    partial_trials = [r for r in trials if r.status == PARTIAL]
    complete = [r for r in trials if r.status == COMPLETE and r.duplicate_of is None]
    assert len(partial_trials) == 6 and all(r.rung == 0 for r in partial_trials)  # every network: 2 epochs first
    assert all(r.iou is None and r.metric("val_iou") is not None for r in partial_trials)
    assert len(complete) == 2 and all(r.rung == 1 and r.promotion_of is not None for r in complete)  # 6 // 3 go on
    promoted = {t.number: t for t in partial_trials}
    for r in complete:  # trained on from the checkpoint: 6 epochs in all, none twice
        source = promoted[r.promotion_of]
        assert r.candidate == source.candidate and r.metrics["epochs_run"] == 6
        history = json.loads((tmp_path / "runs" / "rungs" / r.artifacts / "train" / "metrics.json").read_text())["history"]
        assert [h["epoch"] for h in history] == list(range(1, 7))
        assert r.metric("train_compute") == pytest.approx(3 * source.metric("train_compute"))
    front = json.loads(cli("front", str(tmp_path / "runs" / "rungs"), "--json").stdout)
    assert {row["trial"] for row in front["trials"]} <= {r.number for r in complete}  # partial trials never on the front
    everything = cli("front", str(tmp_path / "runs" / "rungs"), "--all").stdout
    assert "rung 1 of 2" in everything and "trained on" in everything
    images = len(list((data_root / "train" / "images").iterdir()))
    expected = sum(2 * images * r.macs for r in partial_trials if r.number not in {c.promotion_of for c in complete})
    expected += sum(6 * images * r.macs for r in complete)
    assert front["training"]["compute_macs"] == pytest.approx(expected)


def test_a_promotion_that_would_pass_the_training_budget_is_skipped_once_the_study_has_a_front():
    from types import SimpleNamespace

    import optuna

    from optiseg import records
    from optiseg.network import Network
    from optiseg.plans import DeploymentPlan, Evaluation
    from optiseg.search.loop import _promotion_over_budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(a: float, compute: float, status: str, epochs: int) -> int:
        trial = study.ask()
        writer = records.TrialWriter(trial)
        network = Network.create("fastscnn", {"a": a}, 64)
        writer.start(DeploymentPlan(mode="device", networks=(network,), knobs=(("precision", "fp32"),)), network.key, "test")
        writer.evaluate(Evaluation(metrics={"iou": 0.9, "latency_ms": 1.0, "train_compute": compute},
                                   details={"fidelity": {"rung": 0, "rungs": [2, 6], "epochs": epochs}}))
        writer.status(status)
        study.tell(trial, [0.9, 1.0])
        return trial.number

    partial_number = add(0.25, 20.0, PARTIAL, 2)  # 2 of 6 epochs: going on costs 2 x 20 more
    queued = SimpleNamespace(user_attrs=records.promotion_attrs(partial_number, 1))

    def env(budget):
        return SimpleNamespace(config=SimpleNamespace(budget=SimpleNamespace(train_compute=budget),
                                                      fidelity=FidelityConfig(eta=3, min_epochs=2),
                                                      training=SimpleNamespace(epochs=6)))

    assert _promotion_over_budget(study, env(25.0), queued) is None  # no front yet: the first whole training runs
    add(0.5, 100.0, COMPLETE, 6)
    reason = _promotion_over_budget(study, env(130.0), queued)  # 120 spent + 40 > 130
    assert reason is not None and f"promotion of trial {partial_number} skipped" in reason and "to 160 of" in reason
    assert _promotion_over_budget(study, env(200.0), queued) is None  # it fits
    assert _promotion_over_budget(study, env(None), queued) is None  # no budget
    assert _promotion_over_budget(study, env(130.0), SimpleNamespace(user_attrs={})) is None  # not a promotion
