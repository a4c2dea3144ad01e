"""Early exits: the knob, the exits in the stage list, training, the staged export, the policy, the command, the device script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from _datasets import data_config, synthetic
from optiseg.checkpoint import load_checkpoint, save_checkpoint
from optiseg.config import TrainingConfig
from optiseg.data import DatasetCache, load_dataset
from optiseg.errors import ExportError, KnobError, UsageError
from optiseg.exits import (
    ExitConfidence,
    ExitRow,
    ImageExits,
    best_point,
    chain_latency,
    efficient_points,
    exit_index,
    exit_outputs,
    exit_table,
    export_exit_chain,
    load_exit_chain,
    operating_curve,
    sweep_thresholds,
    write_exit_deployment,
)
from optiseg.models import INPUT, OUTPUT, build_model, forward_exits, run_stages
from optiseg.network import Network
from optiseg.profile import count_parameters, profile_stages
from optiseg.training import train_network
from optiseg._runners.early_exit import ExitChainRunner

REPO = Path(__file__).resolve().parents[1]
SMALL = {"fastscnn": {"a": 0.25, "t": 2, "r": 1, "pp": 1}, "bisenetv2": {"a": 0.25, "t": 2, "r": 1, "ce": 1, "head_mid": 16}}
FAST_MEASURE = {"kind": "local", "measure": {"warmup": 1, "min_runs": 3, "min_seconds": 0, "threads": 1}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one thread is faster than two fighting over a shared machine's cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ the knob


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zero_exits_is_todays_network(name):
    torch.manual_seed(0)
    today = build_model(name, SMALL[name]).eval()
    torch.manual_seed(0)
    zero = build_model(name, {**SMALL[name], "exits": 0, "exit_width": 8}).eval()
    assert count_parameters(zero) == count_parameters(today)
    assert list(zero.state_dict()) == list(today.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(zero(x), today(x))
    assert [s.name for s in zero.stages()] == [s.name for s in today.stages()]
    assert Network.create(name, {**SMALL[name], "exits": 0, "exit_width": 8}, 64).key == Network.create(name, SMALL[name], 64).key


def test_network_key_and_identity_leave_neutral_knobs_out():
    plain = Network.create("fastscnn", {"a": 0.5}, 192)
    assert plain.key == "fastscnn-192x192-rgb-c1-a0.5_t6_r3_pp1"
    assert plain.knob_dict == {"a": 0.5, "t": 6, "r": 3, "pp": True} and plain.knob("exits") == 0
    two = Network.create("fastscnn", {"a": 0.5, "exits": 2}, 192)
    assert two.key == "fastscnn-192x192-rgb-c1-a0.5_t6_r3_pp1_exits2"
    assert Network.create("fastscnn", {"exits": 2, "exit_width": 32}, 64).key.endswith("_exits2_exit_width32")
    assert Network.from_dict(two.as_dict()) == two
    assert count_parameters(build_model("fastscnn", {})) == 1_122_673  # the thesis's table, exits or not


def test_exit_knob_errors():
    with pytest.raises(KnobError, match="exits must be an integer, 0 <= exits <= 3"):
        build_model("fastscnn", {"exits": 4})
    with pytest.raises(KnobError, match="unknown knob 'exits' for model 'unet'"):
        build_model("unet", {"a": 0.125, "exits": 1})


def test_exits_are_spaced_evenly_in_macs_where_the_image_no_longer_crosses():
    taps = {k: build_model("fastscnn", {"exits": k}).exit_taps for k in (1, 2, 3)}
    assert {k: [t.after for t in v] for k, v in taps.items()} == {
        1: ["bottlenecks2"], 2: ["bottlenecks1", "bottlenecks3"], 3: ["learning_to_downsample", "bottlenecks2", "pyramid_pooling"]}
    assert [round(t.target, 3) for t in taps[3]] == [0.25, 0.5, 0.75]
    assert all(abs(t.share - t.target) < 0.15 for t in taps[3])
    assert [t.share for t in taps[3]] == sorted(t.share for t in taps[3])
    # BiSeNetV2's detail branch runs first and the image crosses its cuts to the semantic stem: no exit there.
    for k in (1, 2, 3):
        assert not any(t.after.startswith("detail") for t in build_model("bisenetv2", {**SMALL["bisenetv2"], "exits": k}).exit_taps)


def test_backbone_starts_from_the_same_weights_with_or_without_exits():
    torch.manual_seed(0)
    plain = build_model("fastscnn", SMALL["fastscnn"]).state_dict()
    torch.manual_seed(0)
    with_exits = build_model("fastscnn", {**SMALL["fastscnn"], "exits": 2}).state_dict()
    assert all(torch.equal(plain[k], with_exits[k]) for k in plain)
    assert {k.split(".")[0] for k in with_exits if k not in plain} == {"exit_heads"}


def test_the_plain_forward_pass_never_runs_an_exit():
    model = build_model("fastscnn", {**SMALL["fastscnn"], "exits": 3}).eval()
    calls = []
    for head in model.exit_heads:
        head.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert not calls
        outputs = run_stages(model.stages(), {INPUT: torch.randn(1, 3, 64, 64)}, (64, 64), ["exit2", OUTPUT])
    assert len(calls) == 1 and set(outputs) == {"exit2", OUTPUT}


# ------------------------------------------------------------------ forward, backward, staged export


def exit_cases():
    return [pytest.param(name, exits, size, id=f"{name}-{exits}-{size[0]}x{size[1]}")
            for name in sorted(SMALL) for exits in (1, 2, 3) for size in ((64, 64), (64, 96))]


@pytest.mark.parametrize("name,exits,size", exit_cases())
def test_forward_backward_and_staged_export_parity(name, exits, size, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, {**SMALL[name], "exits": exits}, num_classes=2).train()
    outputs = forward_exits(model, torch.randn(2, 3, *size))
    assert [o.shape for o in outputs] == [(2, 2, *size)] * (exits + 1)
    sum(o.mean() for o in outputs).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]

    network = Network.create(name, {**SMALL[name], "exits": exits}, size, num_classes=2)
    chain = export_exit_chain(model, network, tmp_path)
    assert chain.exits == (*(f"exit{k}" for k in range(1, exits + 1)), "logits") and chain.max_abs_diff <= 1e-4
    assert load_exit_chain(tmp_path) == chain
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        expected = [o[0].numpy() for o in forward_exits(model, image)]
    actual, confidences = ExitChainRunner(tmp_path).run_all(image.numpy())
    assert max(float(np.abs(a - e).max()) for a, e in zip(actual, expected)) <= 1e-4
    for logits, sure in zip(actual, confidences):  # computed in the graphs, as numpy would
        assert sure == pytest.approx(reference_confidences(logits, chain.pixel_probability), abs=1e-5)
    assert_chain_reuses_features(chain, model, network)


def test_a_chain_has_no_manifest_until_its_parity_check_passes(tmp_path, monkeypatch):
    """``exits.json`` is what makes a folder a chain: an export killed before its parity check (or one whose check
    fails) must leave none, not even an older chain's."""
    from optiseg.exits import chain as chain_module

    network = Network.create("fastscnn", {**SMALL["fastscnn"], "exits": 1}, (64, 64), num_classes=2)
    model = network.build()
    (tmp_path / "exits.json").write_text(json.dumps({"format": "an older chain"}))
    checked = chain_module._chain_parity
    seen = []

    def parity(folder, manifest, image, expected):
        seen.append((folder / "exits.json").exists())
        return checked(folder, manifest, image, expected)

    monkeypatch.setattr(chain_module, "_chain_parity", parity)
    chain = export_exit_chain(model, network, tmp_path)
    assert seen == [False] and load_exit_chain(tmp_path) == chain

    monkeypatch.setattr(chain_module, "_chain_parity", lambda *args: 1.0)
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_exit_chain(model, network, tmp_path)
    assert not list(tmp_path.iterdir())


