"""Starting a network from a trained one that contains it: width slicing, the trainer's use of it, and a search."""

from __future__ import annotations

import re

import pytest
import torch

from optiseg.network import Network
from optiseg.records import COMPLETE, PARTIAL, read_record
from optiseg.training import inherit, inheritable
from optiseg.training.inherit import shapes_of
from test_search_e2e import data_root, load_study, make_config  # noqa: F401  (data_root is a fixture)


def build(model: str, knobs: dict, side: int = 64, classes: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return Network.create(model, knobs, (side, side), num_classes=classes).build()


BASELINE = {"a": 1, "t": 6, "r": 3, "pp": 0}


@pytest.mark.parametrize("knobs, contained", [
    ({"a": 0.25, "t": 6, "r": 1, "pp": 0}, True),   # narrower, shallower
    ({"a": 0.125, "t": 2, "r": 2, "pp": 0}, True),  # and less expanded
    ({"a": 1, "t": 6, "r": 3, "pp": 0}, True),      # the same shape
    ({"a": 1, "t": 8, "r": 3, "pp": 0}, False),     # more expanded than the source
    ({"a": 0.5, "t": 6, "r": 4, "pp": 0}, False),   # deeper
    ({"a": 1, "t": 6, "r": 3, "pp": 1}, False),     # a module the source lacks
])
def test_a_network_is_contained_when_it_is_no_wider_deeper_or_more_expanded(knobs, contained):
    assert inheritable(shapes_of(build("fastscnn", BASELINE)), build("fastscnn", knobs)) is contained


def test_a_concatenation_must_keep_its_input_channels():
    with_pooling = build("fastscnn", {"a": 1, "t": 6, "r": 3, "pp": 1})
    assert not inheritable(shapes_of(with_pooling), build("fastscnn", {"a": 0.5, "t": 6, "r": 3, "pp": 1}))
    assert inheritable(shapes_of(with_pooling), build("fastscnn", {"a": 1, "t": 2, "r": 1, "pp": 1}))
    assert not inheritable(shapes_of(build("unet", {"a": 1})), build("unet", {"a": 0.5}))  # the skip concatenation
    assert not inheritable(shapes_of(build("bisenetv2", {})), build("fastscnn", {}))  # another family


def test_grouped_convolutions_with_several_outputs_per_group_and_knob_switches_must_match():
    from optiseg.training import knob_mismatch

    assert not inheritable(shapes_of(build("bisenetv2", {"t": 6})), build("bisenetv2", {"t": 3}))  # j // t rewired
    assert inheritable(shapes_of(build("bisenetv2", {"t": 6}, side=96)), build("bisenetv2", {"t": 6}))  # the same shape
    assert knob_mismatch("fastscnn", {"a": 1, "pp": 1}, {"a": 0.5, "pp": 0}) == "pp is 1 in the source and 0 here"
    assert "side exits" in knob_mismatch("fastscnn", {"a": 1, "exits": 2}, {"a": 0.5, "exits": 2})
    assert knob_mismatch("fastscnn", {"a": 1, "exits": 2}, {"a": 1, "exits": 2}) is None
    assert knob_mismatch("fastscnn", {"a": 1, "t": 6}, {"a": 0.25, "t": 2}) is None


def test_each_tensor_takes_the_leading_slice_of_the_sources():
    source, target = build("fastscnn", BASELINE), build("fastscnn", {"a": 0.25, "t": 2, "r": 1, "pp": 0})
    sliced = inherit(target, source.state_dict())
    state, origin = target.state_dict(), source.state_dict()
    assert 0 < sliced <= len(state)
    for name, tensor in state.items():
        assert torch.equal(tensor, origin[name][tuple(slice(0, n) for n in tensor.shape)]), name
    with pytest.raises(ValueError, match="does not contain"):
        inherit(build("fastscnn", BASELINE), target.state_dict())


def test_the_same_shape_at_another_resolution_computes_the_same_function():
    source, target = build("fastscnn", BASELINE, side=96), build("fastscnn", BASELINE, side=64)
    source.eval(), target.eval()
    assert inherit(target, source.state_dict()) == 0
    image = torch.randn(1, 3, 64, 64)
    assert torch.equal(source(image), target(image))


class _AbortAfterFirstEpoch:
    def on_epoch_end(self, epoch, epochs, metrics):
        raise KeyboardInterrupt


def test_the_trainer_starts_from_the_initial_weights_and_a_resumed_run_keeps_its_start(tmp_path, data_root):
    from optiseg.checkpoint import load_checkpoint
    from optiseg.config import DataConfig, TrainingConfig
    from optiseg.data import load_dataset
    from optiseg.training import CHECKPOINT, InitialWeights, train_network

    dataset = load_dataset(DataConfig(root=str(data_root)))
    target = Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1, "pp": 0}, (64, 64), num_classes=dataset.num_classes)
    source = build("fastscnn", BASELINE, classes=dataset.num_classes)
    start = InitialWeights(source.state_dict(), "the test's source")
    training = TrainingConfig(epochs=2, batch_size=4, lr=1e-12)  # the weights barely move: where they started shows
    with pytest.raises(KeyboardInterrupt):
        train_network(target, dataset=dataset, training=training, run_dir=tmp_path / "run", initial_weights=start,
                      reporter=_AbortAfterFirstEpoch(), export_onnx=False)
    first = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert first["initialized_from"] == "the test's source" and first["epoch"] == 1
    for name in ("learning_to_downsample.0.0.weight", "global_features.1.0.block.0.0.weight", "classifier.3.bias"):
        if name in first["state_dict"]:
            expected = source.state_dict()[name][tuple(slice(0, n) for n in first["state_dict"][name].shape)]
            assert torch.allclose(first["state_dict"][name], expected, atol=1e-6), name
    other = InitialWeights(build("fastscnn", {**BASELINE, "a": 0.5}, classes=dataset.num_classes).state_dict(), "another")
    resumed = train_network(target, dataset=dataset, training=training, run_dir=tmp_path / "run", initial_weights=other,
                            export_onnx=False)
    assert resumed.metrics["initialized_from"] == "the test's source" and resumed.metrics["epochs_run"] == 2
    fresh = train_network(target, dataset=dataset, training=training, run_dir=tmp_path / "scratch", export_onnx=False)
    assert fresh.metrics["initialized_from"] is None


