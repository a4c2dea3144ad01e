"""Starting a network from a trained one that contains it: width slicing, the trainer's use of it, and a search."""

from __future__ import annotations

import copy
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
    ({"a": 0.03125, "t": 2, "r": 1, "pp": 0}, True),  # one channel: its depthwise layer is a plain convolution here
    ({"a": 1, "t": 8, "r": 3, "pp": 0}, False),     # more expanded than the source
    ({"a": 0.5, "t": 6, "r": 4, "pp": 0}, False),   # deeper
    ({"a": 1, "t": 6, "r": 3, "pp": 1}, False),     # a module the source lacks
])
def test_a_network_is_contained_when_it_is_no_wider_deeper_or_more_expanded(knobs, contained):
    assert inheritable(shapes_of(build("fastscnn", BASELINE)), build("fastscnn", knobs)) is contained


POOLING = {"a": 1, "t": 6, "r": 3, "pp": 1}


@pytest.mark.parametrize("knobs, contained", [
    ({"a": 0.5}, True),                  # narrower: pyramid pooling's [pooled branches, its input], part by part
    ({"a": 0.25, "t": 2, "r": 1}, True),
    ({"t": 2, "r": 1}, True),
    ({"a": 0.75, "t": 8}, True),         # (the hidden width a * t, 48 * 8 <= 64 * 6, is what counts)
    ({"t": 8}, False),                   # more expanded than the source
    ({"a": 0.5, "r": 4}, False),         # deeper
])
def test_fastscnn_with_pyramid_pooling_is_contained_when_it_is_no_wider_deeper_or_more_expanded(knobs, contained):
    assert inheritable(shapes_of(build("fastscnn", POOLING)), build("fastscnn", {**POOLING, **knobs})) is contained
    if contained:  # and not the other way round
        assert not inheritable(shapes_of(build("fastscnn", {**POOLING, **knobs})), build("fastscnn", POOLING))


def test_unet_is_contained_when_it_is_no_wider():
    source = shapes_of(build("unet", {"a": 0.125}))
    assert inheritable(source, build("unet", {"a": 0.0625}))  # narrower: each skip concatenation, part by part
    assert inheritable(source, build("unet", {"a": 0.125}))
    assert not inheritable(source, build("unet", {"a": 0.25}))
    assert not inheritable(shapes_of(build("bisenetv2", {})), build("fastscnn", {}))  # another family


class _Fuse(torch.nn.Module):
    """A child reads ``parts``, concatenated (for the planner's rules on the module's own input)."""

    def __init__(self, channels: int, branch: int, parts: tuple[str, ...]):
        super().__init__()
        self.channel_flow = {"fuse": parts}
        self.branch = torch.nn.Conv2d(channels, branch, 1)
        self.fuse = torch.nn.Conv2d(sum(branch if part == "branch" else channels for part in parts), 4, 1)


def test_the_modules_own_input_in_a_concatenation_takes_the_leading_channels_of_the_sources_part():
    from optiseg.training.inherit import inheritance_plan

    def taken(target, source):  # the source's input channels that the reader of the concatenation takes
        plan = inheritance_plan(shapes_of(source), target)
        return None if plan is None else next(index[1].tolist() for name, (_, index) in plan.items()
                                              if name.endswith("fuse.weight"))

    parts = ("branch", "input")
    # the input's size in the source: what the branch leaves of the reader's (12 - 8), or the flow it was fed
    assert taken(_Fuse(2, 3, parts), _Fuse(4, 8, parts)) == [0, 1, 2, 8, 9]
    fed = [torch.nn.Sequential(torch.nn.Conv2d(3, c, 1), _Fuse(c, b, parts)) for c, b in ((2, 3), (4, 8))]
    assert taken(*fed) == [0, 1, 2, 8, 9]
    assert taken(_Fuse(2, 3, ("input", "input")), _Fuse(4, 8, ("input", "input"))) is None  # two parts of unknown size
    target = _Fuse(6, 2, ("input", "branch"))  # a source whose input part is 16 - 12 = 4 < 6 channels: not contained
    shapes = {"branch.weight": (12, 6, 1, 1), "branch.bias": (12,), "fuse.weight": (4, 16, 1, 1), "fuse.bias": (4,)}
    assert inheritance_plan(shapes, target) is None