def assert_chain_reuses_features(chain, model, network):
    """Only stage 1 reads the image; every other input was written by an earlier stage; each model stage runs once."""
    available = {"input"}
    for stage in chain.stages:
        graph = onnx.load(str(stage.path))
        inputs = [i.name for i in graph.graph.input]
        outputs = [o.name for o in graph.graph.output]
        assert ("input" in inputs) == (stage.index == 1), f"stage {stage.index} reads the image"
        assert set(inputs) <= available and not set(inputs) & set(outputs)
        assert outputs[0] == stage.logits and (stage.confidence is None) == (stage.upsample is None) == (stage.exit == "logits")
        available |= set(outputs)
        if stage.upsample is not None:
            upsample = onnx.load(str(stage.upsample)).graph
            assert [i.name for i in upsample.input] == [stage.logits] and [o.name for o in upsample.output] == [stage.exit]
    runs = [model_stage for stage in chain.stages for model_stage in stage.after] + list(chain.exits[:-1])
    assert sorted(runs) == sorted(s.name for s in model.stages())
    assert chain.cumulative_macs[-1] == sum(profile_stages(model.stages(), network.input_shape).macs.values())


# ------------------------------------------------------------------ the policy


def _image(confidences, confusions):
    return ImageExits({"max_prob": tuple(confidences), "pixel_share": tuple(confidences)},
                      tuple(np.array(c, dtype=np.int64) for c in confusions))


