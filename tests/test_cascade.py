"""Cascades: per-image scores, the routers' training data, the operating curve, a study end to end, the deploy scripts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from optiseg.cascade import (
    CascadeMember,
    CascadeResult,
    CurveCosts,
    CurvePoint,
    PerImageScores,
    RidgeRouter,
    cascade_point,
    fold_assignment,
    oracle_curve,
    random_curve,
    router_curve,
    spearman,
    thresholds_for,
    write_cascade_deployment,
)
from optiseg.cascade._routers import LinearHead, RoutedModel
from optiseg.cascade._device_graph import export_device_graph
from optiseg.cascade._features import statistic_names
from optiseg.data import OriginalMasks, ResizedSplit
from optiseg.records import load_records
from optiseg.training.evaluate import per_image_confusions, score_onnx_predictions
from optiseg.training.metrics import confusion_matrix

FAST_MEASURE = {"threads": 1, "warmup": 1, "min_runs": 5, "min_seconds": 0}
LIMIT_MBPS = 5.0
BINARY = ("background", "foreground")


def scores_of(confusions, class_names=BINARY, binary=True, split="test") -> PerImageScores:
    confusions = np.asarray(confusions, np.int64)
    return PerImageScores(split=split, class_names=tuple(class_names), binary=binary, confusions=confusions,
                          names=tuple(f"img{i}" for i in range(len(confusions))))


# ---------------------------------------------------------------- 1. per-image quality


def test_per_image_iou_against_hand_computed_masks():
    truth = [np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8),
             np.zeros((4, 4), np.uint8),  # nothing to find
             np.zeros((4, 4), np.uint8)]
    predicted = [np.array([[0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8),
                 np.zeros((4, 4), np.uint8),  # ... and nothing found
                 np.eye(4, dtype=np.uint8)]  # 4 false positives
    # Logits that decide exactly the predicted masks (sigmoid > 0.5), at the masks' own size: no resize in the way.
    logits = [np.where(p[None] > 0, 4.0, -4.0).astype(np.float32) for p in predicted]
    images = ResizedSplit((4, 4), None, 3, (np.zeros((3, 4, 4, 3), np.uint8), np.stack(truth)))
    masks = OriginalMasks(None, 3, truth)
    calls = iter(logits)
    confusions = per_image_confusions(lambda batch: next(calls)[None], images, masks, num_classes=2, in_channels=3)

    scores = scores_of(confusions)
    # image 0: TP 3 (of 4 true), FP 1, FN 1 -> foreground IoU 3/5; background: TP 11, FP 1, FN 1 -> 11/13
    assert scores.class_iou[0] == pytest.approx([11 / 13, 3 / 5])
    assert np.isnan(scores.class_iou[1, 1]) and scores.class_iou[1, 0] == 1.0
    assert scores.class_iou[2] == pytest.approx([12 / 16, 0.0])
    assert scores.iou == pytest.approx([3 / 5, 1.0, 0.0])  # undefined foreground IoU counts as perfect
    assert scores.accuracy == pytest.approx([14 / 16, 1.0, 12 / 16]) and scores.correct.tolist() == [14, 16, 12]
    # the split's IoU is the sum of the images' matrices, as score_onnx_predictions computes it
    calls = iter(logits)
    split = score_onnx_predictions(lambda batch: next(calls)[None], images, masks, class_names=BINARY, binary=True, in_channels=3)
    assert scores.pooled().primary_iou == pytest.approx(split.primary_iou) == pytest.approx(3 / (4 + 4 + 1))

    three = scores_of([confusion_matrix(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 0]]), 3)], ("a", "b", "c"), binary=False)
    assert three.iou == pytest.approx([(1 / 2 + 1 + 1 / 2) / 3])  # mean over the classes present
    assert PerImageScores.from_dict(json.loads(json.dumps(scores.as_dict()))).confusions.tolist() == confusions.tolist()


# ---------------------------------------------------------------- 2. the routers' training data


def test_cross_fitting_keeps_each_image_away_from_the_model_that_scores_it(tmp_path):
    from optiseg.cascade import cross_fit_rows
    from optiseg.config import DataConfig, TrainingConfig
    from optiseg.data import load_dataset
    from optiseg.network import Network
    from optiseg.training import train_network

    dataset = load_dataset(DataConfig(root=tmp_path / "data", synthetic={"n": 16, "classes": 2, "width": 96, "height": 64}))
    network = Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1}, 64, num_classes=1)
    trained_on = []

    def recording_train(network, *, dataset, **kwargs):
        trained_on.append({s.stem for s in dataset.train})
        assert not {s.stem for s in dataset.test} & trained_on[-1]
        return train_network(network, dataset=dataset, **kwargs)

    deployed = network.build().eval()
    crossfit = cross_fit_rows(network, dataset=dataset, training=TrainingConfig(epochs=1, batch_size=4), folds=3,
                              folder=tmp_path / "crossfit", deployed=deployed, tapped="fused", train=recording_train)
    train_stems = {s.stem for s in dataset.train}
    assert len(trained_on) == 3 and [set(t) for t in crossfit.trained_on] == trained_on
    assert set().union(*map(set, crossfit.held_out)) == train_stems  # every training image is scored once ...
    for fold, held in enumerate(crossfit.held_out):
        assert not set(held) & set(crossfit.trained_on[fold])  # ... by the model that did not train on it
        assert set(crossfit.trained_on[fold]) | set(held) == train_stems
    rows = crossfit.rows
    assert len(rows) == len(train_stems)
    for source, scored_by in zip(rows.sources, rows.scored_by):
        fold = int(scored_by.removeprefix("fold-"))
        assert source.startswith("train/") and source.removeprefix("train/") not in crossfit.trained_on[fold]
    assert rows.pooled.shape[1] > 0 and rows.statistics.shape[1] == len(statistic_names(dataset.class_names))
    assert np.all((rows.iou >= 0) & (rows.iou <= 1)) and np.all((rows.accuracy > 0) & (rows.accuracy <= 1))

    with pytest.raises(ValueError, match="2 to 12 folds"):
        fold_assignment(12, 1, 0)
    folds = fold_assignment(12, 5, 0)
    assert sorted(np.bincount(folds).tolist()) == [2, 2, 2, 3, 3]


def test_the_default_router_rows_come_from_the_validation_split_only(tmp_path):
    from optiseg.cascade import rows_from_split
    from optiseg.cascade._scores import sample_names
    from optiseg.config import DataConfig
    from optiseg.data import DatasetCache, load_dataset
    from optiseg.network import Network

    dataset = load_dataset(DataConfig(root=tmp_path / "data", synthetic={"n": 16, "classes": 3, "width": 96, "height": 64}))
    cache = DatasetCache(dataset)
    network = Network.create("fastscnn", {"a": 0.25}, 64, num_classes=dataset.num_classes)
    rows = rows_from_split(network.build().eval(), images=cache.resized("val", (64, 64)), masks=cache.original_masks("val"),
                           names=sample_names(dataset.val), split="val", class_names=dataset.class_names, binary=False,
                           in_channels=3, num_logits=3, tapped="fused", flip=True)
    stems = {s.stem for s in dataset.val}
    assert {s.removeprefix("val/") for s in rows.sources} == stems and len(rows) == 2 * len(stems)
    assert rows.mirrored.sum() == len(stems) and len(np.unique(rows.groups)) == len(stems)
    assert rows.class_iou.shape == (len(rows), 3)


# ---------------------------------------------------------------- 3. the curve


COSTS = CurveCosts(device_ms=2.0, server_ms=10.0, upload_ms=3.0, download_ms=1.0, upload_bytes=3000, download_bytes=1000,
                   device_macs=100, server_macs=1000)


def test_curve_arithmetic_on_a_tiny_hand_made_case():
    # 4 images of 10 pixels; the small model misses 0, 2, 4 and 6 foreground pixels, the large one 0 or 1.
    small = scores_of([[[5, 0], [0, 5]], [[5, 0], [2, 3]], [[5, 0], [4, 1]], [[4, 0], [6, 0]]])
    large = scores_of([[[5, 0], [0, 5]], [[5, 0], [1, 4]], [[5, 0], [0, 5]], [[4, 0], [1, 5]]])
    assert small.iou == pytest.approx([1.0, 0.6, 0.2, 0.0])
    router = np.array([0.9, 0.5, 0.1, 0.3])  # ranks images 2, 3, 1, 0 from hardest
    curve = router_curve("learned", router, small, large, COSTS, points=5)
    assert [p.sent for p in curve] == [0, 1, 2, 3, 4]
    assert [p.threshold for p in curve] == pytest.approx([0.1, 0.2, 0.4, 0.7, np.nextafter(0.9, 1)])
    two = curve[2]  # images 2 and 3 sent
    assert two.share_sent == 0.5
    assert two.latency_ms == pytest.approx(2.0 + 0.5 * (3.0 + 10.0 + 1.0))
    assert two.device_latency_ms == 2.0 and two.server_latency_ms == pytest.approx(5.0)
    assert two.link_bytes == pytest.approx(2000.0) and two.macs == pytest.approx(100 + 500)
    # pooled foreground: TP 5+3+5+5, FP 0, FN 0+2+0+1
    assert two.iou == pytest.approx(18 / 21)
    assert two.mean_image_iou == pytest.approx((1.0 + 0.6 + 1.0 + 5 / 6) / 4)
    assert two.pixel_accuracy == pytest.approx((10 + 8 + 10 + 9) / 40)
    assert curve[0].iou == pytest.approx(9 / 21) and curve[-1].iou == pytest.approx(19 / 21)
    assert two.metrics()["fps"] == pytest.approx(1000 / 9.0) and set(two.metrics()) >= {
        "iou", "miou", "latency_ms", "latency_p90_ms", "device_latency_ms", "server_latency_ms", "link_bytes"}
    # Nine frames in ten: the device's time while at most a tenth are sent, else a sent frame's whole path.
    assert two.latency_p90_ms == pytest.approx(2.0 + 3.0 + 10.0 + 1.0) and curve[0].latency_p90_ms == 2.0
    one_in_twenty = cascade_point("baseline", 0.5, np.arange(20) == 0, scores_of([[[5, 0], [0, 5]]] * 20),
                                  scores_of([[[5, 0], [0, 5]]] * 20), COSTS)
    assert one_in_twenty.latency_p90_ms == 2.0 and one_in_twenty.latency_ms == pytest.approx(2.0 + 14.0 / 20)
    jittery = COSTS._replace(device_p90_ms=2.5, server_p90_ms=12.0)  # each part's p90 over runs, summed as split plans do
    assert router_curve("learned", router, small, large, jittery, points=5)[2].latency_p90_ms == pytest.approx(2.5 + 3.0 + 12.0 + 1.0)

    oracle = oracle_curve(small, large, COSTS, [p.sent for p in curve])
    assert oracle[1].iou == pytest.approx(14 / 21)  # the most pixels won first: image 3 (4 -> 9 right)
    assert [p.sent for p in oracle] == [0, 1, 2, 3, 4]

    assert len(thresholds_for(np.arange(100.0), 11)) == 11
    assert thresholds_for(np.ones(5), 4) == [1.0, float(np.nextafter(1.0, 2))]  # tied scores: none or all


def test_the_oracle_is_never_worse_than_a_router_at_equal_share_and_random_is_the_expectation():
    """On pixel accuracy the oracle is optimal at every share (a sum of per-image gains); the random router is the expectation."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 30
        total = 100
        small_tp = rng.integers(0, 60, n)
        large_tp = np.minimum(60, small_tp + rng.integers(0, 30, n))
        small = scores_of([[[total - 60, 0], [60 - t, t]] for t in small_tp])
        large = scores_of([[[total - 60, 0], [60 - t, t]] for t in large_tp])
        learned = router_curve("learned", rng.normal(size=n), small, large, COSTS, points=11)
        counts = [p.sent for p in learned]
        oracle = oracle_curve(small, large, COSTS, counts)
        for mine, best in zip(learned, oracle):
            assert best.sent == mine.sent and best.pixel_accuracy >= mine.pixel_accuracy - 1e-12
        random = random_curve(small, large, COSTS, counts, draws=400, seed=1)
        gain = (large.iou - small.iou).mean()
        accuracy_gain = (large.correct - small.correct).sum() / small.confusions.sum()
        for point in random:
            assert point.mean_image_iou == pytest.approx(small.iou.mean() + point.share_sent * gain, abs=0.01)
            assert point.pixel_accuracy == pytest.approx(small.accuracy.mean() + point.share_sent * accuracy_gain, abs=0.005)


