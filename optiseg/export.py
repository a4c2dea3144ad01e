"""ONNX export with a parity check and the metadata a deployer needs.

The network is traced with a fixed input shape ``(1, C, H, W)`` by PyTorch's
TorchScript-based exporter (opset 17, IR 8: loadable by onnxruntime >= 1.14,
which is what a Raspberry Pi usually has), BatchNorm is folded into the
convolutions and Dropout removed, and the graph is cleaned by onnxscript's
optimizer (constant shapes folded, pass-through Identity nodes removed). The
result must pass ``onnx.checker`` and agree with PyTorch on a random input.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .errors import ExportError
from .network import Network
from .preprocessing import input_spec

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size_mb: float
    max_abs_diff: float
    metadata: dict[str, str]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    network: Network,
    *,
    class_names: Sequence[str] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export ``model`` (the module of ``network``) for input ``network.input_shape`` to ``path``.

    The file only appears at ``path`` once it has passed ``onnx.checker`` and
    the onnxruntime-versus-PyTorch parity check (max abs difference of the
    logits <= ``tolerance``); otherwise :class:`ExportError` is raised and
    nothing is written.
    """
    height, width = network.resolution
    dummy = torch.randn(1, network.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    metadata = network_metadata(network, class_names=class_names, opset=opset)
    metadata.update(extra_metadata or {})
    return export_graph(
        model, path, {INPUT_NAME: dummy}, (OUTPUT_NAME,), metadata,
        what=f"{network.model} {network.knob_dict} at {height}x{width}", opset=opset, tolerance=tolerance,
    )


def network_metadata(network: Network, *, class_names: Sequence[str] | None = None, opset: int = DEFAULT_OPSET) -> dict[str, str]:
    """The ``metadata_props`` of the whole network's ONNX file: what a deployer needs to preprocess and decode."""
    from . import __version__

    height, width = network.resolution
    in_channels, num_classes = network.in_channels, network.num_classes
    spec = input_spec(in_channels)
    metadata = {
        "model": network.model,
        "knobs": json.dumps(dict(network.knob_dict), sort_keys=True),
        "resolution": f"{height}x{width}",
        "input_name": INPUT_NAME,
        "input_shape": json.dumps([1, in_channels, height, width]),
        "input_layout": "NCHW float32",
        "channel_order": spec.channel_order,
        "pixel_scale": "1/255",
        "normalization_mean": json.dumps(list(spec.mean)),
        "normalization_std": json.dumps(list(spec.std)),
        "output_name": OUTPUT_NAME,
        "num_classes": str(num_classes),
        "output": "one logit per pixel: foreground where sigmoid(logit) > 0.5"
        if num_classes == 1
        else f"{num_classes} logits per pixel: class = argmax over channels",
        "optiseg_version": __version__,
        "exporter": f"torch {torch.__version__} torchscript + onnxscript optimizer",
        "opset": str(opset),
        "precision": "fp32",
        "network_key": network.key,
    }
    if class_names is not None:
        metadata["class_names"] = json.dumps(list(class_names))
    return metadata


def export_graph(
    module: nn.Module,
    path: str | os.PathLike,
    example_inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    metadata: Mapping[str, str],
    *,
    what: str,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export ``module`` (called with ``example_inputs``' tensors in order) with named inputs and outputs.

    The one export path of optiseg, for whole networks and for the parts of a
    split network alike: traced at the examples' fixed shapes, cleaned, checked
    with ``onnx.checker``, and run by onnxruntime on ``example_inputs``; every
    output must agree with PyTorch within ``tolerance`` (max abs difference),
    or :class:`ExportError` is raised and nothing is written. ``what`` names
    the graph in error messages. The file only appears at ``path`` once it passed.
    """
    from . import __version__

    path = Path(path)
    names = list(example_inputs)
    args = tuple(example_inputs[name] for name in names)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            result = module(*args)
        expected = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
        if len(expected) != len(output_names):
            raise ExportError(f"{what}: the module returns {len(expected)} tensors for {len(output_names)} output names")
        graph = _trace_to_onnx(module, args, opset, names, list(output_names))
    finally:
        module.train(was_training)

    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, str(value)
    graph.producer_name = "optiseg"
    graph.producer_version = __version__

    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph of {what} failed onnx.checker: {exc}") from None

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(graph.SerializeToString())
    try:
        feeds = {name: tensor.numpy() for name, tensor in zip(names, args)}
        actual = run_onnxruntime(tmp.name, feeds, output_names)
        max_diff = max(float(np.max(np.abs(a - e))) if a.size else 0.0 for a, e in zip(actual, expected))
        if not max_diff <= tolerance:
            raise ExportError(
                f"onnxruntime and PyTorch disagree on {what}: max abs difference of the outputs {max_diff:.3g} > {tolerance:g}",
                hint="this is a bug in optiseg or in the exporter; please report it with the command you ran",
            )
        os.replace(tmp.name, path)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    return ExportResult(path=path, size_mb=path.stat().st_size / (1024 * 1024), max_abs_diff=max_diff, metadata=dict(metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (weights are not loaded)."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ExportError(f"{path} is not a readable ONNX file: {exc}") from None
    return {entry.key: entry.value for entry in graph.metadata_props}


def _trace_to_onnx(
    model: nn.Module, args: tuple[torch.Tensor, ...], opset: int, input_names: list[str], output_names: list[str]
) -> onnx.ModelProto:
    import onnxscript.optimizer

    with tempfile.TemporaryDirectory() as tmp_dir, warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, but it writes
        # IR 8 graphs that older onnxruntime builds on devices can load; the tracer's notes
        # about Python ints are expected: the input shape is fixed by design.
        warnings.simplefilter("ignore")
        raw_path = Path(tmp_dir) / "raw.onnx"
        try:
            torch.onnx.export(
                model,
                args,
                str(raw_path),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
        graph = onnx.load(str(raw_path))
    return onnxscript.optimizer.optimize(graph)


def run_onnxruntime(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
    """Run the ONNX file at ``path`` once on the CPU with the named float32 ``feeds``; the named outputs, in order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(list(output_names), {name: np.asarray(a, np.float32) for name, a in feeds.items()})
