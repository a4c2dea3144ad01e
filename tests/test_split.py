"""Split computing: cut points and what crosses them, head/tail parity, the tensor codec, the per-cut table, `optiseg split`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from optiseg._runners import tensor_codec as codec

from optiseg.cli import main
from optiseg.data import OriginalMasks, ResizedSplit
from optiseg.errors import UsageError
from optiseg.export import export_onnx
from optiseg.models import list_models
from optiseg.network import Network
from optiseg.split import (
    cut_points,
    plan_cuts,
    export_split,
    find_cut,
    iou_with_codec,
    split_table,
)
from optiseg.training import evaluate_onnx

# Narrow networks with every module built, so every cut exists and the exports are quick.
SMALL = {
    "fastscnn": {"a": 0.25, "t": 2, "r": 1, "pp": 1},
    "bisenetv2": {"a": 0.25, "t": 2, "r": 1, "ce": 1, "head_mid": 16},
    "unet": {"a": 0.125},
}


def test_every_registered_model_has_a_small_sample():
    assert sorted(SMALL) == list_models()


@pytest.mark.parametrize("size", [(64, 64), (64, 96)], ids=["64x64", "64x96"])
@pytest.mark.parametrize("name", list_models())
def test_head_then_tail_is_the_whole_network_at_every_cut(name, size, tmp_path):
    network = Network.create(name, SMALL[name], size)
    model = network.build()
    assert cut_points(network, model), f"{name} declares no cut point"
    cuts = plan_cuts(network, model)  # the model's cuts, and `server`: the image crosses, the tail is the whole network
    assert cuts[0].after == "server" and cuts[0].names == ("image",) and cuts[1:] == cut_points(network, model)
    x = torch.randn(*network.input_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model.eval()(x).numpy()
    import onnxruntime as ort

    for cut in cuts:
        result = export_split(model, network, cut, tmp_path / f"{cut.after}.head.onnx", tmp_path / f"{cut.after}.tail.onnx")
        assert result.head.max_abs_diff <= 1e-4 and result.tail.max_abs_diff <= 1e-4 and result.max_abs_diff <= 1e-4
        head = ort.InferenceSession(str(result.head.path), providers=["CPUExecutionProvider"])
        tail = ort.InferenceSession(str(result.tail.path), providers=["CPUExecutionProvider"])
        assert [o.name for o in head.get_outputs()] == list(cut.names)
        assert sorted(i.name for i in tail.get_inputs()) == sorted(cut.names)
        sent = head.run(None, {"input": x.numpy()})  # a second input, not the one the export checked
        assert [tuple(a.shape) for a in sent] == [t.shape for t in cut.tensors]
        logits = tail.run(None, dict(zip(cut.names, sent)))[0]
        assert float(np.max(np.abs(logits - whole))) <= 1e-4, cut.after


def test_fastscnn_learning_to_downsample_crosses_every_cut_of_the_global_feature_extractor():
    network = Network.create("fastscnn", {"a": 0.5}, (64, 96))
    cuts = {c.after: c for c in cut_points(network)}
    assert list(cuts) == ["learning_to_downsample", "bottlenecks1", "bottlenecks2", "bottlenecks3", "pyramid_pooling", "feature_fusion"]
    for after, main_path, shape in [("bottlenecks1", "gfe1", (1, 32, 4, 6)), ("bottlenecks2", "gfe2", (1, 48, 2, 3)),
                                    ("bottlenecks3", "gfe3", (1, 64, 2, 3)), ("pyramid_pooling", "ppm", (1, 64, 2, 3))]:
        tensors = {t.name: t for t in cuts[after].tensors}
        assert list(tensors) == ["ltd", main_path]
        assert tensors["ltd"].skip and tensors["ltd"].shape == (1, 32, 8, 12) and tensors["ltd"].produced_by == "learning_to_downsample"
        assert not tensors[main_path].skip and tensors[main_path].shape == shape and tensors[main_path].dtype == "float32"
    assert cuts["learning_to_downsample"].names == ("ltd",) and not cuts["learning_to_downsample"].tensors[0].skip
    assert cuts["feature_fusion"].names == ("fused",)
    assert "pyramid_pooling" not in {c.after for c in cut_points(Network.create("fastscnn", {"a": 0.5, "pp": 0}, 64))}


def test_bisenetv2_detail_branch_crosses_the_semantic_cuts_and_the_image_the_detail_cuts():
    cuts = {c.after: c for c in cut_points(Network.create("bisenetv2", {"a": 0.5}, 64))}
    for after in ("semantic_stem", "semantic_1_8", "semantic_1_16", "semantic_1_32", "context_embedding"):
        detail = cuts[after].tensors[0]
        assert (detail.name, detail.shape, detail.skip) == ("detail", (1, 64, 8, 8), True)
        assert len(cuts[after].tensors) == 2 and not cuts[after].tensors[1].skip
    first = cuts["detail_1_2"].tensors
    assert [(t.name, t.key, t.shape, t.skip) for t in first] == [
        ("image", "input", (1, 3, 64, 64), True), ("detail_1_2", "detail_1_2", (1, 32, 32, 32), False)]


def test_unet_cuts_are_after_each_pool_and_send_every_skip():
    cuts = cut_points(Network.create("unet", {"a": 0.25}, (64, 96)))
    assert [c.after for c in cuts] == [f"encoder{k}" for k in range(1, 6)]
    third = find_cut(cuts, "encoder3")
    assert [(t.name, t.shape, t.skip) for t in third.tensors] == [
        ("enc1", (1, 16, 64, 96), True), ("enc2", (1, 32, 32, 48), True), ("enc3", (1, 64, 16, 24), True), ("pool3", (1, 64, 8, 12), False)]
    with pytest.raises(UsageError, match="cut points: encoder1, encoder2"):
        find_cut(cuts, "encoder9")


# --- the codec -----------------------------------------------------------------------------------------------


def _activations(shape=(1, 6, 9, 11), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.1, 5, size=(1, shape[1], 1, 1)).astype(np.float32)
    x[:, 0] = np.maximum(x[:, 0], 0)  # a post-ReLU channel
    x[:, 1] = 0.7  # a constant channel
    return x


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("bits", [8, 4])
def test_affine_round_trip_is_within_half_a_step(bits, per_channel):
    x = _activations()
    payload, header = codec.encode(x, bits, per_channel)
    y = codec.decode(payload, header)
    assert y.shape == x.shape and y.dtype == np.float32
    scale = np.asarray(header["scale"]).reshape((1, -1, 1, 1) if per_channel else ())
    assert np.all(np.abs(y - x) <= scale / 2 * (1 + 1e-6) + 1e-7)
    assert len(header["scale"]) == (6 if per_channel else 1)
    assert all(0 <= z <= 2**bits - 1 for z in header["zero_point"])
    assert np.all(y[:, 0][x[:, 0] == 0] == 0)  # zero is exact
    assert len(payload) == (x.size * bits + 7) // 8


def test_per_channel_scales_fit_each_channel():
    x = _activations()
    per_tensor = codec.decode(*codec.encode(x, 8, False))
    per_channel = codec.decode(*codec.encode(x, 8, True))
    small = int(np.argmin(np.abs(x).max(axis=(0, 2, 3))))
    assert np.abs(per_channel - x)[:, small].max() <= np.abs(per_tensor - x)[:, small].max()


def test_float16_and_float32():
    x = _activations() * 100
    payload, header = codec.encode(x, 16)
    assert len(payload) == 2 * x.size
    y = codec.decode(payload, header)
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0**-11 + 2.0**-24)
    payload, header = codec.encode(x, 32)
    assert len(payload) == 4 * x.size and np.array_equal(codec.decode(payload, header), x)
    big = codec.decode(*codec.encode(np.array([1e6, -1e6], np.float32), 16))
    assert list(big) == [65504.0, -65504.0]  # clipped, not inf


def test_four_bit_packing_two_codes_a_byte():
    x = np.arange(7, dtype=np.float32)[None, None, None, :]  # 7 values: 4 bytes, the last with one code
    payload, header = codec.encode(x, 4)
    assert len(payload) == 4 and codec.payload_nbytes(7, 4) == 4
    assert header["scale"] == [6 / 15] and header["zero_point"] == [0]
    codes = [round(v / (6 / 15)) for v in range(7)]
    assert payload[0] == codes[0] | (codes[1] << 4) and payload[3] == codes[6]
    assert np.allclose(codec.decode(payload, header), x, atol=6 / 15 / 2 + 1e-6)


def test_frame_round_trip_and_bad_input():
    tensors = {"enc1": _activations((1, 4, 8, 8)), "pool1": _activations((1, 4, 4, 4), seed=1)}
    frame = codec.encode_frame(tensors, 4, per_channel=True)
    back = codec.decode_frame(frame)
    assert list(back) == ["enc1", "pool1"] and all(back[n].shape == tensors[n].shape for n in tensors)
    with pytest.raises(ValueError, match="truncated"):
        codec.decode_frame(frame[:-3])
    with pytest.raises(ValueError, match="bits=12 is invalid: choose one of 32, 16, 8, 4"):
        codec.encode(tensors["enc1"], 12)


def test_iou_with_the_codec_in_the_loop(tmp_path):
    network = Network.create("unet", {"a": 0.125}, 64)
    model = network.build()
    cut = find_cut(cut_points(network, model), "encoder2")
    exported = export_split(model, network, cut, tmp_path / "h.onnx", tmp_path / "t.onnx")
    whole = export_onnx(model, tmp_path / "whole.onnx", network)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    masks = (rng.random((3, 64, 64)) > 0.5).astype(np.uint8)
    split = ResizedSplit((64, 64), None, 3, arrays=(images, masks))
    originals = OriginalMasks(None, 3, masks=[cv_mask for cv_mask in masks])
    kwargs = {"class_names": ("background", "package"), "binary": True, "in_channels": 3}
    reference = evaluate_onnx(whole.path, split, originals, **kwargs)
    exact = iou_with_codec(exported.head.path, exported.tail.path, split, originals, bits=32, **kwargs)
    assert exact.iou == pytest.approx(reference.iou, abs=1e-3)
    four = iou_with_codec(exported.head.path, exported.tail.path, split, originals, bits=4, per_channel=True, **kwargs)
    assert four.pixels == reference.pixels and all(0 <= v <= 1 for v in four.iou if v is not None)


# --- the table and the command -----------------------------------------------------------------------------


def test_split_table_arithmetic_for_a_small_unet():
    """U-Net a=0.125 at 64x64: encoder widths 8, 16, 32, 64, 64; encoder k output at 64/2^(k-1), its pool at half that."""
    table = split_table(Network.create("unet", {"a": 0.125}, 64), bits=(32, 16, 8, 4), fps=(10,), link_mbps=4)
    rows = {row.after or row.plan: row for row in table.rows}
    assert list(rows) == ["device", "encoder1", "encoder2", "encoder3", "encoder4", "encoder5", "server"]
    enc = [8 * 64 * 64, 16 * 32 * 32, 32 * 16 * 16, 64 * 8 * 8, 64 * 4 * 4]  # 32768, 16384, 8192, 4096, 1024
    pool = [8 * 32 * 32, 16 * 16 * 16, 32 * 8 * 8, 64 * 4 * 4, 64 * 2 * 2]  # 8192, 4096, 2048, 1024, 256
    expected = [40960, 53248, 59392, 62464, 62720]
    for k in range(5):
        assert sum(enc[: k + 1]) + pool[k] == expected[k]
        row = rows[f"encoder{k + 1}"]
        assert row.values == expected[k]
        assert row.bytes_per_frame == {32: 4 * expected[k], 16: 2 * expected[k], 8: expected[k], 4: expected[k] // 2}
        assert row.mbps[8][10.0] == pytest.approx(expected[k] * 8 * 10 / 1e6)
        assert row.fits[4][10.0] is True  # at most 62720 / 2 bytes x 80 = 2.5 Mbit/s
    assert rows["encoder1"].fits[8][10.0] is True and rows["encoder2"].fits[8][10.0] is False  # 3.28 vs 4.26 Mbit/s
    # The device's part at cut 1: two 3x3 convs 3->8 and 8->8 at 64x64, no bias, BatchNorm scale and shift.
    assert rows["encoder1"].device_macs == 64 * 64 * 8 * 3 * 9 + 64 * 64 * 8 * 8 * 9 == 3_244_032
    assert rows["encoder1"].device_params == 3 * 8 * 9 + 16 + 8 * 8 * 9 + 16 == 824
    assert rows["server"].values == 3 * 64 * 64 and set(rows["server"].bytes_per_frame.values()) == {12288}
    assert rows["server"].device_macs == 0 and rows["device"].values == 0 and rows["device"].bytes_per_frame[4] == 0
    assert rows["device"].device_params == 395_137  # the whole network (tests/test_models.py counts it by hand)
    assert rows["device"].device_macs > rows["encoder5"].device_macs > rows["encoder1"].device_macs


def test_split_command_json(capsys):
    assert main(["split", "--model", "unet", "--knobs", "a=0.125", "--resolution", "64", "--bits", "16,4", "--fps", "12,10", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["bits"] == [16, 4] and payload["fps"] == [12.0, 10.0] and payload["link_mbps"] == 1000.0
    rows = payload["rows"]
    assert [r["plan"] for r in rows] == ["device"] + ["cut"] * 5 + ["server"]
    first = rows[1]
    assert first["after"] == "encoder1" and first["values"] == 40960
    assert first["bytes_per_frame"] == {"16": 81920, "4": 20480}
    assert first["mbps"]["16"]["12"] == pytest.approx(81920 * 8 * 12 / 1e6, abs=1e-3) and first["fits"]["16"]["12"] is True
    assert [(t["name"], t["shape"], t["skip"]) for t in first["tensors"]] == [("enc1", [1, 8, 64, 64], True), ("pool1", [1, 8, 32, 32], False)]
    assert rows[-1]["tensors"][0]["name"] == "image" and rows[-1]["bytes_per_frame"]["4"] == 3 * 64 * 64


def test_split_command_table(capsys):
    assert main(["split", "--model", "fastscnn", "--knobs", "a=0.25", "--resolution", "64x96"]) == 0
    out = capsys.readouterr().out
    assert "after bottlenecks1" in out and "ltd (skip) 16x8x12" in out and "all on server" in out


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "unet", "--resolution", "100"], "multiple of 32"),
        (["--model", "unte", "--resolution", "64"], "did you mean 'unet'"),
        (["--model", "unet", "--knobs", "a=2", "--resolution", "64"], "knob a=2 is invalid"),
        (["--model", "unet", "--resolution", "64", "--bits", "16,12"], "choose from 32, 16, 8, 4"),
        (["--model", "unet", "--resolution", "64", "--bits", "x"], "--bits 'x' is invalid"),
        (["--model", "unet", "--resolution", "64", "--fps", "0"], "must be > 0"),
        (["--model", "unet", "--resolution", "64", "--classes", "5000"], "--classes 5000 is invalid"),
        (["--model", "unet", "--resolution", "64", "--link-mbps", "inf"], "--link-mbps inf is invalid"),
        (["--model", "unet", "--resolution", "64", "--config", "no-such-study.yaml"], "does not exist"),
    ],
)
def test_split_command_bad_input_exits_2(args, fragment, capsys):
    assert main(["split", *args]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_split_command_exit_2_is_one_line_in_a_real_process(cli):
    result = cli("split", "--model", "unet", "--resolution", "64", "--bits", "3")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bits 3 invalid" in result.stderr and not result.stdout


def test_split_command_measures_every_plan_on_the_configs_device_server_and_link(tmp_path, capsys):
    measure = {"threads": 1, "warmup": 1, "min_runs": 3, "min_seconds": 0}
    config = tmp_path / "study.yaml"
    config.write_text(f"data: {{root: data}}\ndevice: {{kind: local, measure: {measure}}}\n")
    assert main(["split", "--model", "fastscnn", "--knobs", "a=0.125,t=1,r=1", "--resolution", "64", "--config", str(config)]) == 2
    assert "has no server: and no link: section" in capsys.readouterr().err
    config.write_text(config.read_text() + f"server: {{kind: local, measure: {measure}}}\nlink: {{uplink_mbps: 10, rtt_ms: 5}}\n")
    assert main(["split", "--model", "fastscnn", "--knobs", "a=0.125,t=1,r=1", "--resolution", "64", "--bits", "32,4",
                 "--config", str(config), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["measured"]
    plans = {(p["cut"], p["bits"]): p for p in measured["plans"]}
    assert set(plans) == {(c, b) for c in ("server", "learning_to_downsample", "bottlenecks1", "bottlenecks2", "bottlenecks3",
                                          "pyramid_pooling", "feature_fusion") for b in (32, 4)}
    for plan in plans.values():
        assert plan["link_ms"] == pytest.approx(plan["link_bytes"] * 8 / 10e3 + plan["mask_bytes"] * 8 / 10e3 + 5)
        assert plan["latency_ms"] == pytest.approx(plan["device_latency_ms"] + plan["link_ms"] + plan["server_latency_ms"])
    assert plans[("server", 4)]["link_bytes"] < plans[("server", 32)]["link_bytes"] / 6 and measured["all_on_device_ms"] > 0


def test_messages_cross_a_socket_whole_and_a_clean_close_is_none():
    import socket
    import threading

    left, right = socket.socketpair()
    frame = codec.encode_frame({"a": np.arange(70000, dtype=np.float32).reshape(1, 7, 100, 100)}, 4)
    writer = threading.Thread(target=lambda: (codec.send_message(left, frame), codec.send_message(left, b""), left.close()))
    writer.start()
    assert codec.recv_message(right) == frame
    assert codec.recv_message(right) == b""
    assert codec.recv_message(right) is None
    writer.join()
    right.close()
    left, right = socket.socketpair()
    left.sendall(b"\x10\x00\x00\x00\x00\x00\x00\x00abc")
    left.close()
    with pytest.raises(ConnectionError, match="after 3 of 16 bytes"):
        codec.recv_message(right)
    right.close()
