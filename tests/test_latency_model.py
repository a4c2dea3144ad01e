"""The per-device latency model: synthetic laws it must recover, honest intervals, storage, features of real networks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from optiseg.errors import UsageError
from optiseg.latency_model import (
    FORMS,
    LatencyFeatures,
    LatencyModel,
    Prediction,
    baseline_model,
    fit_from_records,
    measurements_of,
)
from optiseg.network import Network
from optiseg.profile import profile_model
from optiseg.records import TrialRecord


def synthetic_features(rng: np.random.Generator, count: int) -> list[LatencyFeatures]:
    """Networks of Fast-SCNN-like sizes: 96-512 px, width 0.125-1, 24-42 layers."""
    features = []
    for _ in range(count):
        side = int(rng.choice([96, 128, 160, 192, 224, 256, 320, 384, 448, 512]))
        width = float(rng.choice([0.125, 0.25, 0.5, 0.75, 1.0]))
        layers = int(rng.choice([24, 33, 42]))
        pixels = side * side
        features.append(LatencyFeatures(
            macs=int(pixels * 2000 * width**2 * layers / 33 * rng.uniform(0.7, 1.3)),
            params=int(4e5 * width**2 * layers / 33), activation_mb=pixels * width * 2e-4, layers=layers,
            resolution=(side, side),
        ))
    return features


def sum_of_costs(f: LatencyFeatures) -> float:
    """A device whose compute scales as MACs^0.9, plus a cost per pixel, per layer and per call (ms)."""
    return 0.03 + (f.macs / 1e8) ** 0.9 + 1e-5 * f.pixels + 2e-3 * f.layers


def measured(law, features: list[LatencyFeatures], rng: np.random.Generator, noise: float) -> np.ndarray:
    return np.array([law(f) for f in features]) * np.exp(rng.normal(0.0, noise, len(features)))


def fitted(form: str, features, latency) -> LatencyModel:
    model = LatencyModel(form)
    model.extend(zip(features, latency), track=False)
    return model


def relative_errors(model: LatencyModel, features, truth) -> np.ndarray:
    return np.array([model.predict(f).median_ms for f in features]) / truth - 1.0


@pytest.mark.parametrize("law, noise", [(sum_of_costs, 0.03), (lambda f: 1.2 * (f.macs / 1e8) ** 0.9, 0.03)],
                         ids=["sum-of-costs", "power-law-0.9"])
def test_the_model_recovers_a_known_law_better_than_macs_alone(law, noise):
    rng = np.random.default_rng(0)
    train, test = synthetic_features(rng, 40), synthetic_features(rng, 200)
    latency, truth = measured(law, train, rng, noise), np.array([law(f) for f in test])
    baseline = baseline_model()
    baseline.extend(zip(train, latency), track=False)
    model_errors = np.abs(relative_errors(fitted("additive", train, latency), test, truth))
    baseline_errors = np.abs(relative_errors(baseline, test, truth))
    assert np.median(model_errors) < 0.8 * np.median(baseline_errors)
    assert np.mean(model_errors <= 0.10) > np.mean(baseline_errors <= 0.10)
    if law is sum_of_costs:  # the default form's own family: close to the noise
        assert np.median(model_errors) < 0.05
        assert np.mean(model_errors <= 0.10) > 0.9
        assert np.median(baseline_errors) > 0.3  # MACs alone miss the per-pixel and per-layer costs


def test_ranks_from_ten_measurements_beat_macs_alone():
    rng = np.random.default_rng(1)
    train, test = synthetic_features(rng, 10), synthetic_features(rng, 100)
    latency, truth = measured(sum_of_costs, train, rng, 0.05), np.array([sum_of_costs(f) for f in test])
    from scipy.stats import spearmanr

    def rho(model):
        return spearmanr([model.predict(f).median_ms for f in test], truth).statistic

    assert rho(fitted("additive", train, latency)) > rho(fitted("macs", train, latency)) + 0.02
    assert rho(fitted("additive", train, latency)) > 0.95


@pytest.mark.parametrize("noise", [0.03, 0.08])
def test_intervals_cover_about_their_share(noise):
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(5):
        train, test = synthetic_features(rng, 40), synthetic_features(rng, 100)
        model = fitted("additive", train, measured(sum_of_costs, train, rng, noise))
        covered += [model.predict(f).contains(y) for f, y in zip(test, measured(sum_of_costs, test, rng, noise))]
    assert 0.82 <= np.mean(covered) <= 0.98  # the model's coverage is 0.9


def test_intervals_narrow_as_measurements_arrive_and_widen_away_from_them():
    rng = np.random.default_rng(3)
    features = synthetic_features(rng, 60)
    latency = measured(sum_of_costs, features, rng, 0.03)
    probe = features[0]
    widths = []
    for count in (5, 15, 59):
        prediction = fitted("additive", features[1:count + 1], latency[1:count + 1]).predict(probe)
        widths.append(prediction.high_ms / prediction.low_ms)
    assert widths[0] > widths[1] > widths[2]
    small = [f for f in features if f.pixels <= 192 * 192]
    model = fitted("additive", small, [sum_of_costs(f) for f in small])
    near, far = LatencyFeatures(macs=small[0].macs, params=1000, activation_mb=1.0, layers=small[0].layers,
                                resolution=small[0].resolution), LatencyFeatures(
        macs=small[0].macs * 40, params=1000, activation_mb=1.0, layers=small[0].layers, resolution=(1024, 1024))
    assert model.predict(far).high_ms / model.predict(far).low_ms > model.predict(near).high_ms / model.predict(near).low_ms


def test_disagrees_flags_an_outlier_and_not_an_inlier():
    rng = np.random.default_rng(4)
    train, test = synthetic_features(rng, 30), synthetic_features(rng, 20)
    model = fitted("additive", train, measured(sum_of_costs, train, rng, 0.03))
    for f in test:
        assert not model.disagrees(f, sum_of_costs(f))
        assert model.disagrees(f, 2.5 * sum_of_costs(f))  # a disturbed measurement
        assert model.disagrees(f, sum_of_costs(f) / 2.5)
    assert not LatencyModel().disagrees(test[0], 1e6)  # nothing to disagree with yet


@pytest.mark.parametrize("seed", [0, 3])
def test_one_disturbed_measurement_does_not_bend_the_fit(seed):
    rng = np.random.default_rng(seed)
    train, test = synthetic_features(rng, 12), synthetic_features(rng, 50)
    latency = measured(sum_of_costs, train, rng, 0.02)
    truth = np.array([sum_of_costs(f) for f in test])
    clean = np.median(np.abs(relative_errors(fitted("additive", train, latency), test, truth)))
    latency[0] *= 4  # e.g. another process ran during that measurement (a least-squares fit then errs by 8-20 %)
    disturbed = np.median(np.abs(relative_errors(fitted("additive", train, latency), test, truth)))
    assert disturbed < clean + 0.02


def test_a_few_similar_networks_say_little_about_a_different_one():
    similar = [LatencyFeatures(macs=m, params=5000, activation_mb=0.3, layers=24, resolution=(96, 96))
               for m in (1_000_000, 1_100_000, 1_200_000)]
    model = LatencyModel()
    model.extend((f, f.macs * 2e-7) for f in similar)  # they agree exactly with latency = k * MACs
    wide = LatencyFeatures(macs=30_000_000, params=360_000, activation_mb=3.0, layers=24, resolution=(96, 96))
    assert model.predict(wide).contains(3 * 1_000_000 * 2e-7)  # 30x the MACs, only 3x the latency (as on a CPU)


def test_surely_slower_than_is_conservative():
    rng = np.random.default_rng(6)
    train, test = synthetic_features(rng, 20), synthetic_features(rng, 200)
    model = fitted("additive", train, measured(sum_of_costs, train, rng, 0.05))
    wrong = useful = 0
    for f in test:
        true_ms = sum_of_costs(f)
        for limit in (true_ms, true_ms * 1.05):  # the network meets this limit: skipping it would be wrong
            wrong += model.surely_slower_than(f, limit, margin=0.0)
        useful += model.surely_slower_than(f, true_ms / 2)  # it is twice over this limit
    assert wrong <= 0.01 * 2 * len(test)
    assert useful >= 0.8 * len(test)
    f = test[0]
    assert not model.surely_slower_than(f, sum_of_costs(f) / 1.05)  # 5 % over is within the default 10 % margin
    assert not LatencyModel().surely_slower_than(f, 1e-9)  # nothing measured yet: never sure


def test_few_measurements_fall_back_to_macs_scaling_with_wide_intervals():
    rng = np.random.default_rng(7)
    features = synthetic_features(rng, 30)
    latency = measured(sum_of_costs, features, rng, 0.03)
    model = LatencyModel()
    with pytest.raises(ValueError, match="no measurement yet"):
        model.predict(features[0])
    model.extend(zip(features[:2], latency[:2]))
    a, b = model.predict(features[5]), model.predict(features[6])
    assert a.form == "macs" and a.samples == 2
    assert a.median_ms / b.median_ms == pytest.approx(features[5].macs / features[6].macs)  # k * MACs
    assert a.high_ms / a.low_ms > 20  # says how little two measurements tell
    assert not model.surely_slower_than(features[5], a.median_ms / 3)
    model.extend(zip(features[2:20], latency[2:20]))
    c = model.predict(features[25])
    assert c.form == "additive" and c.samples == 20
    assert c.high_ms / c.low_ms < 2


def test_updates_keep_a_track_record_of_predictions_made_before_each_measurement():
    rng = np.random.default_rng(8)
    features = synthetic_features(rng, 40)
    latency = measured(sum_of_costs, features, rng, 0.03)
    model = LatencyModel()
    assert model.update(features[0], latency[0]) is None  # nothing to predict with before the first
    before = [model.update(f, y) for f, y in zip(features[1:], latency[1:])]
    assert all(isinstance(p, Prediction) for p in before)
    record = model.track_record()
    assert record.predicted == 40 - 4  # predictions of the additive form: from the 4th measurement on
    assert record.inside >= 0.8 and record.within_10pct >= 0.7 and record.median_abs_pct_error < 6


def test_round_trip_through_a_study_file():
    rng = np.random.default_rng(9)
    features = synthetic_features(rng, 12)
    model = LatencyModel(coverage=0.8)
    model.extend(zip(features, measured(sum_of_costs, features, rng, 0.03)))
    stored = json.loads(json.dumps(model.as_dict()))
    again = LatencyModel.from_dict(stored)
    assert again.samples == 12 and again.coverage == 0.8 and again.form.name == "additive"
    probe = synthetic_features(rng, 5)
    assert [again.predict(f) for f in probe] == [model.predict(f) for f in probe]
    assert again.track_record() == model.track_record()
    assert again.as_dict() == stored
    assert set(stored["fit"]["coefficients"]) == {"fixed", "macs", "pixels", "layers"}
    assert all(value >= 0 for value in stored["fit"]["coefficients"].values())
    empty = LatencyModel.from_dict(json.loads(json.dumps(LatencyModel("loglinear").as_dict())))
    assert empty.samples == 0 and empty.form.name == "loglinear"


def test_features_of_a_real_network_are_its_profile():
    network = Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1}, 96)
    features = LatencyFeatures.of(network)
    profile = profile_model(network.build(), network.input_shape)
    assert (features.macs, features.params) == (profile.macs, profile.params)
    assert features.activation_mb == pytest.approx(profile.activation_mb)
    assert features.resolution == (96, 96) and features.pixels == 96 * 96 and features.model == "fastscnn"
    assert dict(features.knobs) == {"a": 0.25, "t": 2, "r": 1, "pp": True}
    deeper = LatencyFeatures.of(Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 2}, 96))
    larger = LatencyFeatures.of(Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1}, 128))
    assert deeper.layers == features.layers + 3 * 3  # one more bottleneck (3 convolutions) in each of 3 groups
    assert larger.layers == features.layers and larger.params == features.params and larger.macs > features.macs
    assert LatencyFeatures.from_dict(json.loads(json.dumps(features.as_dict()))) == features


def test_a_model_from_study_records_keeps_one_measurement_per_fp32_plan():
    networks = [Network.create("fastscnn", {"a": a, "t": 2, "r": 1}, side) for a in (0.125, 0.25) for side in (96, 128, 160)]
    records = []
    for number, network in enumerate(networks):
        f = LatencyFeatures.of(network)
        records.append(TrialRecord.make(number, "complete", model="fastscnn", knobs=network.knob_dict,
                                        resolution=network.resolution_text, latency_ms=sum_of_costs(f), macs=f.macs,
                                        params=f.params, activation_mb=f.activation_mb))
    first = records[0]
    records += [
        TrialRecord.make(10, "complete", model="fastscnn", knobs=first.knobs, resolution=first.resolution,
                         latency_ms=99.0, macs=first.macs, params=first.params, activation_mb=first.activation_mb,
                         duplicate_of=0),  # a copy of trial 0's figures
        TrialRecord.make(11, "too_slow", model="fastscnn", knobs=first.knobs, resolution=first.resolution,
                         precision="int8", latency_ms=99.0, macs=first.macs, params=first.params,
                         activation_mb=first.activation_mb),  # another graph, another latency
        TrialRecord.make(12, "failed", model="fastscnn", knobs={"a": 1.0}, resolution="96"),  # never measured
    ]
    rows = measurements_of(records)
    assert len(rows) == len(networks)
    assert rows[0][0] == LatencyFeatures.of(networks[0])
    model = fit_from_records(records)
    assert model.samples == len(networks)
    probe = LatencyFeatures.of(Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1}, 192))
    assert model.predict(probe).median_ms == pytest.approx(sum_of_costs(probe), rel=0.25)
    assert fit_from_records(records, mode="int8").samples == 1


def test_every_form_predicts_and_bad_input_is_refused():
    rng = np.random.default_rng(10)
    features = synthetic_features(rng, 8)
    latency = measured(sum_of_costs, features, rng, 0.03)
    for name in FORMS:
        prediction = fitted(name, features, latency).predict(features[0])
        assert 0 < prediction.low_ms < prediction.median_ms < prediction.high_ms < math.inf
    with pytest.raises(UsageError, match="did you mean 'additive'"):
        LatencyModel("additiv")
    with pytest.raises(ValueError, match="latency_ms"):
        LatencyModel().update(features[0], -1.0)
    with pytest.raises(ValueError, match="latency_ms"):
        LatencyModel().update(features[0], float("nan"))
    with pytest.raises(ValueError, match="coverage"):
        LatencyModel(coverage=1.5)
    with pytest.raises(ValueError, match="positive"):
        LatencyFeatures(macs=0, params=1, activation_mb=1.0, layers=1, resolution=(96, 96))