def test_policy_arithmetic_on_a_hand_made_case():
    # Two exits and the final output, binary; confusion [[TN, FP], [FN, TP]].
    perfect, wrong = [[10, 0], [0, 10]], [[10, 0], [10, 0]]
    images = [
        _image([0.95, 0.99], [perfect, perfect, perfect]),  # sure at exit 1 below 0.95
        _image([0.70, 0.92], [wrong, perfect, perfect]),    # sure at exit 2 from 0.70 to 0.92
        _image([0.60, 0.80], [wrong, wrong, perfect]),      # sure at exit 2 from 0.60 to 0.80, and wrong there
    ]
    scoring = {"class_names": ("background", "foreground"), "binary": True}
    cumulative = [2.0, 5.0, 10.0]
    curve = operating_curve(images, cumulative, [0.5, 0.75, 0.9, 0.96, 1.0], cumulative_macs=[100, 300, 600], **scoring)
    assert [p.shares for p in curve] == [(1.0, 0.0, 0.0), (1 / 3, 2 / 3, 0.0), (1 / 3, 1 / 3, 1 / 3), (0.0, 1 / 3, 2 / 3),
                                         (0.0, 0.0, 1.0)]
    # At 0.5 every image leaves at exit 1: TP 10 (image 1), FN 20 (images 2 and 3) -> IoU 10 / 30.
    assert curve[0].iou == pytest.approx(10 / 30) and curve[0].expected_ms == pytest.approx(2.0)
    # At 0.75 image 3 leaves at exit 2, where it is wrong: TP 20, FN 10.
    assert curve[1].iou == pytest.approx(20 / 30) and curve[1].expected_ms == pytest.approx((2.0 + 5.0 + 5.0) / 3)
    assert curve[1].expected_macs == pytest.approx((100 + 300 + 300) / 3)
    assert curve[2].iou == pytest.approx(1.0) and curve[2].expected_ms == pytest.approx((2.0 + 5.0 + 10.0) / 3)
    assert curve[3].iou == pytest.approx(1.0) and curve[3].expected_ms == pytest.approx((5.0 + 10.0 + 10.0) / 3)
    assert curve[4].iou == pytest.approx(1.0) and curve[4].expected_ms == pytest.approx(10.0)

    table = exit_table(images, ("exit1", "exit2", "logits"), cumulative, [100, 300, 600], **scoring)
    assert table == [ExitRow("exit1", pytest.approx(10 / 30), 100, 2.0), ExitRow("exit2", pytest.approx(20 / 30), 300, 5.0),
                     ExitRow("logits", 1.0, 600, 10.0)]
    assert best_point(curve, reference_iou=1.0, max_iou_loss=0.01) is curve[2]
    assert best_point(curve, reference_iou=1.0, max_iou_loss=0.4) is curve[1]
    assert best_point(curve[:2], reference_iou=1.0, max_iou_loss=0.01) is None
    assert exit_index([0.5, 0.9], 0.9) == 1 and exit_index([0.5, 0.9], 0.95) == 2
    assert efficient_points(curve) == curve[:3]

    sweep = sweep_thresholds(images)
    assert sweep[:-1] == pytest.approx((0.6, 0.65, 0.75, 0.86, 0.935, 0.97)) and sweep[-1] == math.inf
    full = operating_curve(images, cumulative, sweep, **scoring)
    assert full[0].shares == (1.0, 0.0, 0.0) and full[-1].shares == (0.0, 0.0, 1.0) and full[-1].as_dict()["threshold"] is None
    assert len({p.shares for p in full}) == len(full)  # every swept threshold changes a decision