@pytest.mark.parametrize("classes", [2, 4])
def test_the_random_router_averages_what_cascade_point_gives_each_draw(classes):
    rng = np.random.default_rng(classes)
    names = BINARY if classes == 2 else tuple(f"c{i}" for i in range(classes))
    small = scores_of(rng.integers(0, 20, (12, classes, classes)), names, binary=classes == 2)
    large = scores_of(rng.integers(0, 20, (12, classes, classes)), names, binary=classes == 2)
    [point] = random_curve(small, large, COSTS, [5], draws=50, seed=7)
    draws = np.random.default_rng(7)
    points = [cascade_point("random", None, np.isin(np.arange(12), draws.permutation(12)[:5]), small, large, COSTS) for _ in range(50)]
    assert point.iou == pytest.approx(np.mean([p.iou for p in points]))
    assert point.miou == pytest.approx(np.mean([p.miou for p in points]))
    assert point.mean_image_iou == pytest.approx(np.mean([p.mean_image_iou for p in points]))
    assert point.pixel_accuracy == pytest.approx(np.mean([p.pixel_accuracy for p in points]))
    assert point.latency_ms == pytest.approx(points[0].latency_ms) and point.sent == 5


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1.5, 1.5, 3.5, 3.5], [1, 2, 3, 4])[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ---------------------------------------------------------------- 4. a study end to end


@pytest.fixture(scope="module")
def multiclass_study(tmp_path_factory):
    """A finished two-network search on synthetic 3-class data (64 and 96 px)."""
    from conftest import run_cli

    folder = tmp_path_factory.mktemp("cascade-study")
    config = {
        "study": "belt3", "model": "fastscnn", "effort": "beginner", "resolution": 96,
        "search_space": {"resolution": [64, 96], "a": [0.25], "t": [2], "r": [1]},
        "mode": ["device", "cascade"],  # the search then adds the cascade of its two networks to the front
        "data": {"root": str(folder / "data"), "synthetic": {"n": 32, "classes": 3, "width": 128, "height": 96}},
        "training": {"epochs": 2, "batch_size": 4}, "device": {"kind": "local", "measure": FAST_MEASURE},
        "server": {"kind": "local", "name": "edge-server", "measure": FAST_MEASURE},
        "link": {"uplink_mbps": 50, "downlink_mbps": 100, "rtt_ms": 2},
        "constraints": {"max_uplink_mbps": LIMIT_MBPS},
        "budget": {"n_trials": 2}, "sampler": "grid", "output": str(folder / "runs"), "confirm": False,
    }
    path = folder / "belt3.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("search", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "belt3"


@pytest.mark.slow
def test_a_cascade_of_a_multiclass_study_end_to_end(cli, multiclass_study, tmp_path):
    trials = {t["resolution"]: str(t["trial"]) for t in json.loads(cli("front", str(multiclass_study), "--all", "--json").stdout)["trials"]
              if t["mode"] == "device"}
    pair = ("--small", trials["64x64"], "--large", trials["96x96"])
    first = cli("cascade", str(multiclass_study), *pair, "--json", "--points", "6", "--deploy", str(tmp_path / "deploy"))
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["small"]["network"]["resolution"] == "64x64" and result["large"]["network"]["resolution"] == "96x96"
    assert result["class_names"] == ["background", "package", "label"]
    assert set(result["curves"]) == {"decision", "baseline", "oracle", "random"}
    points, references = result["curves"]["decision"], result["references"]
    assert points[0]["share_sent"] == 0 and points[-1]["share_sent"] == 1
    assert points[0]["iou"] == pytest.approx(references["small"]["iou"])  # nothing sent: the small network's test IoU
    assert points[-1]["iou"] == pytest.approx(references["large"]["iou"])  # everything sent: the large one's
    assert [p["sent"] for p in result["curves"]["oracle"]] == [p["sent"] for p in points]
    for point in points:
        assert point["latency_ms"] == pytest.approx(point["device_latency_ms"] + point["share_sent"] * (
            result["costs"]["decision"]["upload_ms"] + result["costs"]["decision"]["server_ms"] + result["costs"]["decision"]["download_ms"]))
        assert point["link_bytes"] == pytest.approx(point["share_sent"] * (96 * 96 * 3 + 96 * 96))
    assert result["latencies"]["device-decision"]["median_ms"] > 0 and result["latencies"]["large"]["median_ms"] > 0
    assert result["router_fit"]["sources"] == ["val"] and result["notes"]["server"] == ""  # the study's server: section
    folder = Path(result["folder"])
    assert {p.name for p in (folder / "scores").iterdir()} == {f"{r}-{s}.json" for r in ("small", "large") for s in ("train", "val", "test")}
    deployed = {p.name for p in (tmp_path / "deploy").iterdir()}
    assert {"device.onnx", "server.onnx", "thresholds.json", "policy.json", "cascade_device.py", "cascade_server.py",
            "tensor_codec.py", "README.md"} <= deployed

    again = cli("cascade", str(multiclass_study), *pair, "--points", "6")  # reads curve.json back: nothing measured again
    assert again.returncode == 0, again.stderr
    assert "timing" not in again.stderr and "oracle IoU" in again.stdout and "random IoU" in again.stdout

    other = cli("cascade", str(multiclass_study), *pair, "--points", "3", "--json")  # another curve from the same files
    assert other.returncode == 0 and "timing" not in other.stderr and len(json.loads(other.stdout)["curves"]["decision"]) == 3


def test_cascade_command_errors_are_one_line(cli, tmp_path):
    none = cli("cascade")
    assert none.returncode == 2 and "give a STUDY" in none.stderr and "Traceback" not in none.stderr
    missing = cli("cascade", "--small-run", str(tmp_path), "--large-run", str(tmp_path), "--data", str(tmp_path))
    assert missing.returncode == 2 and "is not a finished training run: metrics.json is missing" in missing.stderr
    crossfit = cli("cascade", str(tmp_path), "--crossfit", "1")
    assert crossfit.returncode == 2 and "--crossfit 1 is invalid" in crossfit.stderr


@pytest.mark.slow
def test_trials_that_do_not_exist_or_were_not_trained_are_refused(cli, multiclass_study):
    result = cli("cascade", str(multiclass_study), "--small", "99")
    assert result.returncode == 2 and "has no trial 99" in result.stderr and "Traceback" not in result.stderr
    same = cli("cascade", str(multiclass_study), "--small", "0", "--large", "0")
    assert same.returncode == 2 and "are the same" in same.stderr


@pytest.mark.slow
def test_cascade_points_join_the_front_without_training(cli, multiclass_study, tmp_path):
    study = optuna.load_study(study_name="belt3", storage=f"sqlite:///{multiclass_study / 'optuna.db'}")
    trial_records = load_records(study)
    trained = [r for r in trial_records if r.mode == "device" and r.status == "complete"]
    cascades = [r for r in trial_records if r.mode == "cascade"]
    assert len(trained) == 2 and all(r.trained for r in trained)
    assert len(cascades) >= 3 and all(r.status == "complete" and not r.trained for r in cascades)
    small = min(trained, key=lambda r: r.latency_ms)
    large = max(trained, key=lambda r: r.iou)
    for r in cascades:
        details = r.evaluation.details["cascade"]
        assert r.derived_from == (details["small_trial"], details["large_trial"])
        assert (details["small_trial"], details["large_trial"]) == (small.number, large.number)
        assert [n.key for n in r.plan.networks] == [small.network.key, large.network.key]
        costs = details["costs"]
        share = details["share_sent"]
        assert r.latency_ms == pytest.approx(r.metric("device_latency_ms") + share * (costs["upload_ms"] + costs["server_ms"] + costs["download_ms"]))
        assert r.metric("link_bytes") == pytest.approx(share * costs["upload_bytes"])  # device to server only
        assert r.metric("uplink_mbps") == pytest.approx(r.metric("link_bytes") * 8 * r.metric("fps") / 1e6)
        assert r.constraints["max_uplink_mbps"] == pytest.approx(r.metric("uplink_mbps") - LIMIT_MBPS)
        assert r.feasible == (r.metric("uplink_mbps") <= LIMIT_MBPS)
    shares = sorted(r.evaluation.details["cascade"]["share_sent"] for r in cascades)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert any(not r.feasible for r in cascades)  # sending every frame needs more than the limit

    front = json.loads(cli("front", str(multiclass_study), "--all", "--json").stdout)
    rows = {row["trial"]: row for row in front["trials"]}
    assert all(rows[r.number]["mode"] == "cascade" and rows[r.number]["derived_from"] == [small.number, large.number]
               for r in cascades)

    chosen = next(r for r in cascades if 0 < r.evaluation.details["cascade"]["share_sent"] < 1)
    out = tmp_path / "deploy"
    deployed = cli("deploy", str(multiclass_study), "--trial", str(chosen.number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert {"device.onnx", "server.onnx", "thresholds.json", "policy.json", "cascade_device.py", "cascade_server.py",
            "tensor_codec.py", "README.md", "metrics.json"} <= {p.name for p in out.iterdir()}
    table = json.loads((out / "thresholds.json").read_text())
    assert table["default_threshold"] == float(chosen.plan.knob_dict["threshold"]) == chosen.evaluation.details["cascade"]["threshold"]

    again = cli("search", str(multiclass_study.parent.parent / "belt3.yaml"), "--json")  # resumed: the pair's plans are stored
    assert again.returncode == 0, again.stderr
    assert len([r for r in load_records(study) if r.mode == "cascade"]) == len(cascades)
    assert json.loads(again.stdout)["finished_this_run"] == 0


def _study_pair(study_folder: Path):
    """The study's trials, its cascade plans' pair (small, large) and the cascade's folder."""
    from optiseg.cascade import pick_pair

    study = optuna.load_study(study_name="belt3", storage=f"sqlite:///{study_folder / 'optuna.db'}")
    trial_records = load_records(study)
    small, large = pick_pair(trial_records, study_folder, "belt3")
    return trial_records, small, large, study_folder / "cascades" / f"{small.network.key}+{large.network.key}"


@pytest.mark.slow
def test_two_workers_building_one_cascade_store_its_plans_once(multiclass_study, tmp_path, monkeypatch):
    """Workers that finish a study at once: one builds the cascade and stores its points, the other waits and finds them."""
    from optiseg import records
    from optiseg.cascade import add_cascade_trials, build_cascade, cascade_runners, study_member
    from optiseg.config import load_config
    from optiseg.data import DatasetCache, load_dataset
    from optiseg.modes import get_mode
    from optiseg.plans import Evaluation

    _, small, large, built = _study_pair(multiclass_study)
    folder = tmp_path / "cascade"
    shutil.copytree(built, folder, ignore=shutil.ignore_patterns("curve.json", "curves", ".lock"))  # its parts; the curve is made again
    config = load_config(multiclass_study.parent.parent / "belt3.yaml").config
    cache = DatasetCache(load_dataset(config.data))
    study = optuna.create_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'workers.db'}")
    read_plans = records.load_records
    both_read = threading.Barrier(2)

    def load_records_together(study):  # both workers read the stored plans before either stores any: the race, made certain
        try:
            both_read.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass  # the other worker waits for the lock: it reads once this one has stored
        return read_plans(study)

    monkeypatch.setattr(records, "load_records", load_records_together)
    stages, added, errors = ([], []), [None, None], []

    def worker(index: int) -> None:
        try:
            result = build_cascade(study_member(multiclass_study, small), study_member(multiclass_study, large), cache=cache,
                                   runners=lambda: cascade_runners(config.device, config.server), link=config.link,
                                   folder=folder, stage=stages[index].append)
            mode = get_mode("cascade")
            plans = [(mode.pair_plan(small.network, large.network, p.threshold), Evaluation(metrics=p.metrics()), {})
                     for p in result.points]
            added[index] = add_cascade_trials(study, folder, plans, artifacts="cascade", worker=f"worker-{index}",
                                              derived_from=(small.number, large.number))
        except Exception as exc:  # noqa: BLE001  (reported by the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    stored = [r for r in read_plans(study) if r.mode == "cascade"]
    points = json.loads((folder / "curve.json").read_text())["result"]["curves"]["decision"]
    assert len(stored) == len(points) == len({r.plan_key for r in stored})  # exactly one set of plans
    assert sorted(added[0] + added[1]) == sorted(r.number for r in stored) and [] in added  # ... all stored by one worker
    assert sum(any(text.startswith("scoring") for text in worker_stages) for worker_stages in stages) == 1  # one built it
    assert not (folder / "curves").exists()  # the other read its curve back


@pytest.mark.slow
def test_a_build_waiting_for_another_holds_no_runner(multiclass_study, tmp_path):
    """A worker that finds another building the cascade waits without a runner (a device pool's machine stays free
    for the study's other workers), then takes its runners and reuses what the other made."""
    from contextlib import contextmanager

    from optiseg.cascade import build_cascade, cascade_lock, cascade_runners, study_member
    from optiseg.config import load_config
    from optiseg.data import DatasetCache, load_dataset

    _, small, large, built = _study_pair(multiclass_study)
    folder = tmp_path / "cascade"
    shutil.copytree(built, folder, ignore=shutil.ignore_patterns("curve.json", "curves", ".lock"))
    config = load_config(multiclass_study.parent.parent / "belt3.yaml").config
    cache = DatasetCache(load_dataset(config.data))
    held, opened, waiting_with = [0], [0], []

    @contextmanager
    def counted_runners():
        with cascade_runners(config.device, config.server) as pair:
            held[0] += 1
            opened[0] += 1
            try:
                yield pair
            finally:
                held[0] -= 1

    def stage(text: str) -> None:
        if "waiting for it" in text:
            waiting_with.append(held[0])
            released.set()

    released, outcome = threading.Event(), {}

    def worker() -> None:
        try:
            outcome["result"] = build_cascade(study_member(multiclass_study, small), study_member(multiclass_study, large),
                                              cache=cache, runners=counted_runners, link=config.link, folder=folder, stage=stage)
        except Exception as exc:  # noqa: BLE001  (reported below)
            outcome["error"] = exc
            released.set()

    with cascade_lock(folder):  # another worker is building
        thread = threading.Thread(target=worker)
        thread.start()
        assert released.wait(timeout=120)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert waiting_with == [0]  # no runner held while it waited
    assert opened[0] == 2 and held[0] == 0  # one look before the lock, one build under it; both closed
    assert outcome["result"].points and (folder / "curve.json").exists()


@pytest.mark.slow
def test_a_moved_study_folder_still_finds_its_cascade(multiclass_study, tmp_path):
    """The cascade's files keep their paths relative to its folder; files of the older format (absolute paths) still read."""
    from optiseg.cascade import find_cascade_result, read_cascade_result
    from optiseg.layout import StudyLayout

    first, moved = tmp_path / "first" / "belt3", tmp_path / "second" / "belt3"
    shutil.copytree(multiclass_study, first)
    moved.parent.mkdir()
    first.rename(moved)  # nothing is left where the study was
    trial_records, _, _, _ = _study_pair(moved)
    chosen = next(r for r in trial_records if r.mode == "cascade" and 0 < r.evaluation.details["cascade"]["share_sent"] < 1)
    folder = StudyLayout(moved).network_at(chosen.artifacts).path
    threshold = float(chosen.plan.knob_dict["threshold"])
    result = find_cascade_result(folder, threshold)
    assert result is not None and result.curve_file == folder / "curve.json" and result.folder == folder
    for path in (result.device_model, result.large.onnx, result.small.onnx, result.small.checkpoint):
        assert path.is_file() and moved in path.parents  # found in the moved folder, not where the cascade was built
    kept = json.loads((folder / "curve.json").read_text())["result"]
    assert not any(Path(p).is_absolute() for p in (*kept["device_models"].values(), kept["small"]["onnx"], kept["large"]["onnx"]))
    written = write_cascade_deployment(result, tmp_path / "deploy", threshold=threshold)
    assert {"device.onnx", "server.onnx", "thresholds.json"} <= {p.name for p in written}
    assert json.loads((tmp_path / "deploy" / "thresholds.json").read_text())["default_threshold"] == threshold

    older = json.dumps(result.as_dict())  # the older format: absolute paths
    (folder / "curve.json").write_text(json.dumps({"key": {}, "result": json.loads(older.replace(str(moved), str(first)))}))
    legacy = read_cascade_result(folder)  # written before the move: found at the same place below the folder
    assert legacy.device_model == result.device_model and legacy.large.onnx == result.large.onnx
    (folder / "curve.json").write_text(json.dumps({"key": {}, "result": json.loads(older.replace(str(moved), str(multiclass_study)))}))
    elsewhere = read_cascade_result(folder)  # absolute paths that exist are kept
    assert elsewhere.device_model == multiclass_study / result.device_model.relative_to(moved)
    as_given = json.loads(older)
    as_given["large"]["onnx"] = "runs/train/large/model.onnx"  # an older file's path as the user gave it (-o, --large-run)
    (folder / "curve.json").write_text(json.dumps({"key": {}, "result": as_given}))
    assert read_cascade_result(folder).large.onnx == Path("runs/train/large/model.onnx")  # still read as given, not below the folder
    as_given["device_models"] = {k: Path(v).name for k, v in as_given["device_models"].items()}  # relative, and below it
    (folder / "curve.json").write_text(json.dumps({"key": {}, "result": as_given}))
    assert read_cascade_result(folder).device_model == result.device_model


@pytest.mark.slow
def test_optiseg_deploy_of_a_cascade_plan_from_a_moved_study_folder(cli, multiclass_study, tmp_path):
    first, moved = tmp_path / "first" / "belt3", tmp_path / "second" / "belt3"
    shutil.copytree(multiclass_study, first)
    moved.parent.mkdir()
    first.rename(moved)
    trial_records, _, _, folder = _study_pair(moved)
    chosen = next(r for r in trial_records if r.mode == "cascade" and 0 < r.evaluation.details["cascade"]["share_sent"] < 1)
    assert chosen.evaluation.details["cascade"]["folder"] == chosen.artifacts  # relative to the study folder
    out = tmp_path / "deploy"
    deployed = cli("deploy", str(moved), "--trial", str(chosen.number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert (out / "device.onnx").read_bytes() == (folder / "device-decision.onnx").read_bytes()
    assert (out / "curve.json").read_bytes() == (folder / "curve.json").read_bytes() and "`curve.json`" in (out / "README.md").read_text()
    table = json.loads((out / "thresholds.json").read_text())
    assert table["default_threshold"] == float(chosen.plan.knob_dict["threshold"])


@pytest.mark.slow
def test_a_curve_of_other_settings_leaves_the_curve_of_the_studys_plans_alone(cli, multiclass_study, tmp_path):
    trial_records, _, _, folder = _study_pair(multiclass_study)
    cascades = [r for r in trial_records if r.mode == "cascade"]
    curve = folder / "curve.json"
    before = curve.read_bytes()
    thresholds = sorted(float(r.plan.knob_dict["threshold"]) for r in cascades)
    assert [p["threshold"] for p in json.loads(before)["result"]["curves"]["decision"]] == thresholds  # the plans' curve

    own = cli("cascade", str(multiclass_study), "--json")  # the study's settings: its curve, read back
    assert own.returncode == 0, own.stderr
    assert Path(json.loads(own.stdout)["curve_file"]).resolve() == curve.resolve() and "scoring" not in own.stderr
    other = cli("cascade", str(multiclass_study), "--points", "3", "--json")
    assert other.returncode == 0, other.stderr
    result = json.loads(other.stdout)
    kept = Path(result["curve_file"])
    assert kept.parent.resolve() == (folder / "curves").resolve() and kept.is_file() and len(result["curves"]["decision"]) == 3
    assert curve.read_bytes() == before
    table = cli("cascade", str(multiclass_study), "--points", "3")
    assert table.returncode == 0 and "scoring" not in table.stderr and "curves/" in table.stdout  # read back, and where from
    curve.rename(tmp_path / "aside.json")  # before the study's own build: the command still leaves curve.json to the study
    early = cli("cascade", str(multiclass_study), "--json")
    assert early.returncode == 0, early.stderr
    assert Path(json.loads(early.stdout)["curve_file"]).parent.resolve() == (folder / "curves").resolve() and not curve.exists()
    (tmp_path / "aside.json").rename(curve)

    chosen = next(r for r in cascades if 0 < r.evaluation.details["cascade"]["share_sent"] < 1)
    deployed = cli("deploy", str(multiclass_study), "--trial", str(chosen.number), "-o", str(tmp_path / "deploy"))
    assert deployed.returncode == 0, deployed.stderr
    table = json.loads((tmp_path / "deploy" / "thresholds.json").read_text())
    assert [p["threshold"] for p in table["points"]] == thresholds  # the curve the plan was stored from
    assert table["default_threshold"] == float(chosen.plan.knob_dict["threshold"])

    curve.rename(tmp_path / "aside.json")  # the plan's curve gone: a clear refusal, nothing written
    refused = cli("deploy", str(multiclass_study), "--trial", str(chosen.number), "-o", str(tmp_path / "nothing"))
    (tmp_path / "aside.json").rename(curve)
    assert refused.returncode == 1 and "the curve this cascade plan" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "nothing").exists()


def test_curve_json_is_written_once_by_the_folders_owner(tmp_path):
    """The owner's first curve stays curve.json (its plans were made from it); every other curve goes beside it."""
    from optiseg.cascade._build import curve_path

    assert curve_path(tmp_path, {"points": 21}, owner=True) == tmp_path / "curve.json"  # free: the owner takes it
    assert curve_path(tmp_path, {"points": 21}, owner=False).parent == tmp_path / "curves"  # not the owner: never
    (tmp_path / "curve.json").write_text(json.dumps({"key": {"points": 21}, "result": {}}))
    assert curve_path(tmp_path, {"points": 21}, owner=False) == tmp_path / "curve.json"  # the same curve: read back
    other = curve_path(tmp_path, {"points": 21, "device": "local:other-host"}, owner=True)
    assert other.parent == tmp_path / "curves" and other != curve_path(tmp_path, {"points": 3}, owner=True)
    (tmp_path / "curve.json").write_text("{torn")
    assert curve_path(tmp_path, {"points": 3}, owner=True) == tmp_path / "curve.json"  # a torn file is made again


def test_a_curve_point_kept_before_p90s_reads_back_with_one_from_its_medians():
    sent_half = cascade_point("baseline", 0.5, np.array([True, False]), scores_of([[[1, 0], [0, 1]]] * 2),
                              scores_of([[[1, 0], [0, 1]]] * 2), COSTS).as_dict()
    del sent_half["latency_p90_ms"]
    assert CurvePoint.from_dict(sent_half).latency_p90_ms == pytest.approx(2.0 + 3.0 + 10.0 + 1.0)


def test_a_cascade_alone_is_a_config_error(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"study": "c", "model": "fastscnn", "mode": ["cascade"], "data": {"root": str(tmp_path)},
                                      "server": {"kind": "local"}, "link": {"uplink_mbps": 10, "rtt_ms": 1}}))
    result = cli("search", str(config))
    assert result.returncode == 2 and "pairs networks the search trains" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- 5. the deploy scripts over a socket


def _binary_network(seed: int, side: int, bias: float = 0.0):
    from optiseg.network import Network

    network = Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1}, side, num_classes=1)
    torch.manual_seed(seed)
    model = network.build().eval()
    with torch.no_grad():
        model.classifier[-1].bias.add_(bias)
    return network, model