BISENET = {"a": 0.5, "t": 6, "r": 3, "head_mid": 64}


@pytest.mark.parametrize("knobs, contained", [
    ({"a": 0.25}, True),                         # narrower: the stem's concatenation, part by part
    ({"t": 3}, True),                            # less expanded: the grouped expansion, group by group
    ({"a": 0.25, "t": 2, "r": 1, "head_mid": 16}, True),
    ({"r": 1, "ce": 0}, True),                   # (knob_mismatch rules out the switch)
    ({"t": 8}, False),                           # more expanded than the source
    ({"r": 4}, False),                           # deeper
    ({"a": 1}, False),                           # wider
    ({"head_mid": 128}, False),
])
def test_bisenetv2_is_contained_when_it_is_no_wider_deeper_or_more_expanded(knobs, contained):
    assert inheritable(shapes_of(build("bisenetv2", BISENET)), build("bisenetv2", {**BISENET, **knobs})) is contained


def test_knob_switches_and_side_exits_must_match():
    from optiseg.training import knob_mismatch

    assert not inheritable(shapes_of(build("bisenetv2", {"ce": 0})), build("bisenetv2", {"ce": 1}))  # a module it lacks
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


def _random_weights(model: torch.nn.Module, deep: bool = False) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (eval mode), so that any wrong channel shows in the output.

    ``deep`` (U-Net's 23 convolutions): convolution weights scaled by sqrt(2 / fan-in), no biases or means,
    so that the output neither grows by orders of magnitude nor is drowned in offsets, and shows the input."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                positive = name.endswith("running_var")
                tensor.copy_(torch.rand_like(tensor) + 0.5 if positive else torch.randn_like(tensor))
                if deep and tensor.dim() == 4:
                    tensor *= (2 / tensor[0].numel()) ** 0.5
                elif deep and name.endswith(("bias", "running_mean")):
                    tensor.zero_()
    return model.eval()


def test_bisenetv2_expansion_takes_the_same_groups_outputs_and_the_stem_each_parts_first_channels():
    source = _random_weights(build("bisenetv2", BISENET))
    target = build("bisenetv2", {**BISENET, "a": 0.25, "t": 2})
    inherit(target, source.state_dict())
    state, origin = target.state_dict(), source.state_dict()
    for block in ("semantic.1", "semantic.2", "semantic.5"):  # stride 2, stride 1, stride 2
        expanded = origin[f"{block}.project.0.weight"].shape[1]
        groups = origin[f"{block}.gather.0.weight"].shape[0]  # the source's expand reads its gather's outputs
        m, m_target = expanded // groups, 2
        project = f"{block}.project.0.weight"
        taken = torch.tensor([j // m_target * m + j % m_target for j in range(state[project].shape[1])])
        assert torch.equal(state[project], origin[project][:state[project].shape[0]][:, taken]), project
        expand = [n for n in state if n.startswith(f"{block}.expand.") and not n.endswith("num_batches_tracked")]
        for name in expand:  # the grouped expansion, its BatchNorm and (stride 2) the depthwise conv after it
            assert torch.equal(state[name], origin[name][taken]), name
    fuse = "semantic.0.fuse.0.weight"  # reads [conv_branch, pool_branch]: the first channels of each part
    part, whole = state[fuse].shape[1] // 2, origin[fuse].shape[1] // 2
    expected = origin[fuse][:state[fuse].shape[0]]
    assert torch.equal(state[fuse], torch.cat([expected[:, :part], expected[:, whole:whole + part]], dim=1))


def _assert_computes_the_sources_restricted_network(source, target, identities=()):
    """The source with every input channel the new network does not take switched off (and the repeated layers
    it drops made identities: their tensors in ``identities`` zeroed) computes what the new network computes:
    each channel is wired as it was. Leading slices alone must not, so that a wrong wiring shows."""
    from optiseg.training.inherit import inheritance_plan

    target.eval()
    plan = inheritance_plan(shapes_of(source), target)
    inherit(target, source.state_dict())
    origin = source.state_dict()
    with torch.no_grad():
        for name, (source_name, index) in plan.items():
            if name.endswith("weight") and origin[source_name].dim() == 4 and origin[source_name].shape[1] > 1:
                kept = torch.zeros(origin[source_name].shape[1], dtype=torch.bool)
                kept[index[1]] = True
                origin[source_name][:, ~kept] = 0
        for name in identities:
            origin[name].zero_()
        image = torch.randn(2, 3, 64, 64)
        expected, got = source(image), target(image)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    leading = copy.deepcopy(target)  # what leading slices alone would give
    leading.load_state_dict({name: origin[plan[name][0]][tuple(slice(0, n) for n in tensor.shape)]
                             for name, tensor in leading.state_dict().items()})
    with torch.no_grad():
        assert not torch.allclose(leading(image), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


@pytest.mark.parametrize("knobs", [
    {"a": 0.25}, {"t": 2}, {"a": 0.25, "t": 3, "r": 1, "head_mid": 16}, {"a": 0.375, "t": 5, "r": 2, "ce": 0},
])
def test_an_inherited_bisenetv2_computes_the_sources_restricted_network(knobs):
    source = _random_weights(build("bisenetv2", {**BISENET, "ce": knobs.get("ce", 1)}))
    r = BISENET["r"]
    dropped = [f"semantic.{k}.project.1.{tensor}" for k in range(6 + knobs.get("r", r), 6 + r)  # relu(0 + x) = x:
               for tensor in ("weight", "bias")]                                                # x is a ReLU's output
    _assert_computes_the_sources_restricted_network(source, build("bisenetv2", {**BISENET, **knobs}), dropped)


@pytest.mark.parametrize("knobs", [{"a": 0.5}, {"a": 0.25, "t": 2, "r": 1}, {"a": 0.375, "t": 5, "r": 2}])
def test_an_inherited_fastscnn_with_pyramid_pooling_computes_the_sources_restricted_network(knobs):
    source = _random_weights(build("fastscnn", POOLING))
    dropped = [f"global_features.{group}.{k}.block.2.1.{tensor}" for group in range(3)  # x + 0 = x
               for k in range(knobs.get("r", 3), 3) for tensor in ("weight", "bias")]
    _assert_computes_the_sources_restricted_network(source, build("fastscnn", {**POOLING, **knobs}), dropped)


def test_an_inherited_unet_computes_the_sources_restricted_network():
    _assert_computes_the_sources_restricted_network(_random_weights(build("unet", {"a": 0.125}), deep=True),
                                                    build("unet", {"a": 0.0625}))


def _binary_squares(count: int, side: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images, masks = torch.randn(count, 3, side, side, generator=generator) * 0.3, torch.zeros(count, 1, side, side)
    for k in range(count):
        y, x, size = (int(v) for v in torch.randint(0, side // 2, (3,), generator=generator))
        size += side // 4
        masks[k, :, y:y + size, x:x + size] = 1
        images[k, :, y:y + size, x:x + size] += torch.tensor([1.0, -0.5, 0.5])[:, None, None]
    return images, masks


def test_a_bisenetv2_started_from_a_wider_more_expanded_trained_one_starts_with_a_lower_loss():
    loss = torch.nn.BCEWithLogitsLoss()
    images, masks = _binary_squares(16)
    validation = _binary_squares(8, seed=1)
    source = build("bisenetv2", {"a": 0.5, "t": 6, "r": 2, "head_mid": 32})
    optimizer = torch.optim.Adam(source.parameters(), lr=3e-3)
    source.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss(source(images), masks).backward()
        optimizer.step()
    for knobs in ({"a": 0.5, "t": 2, "r": 2, "head_mid": 32}, {"a": 0.25, "t": 3, "r": 1, "head_mid": 16}):
        started, scratch = build("bisenetv2", knobs), build("bisenetv2", knobs)
        inherit(started, source.state_dict())
        with torch.no_grad():
            losses = [loss(model.eval()(validation[0]), validation[1]).item() for model in (source, started, scratch)]
        assert losses[1] < losses[2], (knobs, losses)  # source 0.28; t=2: 0.28 (0.72); a=0.25: 0.55 (0.75)


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