@pytest.mark.slow
def test_a_search_with_inherit_weights_starts_new_networks_from_trained_ones(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "inherit", search_space={"resolution": [64, 96], "a": [0.25, 0.5]},
                         training={"epochs": 4, "batch_size": 4}, fidelity={"eta": 2, "min_epochs": 2},
                         inherit_weights=True, budget={"n_trials": 4}, sampler="grid", confirm=False)
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    trials = sorted((read_record(t) for t in load_study(tmp_path, "inherit").trials), key=lambda r: r.number)
    trained = [r for r in trials if r.status in (COMPLETE, PARTIAL) and r.duplicate_of is None]
    assert trained[0].evaluation.details.get("initialized_from") is None  # the first network has nothing to start from
    started = [r for r in trained if r.evaluation.details.get("initialized_from")]
    assert started, [r.evaluation.details for r in trained]
    by_number = {r.number: r for r in trials}
    for record in started:
        source_number = int(record.evaluation.details["initialized_from"].split()[1])
        source = by_number[source_number].plan.network
        assert source.key != record.plan.network.key
        assert float(source.knob_dict["a"]) >= float(record.plan.network.knob_dict["a"])  # a source contains its target
        log = (tmp_path / "runs" / "inherit" / record.artifacts / "train" / "train.log").read_text()
        assert f"starting from the weights of trial {source_number}" in log
    everything = re.sub(r"[│┃\s]+", " ", cli("front", str(tmp_path / "runs" / "inherit"), "--all").stdout)
    assert "started from the weights of trial" in everything  # the note, its wrapped lines joined
    from optiseg.records import study_settings

    assert study_settings(load_study(tmp_path, "inherit")).get("inherit_weights") is True  # part of the settings hash