def _hand_made_cascade(folder: Path, images: list[np.ndarray]) -> tuple[CascadeResult, np.ndarray]:
    """Two untrained networks, a ridge router on the predicted foreground area; returns the result and each image's score."""
    from optiseg.export import export_onnx
    from optiseg.training.evaluate import onnx_predictor, to_model_input

    small_net, small = _binary_network(0, 64)
    large_net, large = _binary_network(1, 96, bias=20.0)  # foreground everywhere: its answers are recognizable
    names = statistic_names(BINARY)
    weights = np.zeros(len(names))
    weights[names.index("area_foreground")] = 1.0
    ridge = RidgeRouter(feature_names=names, mean=np.zeros(len(names)), scale=np.ones(len(names)), weights=weights, bias=0.0, alpha=1.0)
    routed = RoutedModel(small, LinearHead(ridge), num_logits=1).eval()
    device = export_device_graph(routed, folder / "device-baseline.onnx", small=small_net, large=large_net, router="baseline", target="iou",
                                 class_names=BINARY, example=np.asarray(images[0][:64, :64]))
    large_onnx = export_onnx(large, folder / "large.onnx", large_net, class_names=BINARY).path
    predict = onnx_predictor(device, output="quality")
    scores = np.array([float(predict(to_model_input(_resized(i, 64)[None], 3, torch.device("cpu")).contiguous().numpy())[0])
                       for i in images])
    point = cascade_point("baseline", float(scores.mean()), np.array([True, False]), scores_of([[[1, 0], [0, 1]]] * 2),
                          scores_of([[[1, 0], [0, 1]]] * 2), COSTS)
    result = CascadeResult(
        folder=folder, small=CascadeMember(small_net, folder / "small.onnx"), large=CascadeMember(large_net, large_onnx),
        router="baseline", target="iou", curves={"baseline": (point,)}, references={"small": point, "large": point},
        costs={"baseline": COSTS}, rank_correlation={}, router_fit={}, per_image={}, latencies={},
        measured_on={"device": "local", "server": "local", "link": "test"}, device_models={"baseline": device}, class_names=BINARY,
    )
    return result, scores


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((side, side), Image.BILINEAR), dtype=np.uint8)


