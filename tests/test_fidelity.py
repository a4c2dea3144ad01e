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
    study_folder = tmp_path / "runs" / "rungs"
    for r in partial_trials:  # each scored on the test split as it stood after its rung, with a file of its own
        assert 0.0 <= r.metric("iou") <= 1.0 and r.evaluation.details["fidelity"]["onnx"] == "train/model-2-epochs.onnx"
        assert (study_folder / r.artifacts / "train" / "model-2-epochs.onnx").is_file()
    marked = json.loads(cli("front", str(study_folder), "--partial", "--json").stdout)["trials"]
    went_on = {c.promotion_of for c in complete}
    shown_partial = [row for row in marked if row["status"] == PARTIAL]
    standing = complete + [r for r in partial_trials if r.number not in went_on]  # a network trained further shows as that

    def beaten(r, by) -> bool:
        at_least = by.metric("iou") >= r.metric("iou") and by.latency_ms <= r.latency_ms
        return at_least and (by.metric("iou") > r.metric("iou") or by.latency_ms < r.latency_ms)

    assert {row["trial"] for row in marked} == {r.number for r in standing if not any(beaten(r, o) for o in standing)}
    assert all(row["partial"]["epochs"] == 2 and row["partial"]["of"] == 6 and row["iou"] is not None for row in shown_partial)
    assert json.loads(result.stdout)["partial_on_front"] == len(shown_partial)
    table = cli("front", str(study_folder), "--partial").stdout
    assert "with partial networks" in table and ("partial: 2 of 6 epochs" in table) == bool(shown_partial)
    left = next(r for r in partial_trials if r.number not in went_on)  # deployable as it stands, marked so
    deployed = cli("deploy", str(study_folder), "--trial", str(left.number), "-o", str(tmp_path / "deploy"))
    assert deployed.returncode == 0, deployed.stderr
    assert (tmp_path / "deploy" / "model.onnx").read_bytes() == (study_folder / left.artifacts / "train" / "model-2-epochs.onnx").read_bytes()
    assert "**partial**: after 2 of 6 epochs" in (tmp_path / "deploy" / "README.md").read_text()
    assert json.loads((tmp_path / "deploy" / "metrics.json").read_text())["partial"] == {"epochs": 2, "of": 6, "rung": 0}
    report = cli("report", str(study_folder), "--no-samples", "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text()
    assert ("Partial networks that would join it" in page) == bool(shown_partial)
    assert all(f"--trial {row['trial']} " in page for row in shown_partial)
    everything = cli("front", str(tmp_path / "runs" / "rungs"), "--all").stdout
    assert "rung 1 of 2" in everything and "trained on" in everything
    images = len(list((data_root / "train" / "images").iterdir()))
    expected = sum(2 * images * r.macs for r in partial_trials if r.number not in {c.promotion_of for c in complete})
    expected += sum(6 * images * r.macs for r in complete)
    assert front["training"]["compute_macs"] == pytest.approx(expected)


def scored_partial(number: int, iou: float, latency_ms: float, rung: int = 0, a: float = 0.25,
                   constraints: dict | None = None) -> TrialRecord:
    record = TrialRecord.make(number, COMPLETE, model="fastscnn", knobs={"a": a}, resolution="64", iou=iou, val_iou=iou,
                              latency_ms=latency_ms)
    fidelity = {"rung": rung, "rungs": [2, 6, 18], "epochs": 2 * 3 ** rung, "of": 18,
                "onnx": f"train/model-{2 * 3 ** rung}-epochs.onnx", "constraints": constraints or {}}
    evaluation = record.evaluation.merged(details={"fidelity": fidelity})
    return TrialRecord(number=number, status=PARTIAL, plan=record.plan, evaluation=evaluation, rung=rung)


def test_a_partial_network_stands_on_the_marked_front_only_as_it_stands_now_and_within_the_constraints():
    from optiseg.results import pareto_front, with_partial

    whole = TrialRecord.make(0, COMPLETE, model="fastscnn", knobs={"a": 1.0}, resolution="64", iou=0.95, latency_ms=5.0,
                             feasible=True)
    left_at_rung = scored_partial(1, 0.90, 1.0, a=0.125)  # fast, trained no further
    went_on = scored_partial(2, 0.80, 2.0, a=0.5)  # its network has a trial of the next rung ...
    next_rung = scored_partial(3, 0.85, 2.0, rung=1, a=0.5)  # ... which stands for it
    over = scored_partial(4, 0.60, 0.5, a=0.25, constraints={"min_iou": 0.1})  # over min_iou on its test figures
    unjudged = scored_partial(5, 0.99, 0.4, a=0.75, constraints={"min_iou": None})  # a constraint it cannot be judged on
    records = [whole, left_at_rung, went_on, next_rung, over, unjudged]
    assert [r.number for r in pareto_front(records)] == [0]  # without: whole networks only
    assert left_at_rung.iou is None  # a partial figure counts only where a front takes it in
    marked = with_partial(records)
    assert [r.number for r in marked if r.feasible] == [0, 1, 3]
    assert [(r.number, r.status, r.iou) for r in pareto_front(marked)] == [(1, PARTIAL, 0.90), (0, COMPLETE, 0.95)]


def test_a_promotion_that_would_pass_the_training_budget_is_skipped_once_the_study_has_a_front():
    from types import SimpleNamespace

    import optuna

    from optiseg import records
    from optiseg.network import Network
    from optiseg.plans import DeploymentPlan, Evaluation
    from optiseg.search.budget import promotion_over_budget

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

    assert promotion_over_budget(study, env(25.0), queued) is None  # no front yet: the first whole training runs
    add(0.5, 100.0, COMPLETE, 6)
    reason = promotion_over_budget(study, env(130.0), queued)  # 120 spent + 40 > 130
    assert reason is not None and f"promotion of trial {partial_number} skipped" in reason and "to 160 of" in reason
    assert promotion_over_budget(study, env(200.0), queued) is None  # it fits
    assert promotion_over_budget(study, env(None), queued) is None  # no budget
    assert promotion_over_budget(study, env(130.0), SimpleNamespace(user_attrs={})) is None  # not a promotion


def test_near_the_end_of_the_budget_new_networks_give_way_to_the_partial_networks_next_rungs():
    """Once the study has a front, a new network whose whole training would not fit in what is left is not trained;
    the rest goes to the furthest, best partial network whose next rung fits."""
    from types import SimpleNamespace

    import optuna

    from optiseg import records
    from optiseg.network import Network
    from optiseg.plans import DeploymentPlan, Evaluation
    from optiseg.search.budget import new_network_over_budget, promote_within_budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(a: float, compute: float, status: str, rung: int, epochs: int, iou: float, latency: float) -> int:
        trial = study.ask({"a": optuna.distributions.CategoricalDistribution([0.125, 0.25, 0.5, 0.75, 1.0])})
        writer = records.TrialWriter(trial)
        network = Network.create("fastscnn", {"a": a}, 64)
        writer.start(DeploymentPlan(mode="device", networks=(network,), knobs=(("precision", "fp32"),)), network.key, "test")
        writer.rung(rung)
        writer.evaluate(Evaluation(metrics={"iou": iou, "val_iou": iou, "latency_ms": latency, "train_compute": compute},
                                   details={"fidelity": {"rung": rung, "rungs": [1, 3, 9], "epochs": epochs}}))
        writer.status(status)
        study.tell(trial, [iou, latency])
        return trial.number

    logged = []
    objectives = (SimpleNamespace(metric="iou", direction="maximize"), SimpleNamespace(metric="latency_ms", direction="minimize"))

    def env(budget):
        return SimpleNamespace(config=SimpleNamespace(budget=SimpleNamespace(train_compute=budget),
                                                      fidelity=FidelityConfig(eta=3, min_epochs=1),
                                                      training=SimpleNamespace(epochs=9)),
                               dataset=SimpleNamespace(split=lambda name: [None] * 10), objectives=objectives,
                               progress=SimpleNamespace(log=logged.append))

    low = add(0.25, 10.0, PARTIAL, 0, 1, 0.80, 1.0)  # rung 1 of 3 (1 epoch): its next rung (3 epochs) costs 20 more
    network = Network.create("fastscnn", {"a": 0.125}, 64)
    assert new_network_over_budget(study, env(50.0), network, macs=1.0) is None  # no front yet: new networks train
    add(1.0, 90.0, COMPLETE, 2, 9, 0.95, 3.0)  # a network trained whole: the study has a front; 100 spent
    high = add(0.5, 30.0, PARTIAL, 1, 3, 0.85, 2.0)  # rung 2 of 3 (3 epochs): its last rung costs 60 more; 130 spent
    reason = new_network_over_budget(study, env(200.0), network, macs=1.0)  # its whole training: 9 epochs x 10 images x 1 MAC
    assert reason is not None and "(90 MACs)" in reason and "to 220 of" in reason
    assert new_network_over_budget(study, env(220.0), network, macs=1.0) is None  # it fits exactly
    assert new_network_over_budget(study, env(None), network, macs=1.0) is None  # no budget
    trained = Network.create("fastscnn", {"a": 1.0}, 64)
    assert new_network_over_budget(study, env(200.0), trained, macs=1.0) is None  # trained already (by another worker)
    no_rungs = env(200.0)
    no_rungs.config.fidelity = None
    assert new_network_over_budget(study, no_rungs, network, macs=1.0) is None  # only a study in rungs gives way

    assert promote_within_budget(study, env(200.0))  # 70 left: the rung-2 network's last rung (60) comes first
    queued = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.WAITING]
    assert [(records.promotion_of(t), records.rung_of(t)) for t in queued] == [(high, 2)]
    assert promote_within_budget(study, env(155.0))  # 25 left: only the rung-1 network's next rung (20) fits
    assert records.promotion_of(study.get_trials(deepcopy=False)[-1]) == low
    assert not promote_within_budget(study, env(155.0))  # each network goes on once
    add(0.5, 90.0, COMPLETE, 2, 9, 0.9, 2.0)  # the rung-2 network trained whole (its promotion ran)
    add(0.5, 30.0, PARTIAL, 1, 3, 0.85, 2.0)  # an INT8 plan of it proposed at a rung: the network stands as trained whole
    assert not promote_within_budget(study, env(10_000.0))
    assert len(logged) == 2 and "goes on to rung" in logged[0]