def reference_confidences(logits: np.ndarray, pixel_probability: float) -> dict[str, float]:
    """The two confidences of one image's logits (C, H, W), in plain numpy."""
    if logits.shape[0] == 1:
        p = 1 / (1 + np.exp(-logits[0].astype(np.float64)))
        largest = np.maximum(p, 1 - p)
    else:
        e = np.exp(logits - logits.max(axis=0))
        largest = (e / e.sum(axis=0)).max(axis=0)
    return {"max_prob": float(largest.mean()), "pixel_share": float((largest >= pixel_probability).mean())}


def test_confidences_of_one_and_several_logits():
    head = ExitConfidence(pixel_probability=0.9)
    sure = torch.full((1, 1, 4, 4), 10.0)
    assert head(sure)[0].tolist() == pytest.approx([1 / (1 + np.exp(-10.0)), 1.0])
    assert head(torch.zeros(1, 1, 4, 4))[0].tolist() == pytest.approx([0.5, 0.0])
    assert head(-sure).tolist() == head(sure).tolist()
    half = torch.cat([torch.full((1, 1, 2, 4), 10.0), torch.zeros(1, 1, 2, 4)], dim=2)
    assert head(half)[0, 1].item() == pytest.approx(0.5)
    three = torch.zeros(1, 3, 2, 2)
    three[:, 1] = np.log(2.0)  # probabilities 1/4, 1/2, 1/4
    assert head(three)[0].tolist() == pytest.approx([0.5, 0.0])


# ------------------------------------------------------------------ training, measuring, deploying


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return load_dataset(data_config(synthetic(tmp_path_factory.mktemp("exits") / "data", n=24)))


@pytest.fixture(scope="module")
def trained(binary, tmp_path_factory):
    """A small fastscnn with two exits, trained jointly for a few epochs."""
    network = Network.create("fastscnn", {"a": 0.5, "t": 2, "r": 1, "exits": 2}, (64, 64), num_classes=1)
    training = TrainingConfig.model_validate({"epochs": 4, "batch_size": 4, "lr": 0.01, "exits": {"weights": [0.5, 0.5, 1]}})
    result = train_network(network, dataset=binary, training=training, run_dir=tmp_path_factory.mktemp("joint"),
                           cache=DatasetCache(binary))
    return network, result


def test_joint_training_reports_every_exit(trained):
    network, result = trained
    exits = result.metrics["exits"]
    assert exits["names"] == ["exit1", "exit2"] and exits["schedule"] == "joint" and exits["loss_weights"] == [0.5, 0.5, 1.0]
    assert exits["after"] == [t.after for t in network.build().exit_taps]
    assert [e["name"] for e in exits["test"]] == ["exit1", "exit2"] and all(0 <= e["iou"] <= 1 for e in exits["test"])
    assert all(len(h["val_exits"]) == 2 and h["phase"] == "joint" for h in result.history)
    run = json.loads((result.run_dir / "metrics.json").read_text())["run"]
    assert run["training"]["exits"]["weights"] == [0.5, 0.5, 1.0] and run["knobs"]["exits"] == 2


