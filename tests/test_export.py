"""ONNX export: parity with PyTorch at several resolutions, a clean graph, and complete metadata."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from optiseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from optiseg.errors import ExportError
from optiseg.network import Network
from optiseg.export import export_onnx, read_metadata
from optiseg.models import build_model, list_models

FULL_KNOBS = {"fastscnn": {"a": 1, "t": 6, "r": 3, "pp": 1}, "bisenetv2": {"a": 1, "t": 6, "r": 3, "ce": 1, "head_mid": 1024}, "unet": {"a": 0.25}}
STRAY_OPS = {"BatchNormalization", "Dropout", "Identity", "Shape", "Gather", "ScatterND", "Where", "Expand", "ConstantOfShape"}


def _onnx_vs_torch(model, path, size, in_channels=3):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, in_channels, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    actual = session.run(None, {"input": x.numpy()})[0]
    return float(np.max(np.abs(actual - expected)))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [(64, 64), (192, 192), (544, 960)])
def test_parity_with_every_module_on(name, size, tmp_path):
    model = build_model(name, FULL_KNOBS[name], num_classes=1)
    result = export_onnx(model, tmp_path / "m.onnx", Network.create(name, FULL_KNOBS[name], size, num_classes=1))
    assert result.max_abs_diff <= 1e-4
    assert _onnx_vs_torch(model, result.path, size) <= 1e-4  # on a second, independent input


@pytest.mark.parametrize("name", list_models())
def test_graph_is_clean_and_valid(name, tmp_path):
    model = build_model(name, num_classes=3)
    result = export_onnx(model, tmp_path / "m.onnx", Network.create(name, {}, (544, 960), num_classes=3))
    graph = onnx.load(str(result.path))
    onnx.checker.check_model(graph, full_check=True)
    ops = Counter(node.op_type for node in graph.graph.node)
    stray = set(ops) & STRAY_OPS
    if name == "bisenetv2":
        # The context embedding normalizes a pooled vector with no convolution before it to fold into.
        assert ops["BatchNormalization"] == 1
        stray.discard("BatchNormalization")
    assert not stray, ops
    assert graph.opset_import[0].version >= 17
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 544, 960]


def test_metadata_tells_how_to_preprocess(tmp_path):
    model = build_model("fastscnn", {"a": 0.5}, num_classes=3, in_channels=1)
    export_onnx(
        model, tmp_path / "m.onnx", Network.create("fastscnn", {"a": 0.5}, (128, 192), in_channels=1, num_classes=3), class_names=["background", "box", "<script>"],
    )
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["model"] == "fastscnn"
    assert json.loads(meta["knobs"]) == {"a": 0.5, "t": 6, "r": 3, "pp": True}  # every knob, resolved
    assert meta["resolution"] == "128x192"
    assert meta["num_classes"] == "3"
    assert json.loads(meta["class_names"]) == ["background", "box", "<script>"]
    assert meta["channel_order"] == "Y"
    assert len(json.loads(meta["normalization_mean"])) == 1 and len(json.loads(meta["normalization_std"])) == 1
    assert json.loads(meta["input_shape"]) == [1, 1, 128, 192]
    assert meta["optiseg_version"] and meta["opset"] == "17"


def test_export_loads_trained_weights(tmp_path):
    model = build_model("fastscnn", {"a": 0.25}, num_classes=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(
        tmp_path / "ckpt.pt",
        {"model": "fastscnn", "knobs": {"a": 0.25}, "num_classes": 2, "in_channels": 3, "state_dict": model.state_dict()},
    )
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "ckpt.pt"))
    result = export_onnx(restored, tmp_path / "m.onnx", Network.create("fastscnn", {"a": 0.25}, (96, 96), num_classes=2))
    assert _onnx_vs_torch(model, result.path, (96, 96)) <= 1e-4


def test_parity_failure_is_reported_and_nothing_written(tmp_path):
    model = build_model("fastscnn", {"a": 0.25}, num_classes=1)
    with pytest.raises(ExportError, match="onnxruntime and PyTorch disagree"):
        export_onnx(model, tmp_path / "m.onnx", Network.create("fastscnn", {}, (64, 64), num_classes=1), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_export_keeps_training_mode(tmp_path):
    model = build_model("fastscnn", {"a": 0.25}).train()
    export_onnx(model, tmp_path / "m.onnx", Network.create("fastscnn", {}, (64, 64), num_classes=1))
    assert model.training
