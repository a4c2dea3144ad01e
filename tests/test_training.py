"""Training one candidate: binary and multi-class runs, resume, stored results, refusals, early stopping."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from _datasets import data_config, synthetic
from optiseg.checkpoint import load_checkpoint
from optiseg.config import TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.errors import UsageError
from optiseg.network import Network
from optiseg.training import Reporter, train_network

FAST = {"a": 0.25, "t": 2, "r": 1, "pp": 1}
RESOLUTION = (64, 64)


def settings(**fields) -> TrainingConfig:
    return TrainingConfig.model_validate({"epochs": 1, "batch_size": 4, **fields})


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return load_dataset(data_config(synthetic(tmp_path_factory.mktemp("bin") / "data", n=20)))


@pytest.fixture(scope="module")
def cache(binary):
    return DatasetCache(binary)


class Recorder(Reporter):
    def __init__(self):
        self.events = []

    def on_epoch_start(self, epoch, epochs):
        self.events.append(("start", epoch, epochs))

    def on_epoch_end(self, epoch, epochs, metrics):
        self.events.append(("end", epoch, epochs, metrics["val_loss"]))


def test_binary_training_writes_the_run_folder(binary, cache, tmp_path):
    recorder = Recorder()
    result = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(epochs=2), run_dir=tmp_path,
                             cache=cache, reporter=recorder, export_onnx=True)
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.json", "model.onnx", "train.log"}
    assert [e[:3] for e in recorder.events] == [("start", 1, 2), ("end", 1, 2), ("start", 2, 2), ("end", 2, 2)]
    m = result.metrics
    assert m["epochs_run"] == 2 and m["num_classes"] == 1 and len(result.history) == 2
    assert 0.0 <= m["test_iou"] <= 1.0 and set(m["test_class_iou"]) == {"background", "foreground"}
    assert m["test_iou"] == m["test_class_iou"]["foreground"]
    assert m["best_epoch"] in (1, 2) and m["seconds_per_epoch"] > 0 and m["images_per_second"] > 0
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["test_iou"] == m["test_iou"] and len(stored["history"]) == 2
    best = load_checkpoint(result.checkpoint)
    assert best["epoch"] == m["best_epoch"] and best["class_names"] == ["background", "foreground"]
    graph = onnx.load(str(result.onnx))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["class_names"] == '["background", "foreground"]' and meta["resolution"] == "64x64"


def test_multi_class_luma_training_with_finer_masks(tmp_path):
    root = synthetic(tmp_path / "data", n=16, classes=4, size=(192, 128))
    dataset = load_dataset(data_config(root, masks="index", classes=["background", "package", "label", "tape"]))
    assert dataset.num_classes == 4
    result = train_network(Network.create("fastscnn", FAST, (64, 96), in_channels=1, num_classes=dataset.num_classes), dataset=dataset,
                             training=settings(dice_weight=0.5, label_scale=3), run_dir=tmp_path / "run", export_onnx=False)
    m = result.metrics
    assert result.onnx is None and m["in_channels"] == 1
    assert "masks at 2x the input size" in (tmp_path / "run" / "train.log").read_text()  # 3 lowered to the images' size
    assert list(m["test_class_iou"]) == ["background", "package", "label", "tape"]
    assert m["test_iou"] == m["test_miou"]


def test_bisenetv2_trains_with_batches_of_two(binary, cache, tmp_path):
    result = train_network(Network.create("bisenetv2", {"a": 0.25, "head_mid": 16}, RESOLUTION, num_classes=binary.num_classes), dataset=binary,
                             training=settings(batch_size=2), run_dir=tmp_path, cache=cache, export_onnx=False)
    assert result.metrics["epochs_run"] == 1


def test_a_learnable_task_is_learned(binary, cache, tmp_path):
    result = train_network(Network.create("fastscnn", {"a": 0.5, "t": 2, "r": 1}, RESOLUTION, num_classes=binary.num_classes), dataset=binary,
                             training=settings(epochs=30, lr=0.01), run_dir=tmp_path, cache=cache, export_onnx=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    # Tiny packages at 64x64 after 30 short epochs: about 0.5; an untrained or broken network scores 0.
    assert result.metrics["val_iou"] > 0.3 and result.metrics["test_iou"] > 0.3


def test_resumed_run_equals_an_uninterrupted_one(binary, cache, tmp_path):
    straight = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(epochs=2),
                               run_dir=tmp_path / "straight", cache=cache, export_onnx=False)

    class StopAfterFirstEpoch(Reporter):
        def on_epoch_end(self, epoch, epochs, metrics):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(epochs=2),
                        run_dir=tmp_path / "split", cache=cache, reporter=StopAfterFirstEpoch(), export_onnx=False)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "split" / "metrics.json").exists()
    resumed = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(epochs=2),
                              run_dir=tmp_path / "split", cache=cache, export_onnx=False)
    assert resumed.metrics["resumed_from"] == [1] and resumed.metrics["epochs_run"] == 2
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    assert "resumed from checkpoint.pt after epoch 1/2" in (tmp_path / "split" / "train.log").read_text()


def test_the_fused_optimizer_changes_how_a_run_trains_not_what(binary, cache, tmp_path):
    from optiseg.training._run_folder import run_identity

    network = Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes)
    runs = {fused: train_network(network, dataset=binary, training=settings(epochs=2, fused_optimizer=fused),
                                 run_dir=tmp_path / str(fused), cache=cache, export_onnx=False) for fused in (True, False)}
    fused, loop = ([h["train_loss"] for h in runs[flag].history] for flag in (True, False))
    assert fused == pytest.approx(loop, rel=1e-3)  # the same Adam update, in one kernel over every parameter
    assert run_identity(network, binary, settings(fused_optimizer=False)) == run_identity(network, binary, settings())

    class StopAfterFirstEpoch(Reporter):
        def on_epoch_end(self, epoch, epochs, metrics):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # begun with torch's loop over parameters ...
        train_network(network, dataset=binary, training=settings(epochs=2, fused_optimizer=False), run_dir=tmp_path / "switch",
                      cache=cache, reporter=StopAfterFirstEpoch(), export_onnx=False)
    resumed = train_network(network, dataset=binary, training=settings(epochs=2), run_dir=tmp_path / "switch", cache=cache,
                            export_onnx=False)  # ... resumed with the fused kernel, from the same optimizer state
    assert resumed.metrics["resumed_from"] == [1]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(loop, rel=1e-3)


def test_finished_run_is_returned_without_training_and_other_runs_are_refused(binary, cache, tmp_path):
    first = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(), run_dir=tmp_path,
                            cache=cache, export_onnx=False)
    recorder = Recorder()
    again = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(), run_dir=tmp_path,
                            cache=cache, reporter=recorder, export_onnx=False)
    assert recorder.events == [] and again.metrics == first.metrics
    for change in ({"knobs": {**FAST, "a": 0.5}}, {"resolution": (96, 64)}, {"training": settings(lr=0.01)}):
        call = {"knobs": FAST, "resolution": RESOLUTION, "training": settings(), **change}
        with pytest.raises(UsageError, match="holds another training run"):
            train_network(Network.create("fastscnn", call["knobs"], call["resolution"], num_classes=binary.num_classes), dataset=binary, training=call["training"],
                            run_dir=tmp_path, cache=cache, export_onnx=False)
    # Asking for the ONNX file later exports it from the stored best weights.
    exported = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(), run_dir=tmp_path,
                               cache=cache, reporter=recorder, export_onnx=True)
    assert exported.onnx is not None and exported.onnx.is_file() and recorder.events == []


def test_early_stopping_and_selection_by_iou(binary, cache, tmp_path):
    result = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary,
                             training=settings(epochs=5, lr=1e-12, patience=1, select_by="val_iou"),
                             run_dir=tmp_path, cache=cache, export_onnx=False)
    assert result.metrics["stopped_early"] and result.metrics["epochs_run"] == 2 and result.metrics["best_epoch"] == 1
    assert "stopping early" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("written, train_images, batch_size, lr", [
    ({}, 300, 16, 0.006),  # 40 epochs of 300 images: 16 at 3e-3 x sqrt(16 / 4), 720 steps
    ({"epochs": 30}, 300, 8, 0.003 * 2**0.5),  # shorter trainings keep their steps with smaller batches
    ({"epochs": 20}, 300, 8, 0.003 * 2**0.5),
    ({"epochs": 10}, 300, 4, 0.003),
    ({"epochs": 25}, 150, 4, 0.003),  # the quickstart's
    ({"epochs": 1}, 30000, 16, 0.006),
    ({}, 20, 4, 0.003),  # never below 4 for the steps' sake ...
    ({}, 5, 2, 0.003 * (2 / 4) ** 0.5),  # ... but at most half the split
    ({"batch_size": 4}, 300, 4, 0.003),  # a batch written in the config: its learning rate scaled to it
    ({"batch_size": 32, "lr": 0.01}, 300, 32, 0.01),  # both written: kept
    ({"lr": 0.001}, 300, 16, 0.001),
])
def test_the_default_batch_and_learning_rate_follow_the_training_split(written, train_images, batch_size, lr):
    resolved = TrainingConfig.model_validate(written).for_split(train_images)
    assert resolved.batch_size == batch_size and resolved.lr == pytest.approx(lr)


def test_a_split_too_small_for_the_default_batch_is_refused_before_training():
    from optiseg.config import check_batch_size
    from optiseg.errors import ConfigError

    check_batch_size(TrainingConfig(), 2, "study.yaml")
    with pytest.raises(ConfigError, match="study.yaml: the training split has only 1 image"):
        check_batch_size(TrainingConfig(), 1, "study.yaml")
    with pytest.raises(ConfigError, match="training.batch_size = 8: the training split has only 5"):
        check_batch_size(TrainingConfig(batch_size=8), 5, "study.yaml")


def test_a_default_batch_is_the_same_run_as_the_batch_it_stands_for(binary, cache, tmp_path):
    network = Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes)
    batch_size = max(2, min(4, len(binary.train) // 2))
    defaulted = train_network(network, dataset=binary, training=TrainingConfig(epochs=1), run_dir=tmp_path, cache=cache, export_onnx=False)
    assert f"batches of {batch_size} at lr " in (tmp_path / "train.log").read_text()
    recorder = Recorder()
    written = TrainingConfig(epochs=1, batch_size=batch_size, lr=0.003 * (batch_size / 4) ** 0.5)
    again = train_network(network, dataset=binary, training=written, run_dir=tmp_path, cache=cache, reporter=recorder, export_onnx=False)
    assert recorder.events == [] and again.metrics == defaulted.metrics


def test_batch_larger_than_the_training_split_is_refused(binary, cache, tmp_path):
    with pytest.raises(UsageError, match="fewer than training.batch_size = 64"):
        train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(batch_size=64), run_dir=tmp_path,
                        cache=cache, export_onnx=False)


def test_ignored_pixels_are_left_out_of_training_and_scores(tmp_path):
    """A data set whose masks mark a band 'unlabelled' (value 128): training runs, and the band is never scored."""
    import cv2

    root = synthetic(tmp_path / "data", n=16)
    for path in root.glob("*/masks/*.png"):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        mask[:, :8] = 128
        cv2.imwrite(str(path), mask)
    dataset = load_dataset(data_config(root, ignore_index=128))
    assert dataset.ignore_index == 255
    result = train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=dataset.num_classes), dataset=dataset, training=settings(), run_dir=tmp_path / "run",
                             export_onnx=False)
    scored = sum(96 * 64 - 64 * 8 for _ in dataset.test)
    assert result.metrics["test_loss"] is not None
    cache = DatasetCache(dataset)
    masks = cache.original_masks("test")
    assert all((np.asarray(masks[i])[:, :8] == 255).all() for i in range(len(masks)))
    assert scored == sum(int((np.asarray(masks[i]) != 255).sum()) for i in range(len(masks)))


def test_two_trainings_cannot_share_a_run_folder(binary, cache, tmp_path):
    from optiseg.training._run_folder import locked

    with locked(tmp_path):  # as another process training there would hold it
        with pytest.raises(UsageError, match="another optiseg process is training in"):
            train_network(Network.create("fastscnn", FAST, RESOLUTION, num_classes=binary.num_classes), dataset=binary, training=settings(), run_dir=tmp_path,
                            cache=cache, export_onnx=False)