def test_two_stage_trains_the_heads_on_a_frozen_backbone(binary, tmp_path):
    network = Network.create("fastscnn", {**SMALL["fastscnn"], "exits": 1}, (64, 64), num_classes=1)
    training = TrainingConfig.model_validate({"epochs": 2, "batch_size": 4, "exits": {"schedule": "two_stage", "branch_epochs": 2}})

    class KeepBackbone:
        def on_epoch_end(self, epoch, epochs, metrics):
            if epoch == 2:
                self.backbone = load_checkpoint(tmp_path / "best.pt")["state_dict"]

    keep = KeepBackbone()
    cache = DatasetCache(binary)
    result = train_network(network, dataset=binary, training=training, run_dir=tmp_path, cache=cache,
                           reporter=keep, export_onnx=False)
    # The first stage is the training of the network without exits, bit for bit.
    plain = train_network(Network.create("fastscnn", SMALL["fastscnn"], (64, 64), num_classes=1), dataset=binary,
                          training=TrainingConfig.model_validate({"epochs": 2, "batch_size": 4}), run_dir=tmp_path / "plain",
                          cache=cache, export_onnx=False)
    plain_weights = load_checkpoint(plain.checkpoint)["state_dict"]
    assert all(torch.equal(plain_weights[k], keep.backbone[k]) for k in plain_weights)
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in result.history[:2]]
    assert [h["phase"] for h in result.history] == ["backbone", "backbone", "branches", "branches"]
    assert result.metrics["epochs"] == 4 and result.metrics["best_epoch"] in (3, 4)
    final = load_checkpoint(tmp_path / "best.pt")["state_dict"]
    changed = {k.split(".")[0] for k in final if not torch.equal(final[k], keep.backbone[k])}
    assert changed == {"exit_heads"}  # weights and BatchNorm statistics of the backbone untouched
    # The final output does not move in the second stage: it is the best backbone epoch's.
    assert result.history[2]["val_loss"] == result.history[3]["val_loss"] in {h["val_loss"] for h in result.history[:2]}


def test_networks_without_exits_keep_their_training_identity():
    assert "exits" not in TrainingConfig().model_dump(mode="json")
    assert TrainingConfig.model_validate({"exits": {"schedule": "two_stage"}}).model_dump()["exits"]["schedule"] == "two_stage"
    with pytest.raises(UsageError, match="give 3 numbers"):
        TrainingConfig.model_validate({"exits": {"weights": [1, 1]}}).exits.loss_weights(2)


