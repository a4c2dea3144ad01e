"""Deployment plans, their records in a real Optuna storage, and old or newer schemas, for every registered mode."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from optiseg import records
from optiseg.errors import StudyError, UsageError
from optiseg.modes import DeploymentMode, get_mode, list_modes, mode_for
from optiseg.network import Network
from optiseg.plans import METRICS, DeploymentPlan, Evaluation, OperatingPoint, tail_latency_ms
from optiseg.search.space import build_search_space

from _modes import NETWORK, WITH_EXITS, deployable, example_plan as last_plan


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])


@pytest.mark.parametrize("name", list_modes())
def test_every_mode_follows_the_protocol_and_its_plans_have_distinct_keys(name):
    mode = get_mode(name)
    assert isinstance(mode, DeploymentMode) and mode.description
    plan = last_plan(mode)
    if getattr(mode, "derived", False):
        assert not mode.knobs and mode.knob_values(NETWORK) is None and plan.networks == (NETWORK, WITH_EXITS)
        with pytest.raises(UsageError, match="pairs two trained networks"):
            mode.plan(NETWORK, {})
    else:
        assert mode.knobs and plan.network == deployable(mode) and mode_for({"mode": mode.family, **plan.knob_dict}) is mode
    assert plan.mode == name
    assert plan.key.startswith("+".join(n.key for n in plan.networks) + "@") and "/" not in plan.key and " " not in plan.key
    assert DeploymentPlan.from_dict(plan.as_dict()) == plan
    assert len({last_plan(get_mode(other)).key for other in list_modes()}) == len(list_modes())
    assert all(get_mode(other).knob_values(WITH_EXITS) is not None for other in list_modes()
               if not getattr(get_mode(other), "derived", False))  # exits add plans, never take one away


def test_network_keys_are_one_identity_and_values_keep_one_form():
    assert NETWORK.key == "fastscnn-64x96-rgb-c1-a0.25_t2_r3_pp1"
    assert Network.from_dict(NETWORK.as_dict()) == NETWORK
    assert Network.create("fastscnn", {"a": 0.25, "t": 2}, (64, 96)) == NETWORK  # one parser, any spelling
    with pytest.raises(UsageError, match="multiple of 32"):
        Network.create("fastscnn", {}, "100")
    with pytest.raises(UsageError, match="num_classes"):
        Network.create("fastscnn", {}, 64, num_classes=0)


@pytest.mark.parametrize("name", list_modes())
def test_a_record_round_trips_through_the_storage(study, name):
    mode = get_mode(name)
    plan = last_plan(mode)
    evaluation = Evaluation(
        metrics={"iou": 0.91, "latency_ms": 1.5, "device_mb": 2.25, "params": 12345},
        per_class_iou={"background": 0.99, "box": 0.91},
        details={"latency": {"median_ms": 1.5}, "quantization": {"float_ops": {"Resize": 2}}},
        operating_points=(OperatingPoint("threshold", 0.5, {"iou": 0.9, "latency_ms": 1.2}),),
    )
    trial = study.ask()
    writer = records.TrialWriter(trial)
    writer.start(plan, f"candidates/{plan.network.key}", "host:1")
    writer.evaluate(evaluation)
    writer.constraint("max_latency_ms", -0.5)
    writer.status(records.COMPLETE)
    study.tell(trial, [0.91, 1.5])
    record = records.read_record(study.trials[0])
    assert record.plan == plan and record.evaluation == evaluation and record.status == records.COMPLETE
    assert record.feasible and record.iou == 0.91 and record.latency_ms == 1.5 and record.mode == name
    assert record.as_dict()["plan_key"] == plan.key and record.schema == records.SCHEMA


def test_evaluations_refuse_unknown_or_non_finite_metrics():
    with pytest.raises(ValueError, match="unknown metric 'ioo'"):
        Evaluation(metrics={"ioo": 1.0})
    with pytest.raises(ValueError, match="not a finite number"):
        Evaluation(metrics={"iou": float("nan")})
    assert set(METRICS) >= {"iou", "miou", "latency_ms", "device_latency_ms", "server_latency_ms", "link_bytes", "device_mb"}


def test_a_study_written_by_optiseg_0_1_is_read_and_not_extended(study, tmp_path):
    study.set_user_attr("optiseg_settings", {"constraints": {"max_latency_ms": 5.0}})
    trial = study.ask()
    for key, value in {"candidate": "fastscnn-64x64-rgb-a0.25_t6_r3_pp1", "model": "fastscnn",
                       "knobs": {"a": 0.25, "t": 6, "r": 3, "pp": True}, "resolution": "64x64", "in_channels": 3,
                       "latency_ms": 1.25, "latency": {"median_ms": 1.25, "p90_ms": 1.5}, "iou": 0.8, "params": 9,
                       "metrics": {"test_iou": 0.8, "num_classes": 1}, "status": "complete",
                       "artifacts": "candidates/x"}.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("latency_ms", -3.75)
    study.tell(trial, [0.8, 1.25])
    record = records.read_record(study.trials[0])
    assert record.schema == 1 and record.mode == "device" and record.precision == "fp32"
    assert record.iou == 0.8 and record.latency_ms == 1.25 and record.latency_p90_ms == 1.5 and record.params == 9
    assert record.violations == {} and records.constraints_of(study.trials[0]) == {"max_latency_ms": -3.75}
    records.check_study_schema(study, "old", for_writing=False)  # front, report and deploy read it
    with pytest.raises(StudyError, match=r"(?s)older optiseg.*warm_start"):
        records.check_study_schema(study, "old", for_writing=True)


def test_a_study_of_a_newer_schema_is_refused(study):
    study.set_user_attr("optiseg_schema", records.SCHEMA + 1)
    with pytest.raises(StudyError, match="newer optiseg"):
        records.check_study_schema(study, "future", for_writing=False)
    trial = study.ask()
    trial.set_user_attr("optiseg_schema", records.SCHEMA + 1)
    study.tell(trial, state=TrialState.FAIL)
    with pytest.raises(StudyError, match="upgrade optiseg"):
        records.read_record(study.trials[0])


def test_deployment_knobs_open_by_name_and_name_their_siblings():
    space = build_search_space("fastscnn", "beginner", {"resolution": [64, 96], "precision": ["fp32", "int8"]})
    assert space.deployment_knobs == ("precision",) and space.size == 4 and space.network_count == 2
    assert build_search_space("fastscnn", "expert").deployment_knobs == ()  # opt-in at every tier
    params = {"resolution": 96, "precision": "int8"}
    assert space.plan(params).mode == "int8" and space.plan({"resolution": 96}).mode == "device"
    assert space.sibling_params(params) == [{"resolution": 96, "precision": "fp32"}]
    with pytest.raises(Exception, match="precision must be one of fp32, int8"):
        build_search_space("fastscnn", "beginner", {"precision": ["fp16"]})


def test_constraints_and_objectives_take_any_metric_name(tmp_path):
    from optiseg.config import ConfigError, load_config
    from optiseg.search.objectives import constraints_from, objectives_from

    path = tmp_path / "s.yaml"
    path.write_text("data: {root: data}\nobjectives: [iou, device_mb]\nconstraints: {max_device_mb: 3, min_iou: 0.5}\n")
    config = load_config(path).config
    assert [(o.metric, o.direction) for o in objectives_from(config.objectives)] == [("iou", "maximize"), ("device_mb", "minimize")]
    constraints = {c.key: c for c in constraints_from(config.constraints)}
    assert constraints["max_device_mb"].on_cost and not constraints["min_iou"].on_cost
    assert constraints["max_device_mb"].violation(4.0) == 1.0
    path.write_text("data: {root: data}\nconstraints: {max_devce_mb: 3}\n")
    with pytest.raises(ConfigError, match="did you mean 'max_device_mb'"):
        load_config(path)
    path.write_text("data: {root: data}\nobjectives: [iou, latncy_ms]\n")
    with pytest.raises(ConfigError, match="did you mean 'latency_ms'"):
        load_config(path)


def test_the_front_and_the_report_keep_each_precision_apart():
    from optiseg.records import TrialRecord
    from optiseg.report.data import color_options, knobs_text
    from optiseg.results import pareto_front

    common = dict(model="fastscnn", knobs={"a": 0.25}, resolution="64x64", feasible=True)
    fp32 = TrialRecord.make(0, "complete", precision="fp32", iou=0.90, latency_ms=2.0, **common)
    int8 = TrialRecord.make(1, "complete", precision="int8", iou=0.89, latency_ms=1.5, **common)
    slower_int8 = TrialRecord.make(2, "complete", precision="int8", iou=0.85, latency_ms=2.5, **common)
    assert fp32.candidate == int8.candidate and fp32.plan_key != int8.plan_key
    assert [r.number for r in pareto_front([fp32, int8, slower_int8])] == [1, 0]  # same network, two points
    options = {o.name: o for o in color_options([fp32, int8], ["precision"], {"precision": "fp32"}, {"precision": "opt-in"})}
    assert options["mode"].labels == ("device", "int8") and options["precision"].labels == ("fp32", "int8")
    assert knobs_text(int8).endswith("INT8") and not knobs_text(fp32).endswith("INT8")


def test_a_trial_cut_off_before_its_plan_was_written_still_names_its_network(study):
    from optiseg.search.lease import recover_stale_trials

    trial = study.ask()
    records.claim_network(trial, get_mode("device").plan(NETWORK, {}))
    recover_stale_trials(study, all_running_are_dead=True)  # its worker was killed right after asking
    record = records.read_record(study.trials[0])
    assert record.status == records.INTERRUPTED and record.candidate == NETWORK.key
    assert "worker stopped" in record.error


def test_the_tail_latency_of_frames_taking_different_paths_is_the_time_nine_in_ten_are_done_in():
    assert tail_latency_ms([1.0, 3.0, 6.0], [0.5, 0.3, 0.2]) == 6.0
    assert tail_latency_ms([1.0, 3.0, 6.0], [0.7, 0.2, 0.1]) == 3.0  # exactly nine in ten by the second output
    assert tail_latency_ms([1.0, 3.0, 6.0], [0.9, 0.1, 0.0]) == 1.0
    assert tail_latency_ms([6.0, 2.0], [0.05, 0.95]) == 2.0  # paths in any order
    assert tail_latency_ms([1.0, 3.0], [0.2, 0.8], share=0.5) == 3.0


def test_an_imported_plan_keeps_its_mode_and_knobs_in_a_space_of_several_modes():
    """Warm start stores an import with the params `suggest` would have asked for its own plan: a split plan as
    mode split with its cut and bits (not the device plan of its network), a device plan as mode device."""
    from optiseg.search.warm_start import _params_in

    space = build_search_space("fastscnn", "beginner", {"resolution": [64, 96]}, modes=("device", "split"))
    network = Network.create("fastscnn", {"a": 1.0, "t": 6, "r": 3, "pp": True}, 96)
    split = DeploymentPlan(mode="split", networks=(network,), knobs=(("bits", 8), ("cut", "bottlenecks2")))
    device = DeploymentPlan(mode="device", networks=(network,), knobs=(("precision", "fp32"),))
    imported = {}
    for plan in (split, device):
        record = records.TrialRecord.make(0, records.COMPLETE, model="fastscnn", resolution="96")
        params = _params_in(space, records.TrialRecord(number=0, status=records.COMPLETE, plan=plan,
                                                        evaluation=record.evaluation), 1)
        imported[plan.mode], distributions = space.as_asked(params)
        assert set(distributions) == set(imported[plan.mode])
        assert space.plan(imported[plan.mode]).key == plan.key  # the params describe the imported plan itself
    assert imported["split"] == {"resolution": 96, "mode": "split", "cut": "bottlenecks2", "bits": 8}
    assert imported["device"] == {"resolution": 96, "mode": "device"}
    only_split = build_search_space("fastscnn", "beginner", {"resolution": [64, 96]}, modes=("split",))
    record = records.TrialRecord.make(0, records.COMPLETE, model="fastscnn", resolution="96")
    assert _params_in(only_split, records.TrialRecord(number=0, status=records.COMPLETE, plan=device,
                                                      evaluation=record.evaluation), 1) is None  # not a plan of it