def _expected_mask(onnx_path: Path, image: np.ndarray, side: int, output: str | None = None) -> np.ndarray:
    from PIL import Image

    from optiseg.training.evaluate import onnx_predictor, to_model_input

    logits = onnx_predictor(onnx_path)(to_model_input(_resized(image, side)[None], 3, torch.device("cpu")).contiguous().numpy())[0]
    mask = ((logits[0] > 0).astype(np.uint8)) * 255
    return np.asarray(Image.fromarray(mask).resize((image.shape[1], image.shape[0]), Image.NEAREST))


def test_deploy_scripts_send_the_hard_image_to_the_server_over_a_socket(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    bright = np.clip(rng.normal(200, 40, (72, 120, 3)), 0, 255).astype(np.uint8)
    dark = np.clip(rng.normal(40, 20, (72, 120, 3)), 0, 255).astype(np.uint8)
    dark[20:50, 30:90] = 230
    images = [bright, dark]
    result, scores = _hand_made_cascade(tmp_path, images)
    assert scores[0] != scores[1]
    threshold = float(scores.mean())
    hard, easy = (0, 1) if scores[0] < scores[1] else (1, 0)
    out = tmp_path / "deploy"
    write_cascade_deployment(result, out, threshold=threshold)
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"image{index}.png")
        Image.fromarray(image).save(paths[-1])
    expected_small = [_expected_mask(out / "device.onnx", image, 64) for image in images]
    expected_large = [_expected_mask(out / "server.onnx", image, 96) for image in images]
    assert not np.array_equal(expected_small[hard], expected_large[hard])  # the test can tell who answered

    server = subprocess.Popen([sys.executable, str(out / "cascade_server.py"), str(out / "server.onnx"), "--port", "0",
                               "--max-requests", "1", "--threads", "1"], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = json.loads(server.stderr.readline())["listening"]
        device = subprocess.run([sys.executable, str(out / "cascade_device.py"), str(out / "device.onnx"), *map(str, paths),
                                 "--server", address, "-o", str(tmp_path / "masks"), "--threads", "1"],
                                cwd=out, capture_output=True, text=True, timeout=60)
        assert device.returncode == 0, device.stderr
        served = json.loads(server.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        server.kill()
    report = json.loads(device.stdout)  # exactly one JSON line
    assert len(device.stdout.strip().splitlines()) == 1 and report["sent"] == 1 and served["served"] == 1
    routes = [entry["route"] for entry in report["images"]]
    assert routes[hard] == "server" and routes[easy] == "device"
    assert report["images"][0]["threshold_from"] == "table default" and report["images"][0]["threshold"] == pytest.approx(threshold)
    masks = [np.asarray(Image.open(tmp_path / "masks" / f"image{i}.png")) for i in range(2)]
    assert np.array_equal(masks[hard], expected_large[hard]) and np.array_equal(masks[easy], expected_small[easy])

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": 2.0, "battery": [{"below": 20, "threshold": -1.0}]}))
    low = subprocess.run([sys.executable, str(out / "cascade_device.py"), str(out / "device.onnx"), *map(str, paths),
                          "--server", address, "--policy", str(policy), "--battery", "10", "-o", str(tmp_path / "m2")],
                         cwd=out, capture_output=True, text=True, timeout=60)
    entries = json.loads(low.stdout)["images"]
    assert low.returncode == 0 and all(e["route"] == "device" for e in entries)
    assert entries[0]["threshold_from"] == "battery 10 % < 20 %"
    full = subprocess.run([sys.executable, str(out / "cascade_device.py"), str(out / "device.onnx"), str(paths[0]),
                           "--server", address, "--policy", str(policy), "--battery", "90", "-o", str(tmp_path / "m3")],
                          cwd=out, capture_output=True, text=True, timeout=60)
    entry = json.loads(full.stdout)["images"][0]  # default 2.0: send, but the server has stopped -> the small mask stays
    assert entry["route"] == "device" and "unreachable" in entry["fallback"] and entry["threshold_from"] == "policy default"