def test_policy_over_a_split_matches_the_device_script_and_deploys(trained, binary, tmp_path):
    network, result = trained
    model = network.build()
    model.load_state_dict(load_checkpoint(result.checkpoint)["state_dict"])
    chain = export_exit_chain(model, network, tmp_path / "chain")
    cache = DatasetCache(binary)
    images, masks = cache.resized("test", (64, 64)), cache.original_masks("test")
    per_image = exit_outputs(chain, images, masks, num_classes=2, in_channels=3)
    latency = chain_latency([1.0, 2.0, 3.0], [0.5, 0.5])
    assert latency.cumulative_ms == (1.5, 3.5, 6.0)
    thresholds = sorted({c for image in per_image for c in image.confidences["max_prob"]})
    curve = operating_curve(per_image, latency.cumulative_ms, thresholds, class_names=binary.class_names, binary=True)
    runner = ExitChainRunner(tmp_path / "chain")
    from optiseg.training.evaluate import onnx_input

    for threshold in thresholds[:: max(1, len(thresholds) // 4)]:
        chosen = [runner.run_policy(onnx_input(images[i][0], 3), threshold)[0] for i in range(len(images))]
        assert chosen == [exit_index(image.confidences["max_prob"], threshold) for image in per_image]
    # The policy's "every image at the final output" IoU is the whole network's, scored by evaluate_onnx.
    from optiseg.export import export_onnx
    from optiseg.training import evaluate_onnx

    whole = export_onnx(model, tmp_path / "whole.onnx", network)
    scores = evaluate_onnx(whole.path, images, masks, class_names=binary.class_names, binary=True, in_channels=3)
    last = operating_curve(per_image, latency.cumulative_ms, [2.0], class_names=binary.class_names, binary=True)[0]
    assert last.shares[-1] == 1.0 and last.iou == pytest.approx(scores.primary_iou)

    deploy = tmp_path / "deploy"
    written = write_exit_deployment(chain, curve, deploy, threshold=thresholds[len(thresholds) // 2])
    assert {p.name for p in written} == {"stage1.onnx", "stage2.onnx", "stage3.onnx", "exit1.onnx", "exit2.onnx", "exits.json",
                                         "early_exit.py"}
    assert "import optiseg" not in (deploy / "early_exit.py").read_text() and "from optiseg" not in (deploy / "early_exit.py").read_text()
    pictures = sorted((binary.root / "test" / "images").iterdir())[:3]
    done = subprocess.run([sys.executable, str(deploy / "early_exit.py"), str(deploy), *map(str, pictures), "-o", str(tmp_path / "masks")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["ok"] and len(report["images"]) == 3 and sum(report["share"].values()) == pytest.approx(1.0)
    assert all((tmp_path / "masks" / f"{p.stem}.png").is_file() for p in pictures)


def test_exits_command_json_and_table(trained, binary, tmp_path, capsys):
    import yaml

    from optiseg.cli import main

    _, result = trained
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(binary.root)}, "device": FAST_MEASURE}))
    assert main(["exits", "--run", str(result.run_dir), "--data", str(config), "-o", str(tmp_path / "chain"), "--json",
                 "--thresholds", "0.5:1:0.05"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in payload["exits"]] == ["exit1", "exit2", "logits"]
    assert len(payload["curve"]) == 11 and payload["reference"]["latency_ms"] > 0
    cumulative = payload["latency"]["cumulative_ms"]
    assert cumulative == sorted(cumulative) and [row["latency_ms"] for row in payload["exits"]] == cumulative
    assert main(["exits", "--run", str(result.run_dir), "--data", str(config), "-o", str(tmp_path / "chain")]) == 0
    out = capsys.readouterr().out
    assert "operating curve" in out and "whole network (no exit heads)" in out


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--run", "{plain}", "--data", "{config}"], "has no exits"),
        (["--run", "{missing}", "--data", "{config}"], "is not a finished run folder"),
        (["--run", "{run}", "--data", "{config}", "--thresholds", "0.9:0.5:0.1"], "--thresholds '0.9:0.5:0.1' is invalid"),
        (["--run", "{run}", "--data", "{config}", "--confidence", "entropy"], "--confidence 'entropy' is unknown"),
        (["--run", "{run}", "--data", "{missing}"], "does not exist"),
    ],
)
def test_exits_command_bad_input_exits_2(args, fragment, trained, binary, tmp_path, capsys):
    import yaml

    from optiseg.cli import main

    _, result = trained
    plain = tmp_path / "plain"
    plain.mkdir()
    save_checkpoint(plain / "best.pt", {"model": "fastscnn", "knobs": SMALL["fastscnn"], "num_classes": 1, "in_channels": 3,
                                        "state_dict": build_model("fastscnn", SMALL["fastscnn"]).state_dict(),
                                        "resolution": [64, 64], "class_names": ["background", "foreground"]})
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(binary.root)}, "device": FAST_MEASURE}))
    values = {"plain": plain, "config": config, "missing": tmp_path / "nothing", "run": result.run_dir}
    assert main(["exits", *(a.format(**values) for a in args)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_exits_help_has_examples(cli):
    done = cli("exits", "--help")
    assert done.returncode == 0 and "optiseg exits --run runs/exits2 --data study.yaml" in done.stdout
