"""Static post-training INT8 quantization of an exported network, with onnxruntime's own tools.

``quant_pre_process`` (shape inference and graph optimization), then
``quantize_static`` in the QDQ format, S8S8 by default (signed 8-bit
activations and weights), calibrated on images preprocessed exactly as at
inference. The result records which operators stayed in float, and the
calibration settings, in its ONNX metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ExportError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class QuantizationSettings:
    """How to quantize: calibration method and images, per-channel weights, activation type, operators kept in float."""

    method: str = "minmax"
    calibration_images: int = 100
    per_channel: bool = True
    activations: str = "int8"  # "int8" (S8S8) or "uint8" (U8S8)
    symmetric_activations: bool = False
    percentile: float = 99.999
    exclude_ops: tuple[str, ...] = ()
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "calibration_images": self.calibration_images, "per_channel": self.per_channel,
            "activations": self.activations, "weights": "int8", "symmetric_activations": self.symmetric_activations,
            "percentile": self.percentile, "exclude_ops": list(self.exclude_ops), "seed": self.seed, "format": "QDQ",
        }


@dataclass(frozen=True)
class QuantizationResult:
    path: Path
    size_mb: float
    float_ops: dict[str, int] = field(default_factory=dict)
    quantized_ops: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"size_mb": round(self.size_mb, 4), "float_ops": self.float_ops, "quantized_ops": self.quantized_ops,
                "settings": self.settings}


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` over a list of NCHW float32 batches of one image."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]):
        self.input_name = input_name
        self.arrays = list(arrays)
        self.index = 0

    def get_next(self):
        if self.index >= len(self.arrays):
            return None
        array = self.arrays[self.index]
        self.index += 1
        return {self.input_name: np.ascontiguousarray(array, dtype=np.float32)}

    def rewind(self) -> None:
        self.index = 0


def quantize_int8(
    source: str | os.PathLike,
    target: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    settings: QuantizationSettings = QuantizationSettings(),
) -> QuantizationResult:
    """Quantize the FP32 ONNX ``source`` into ``target`` (written atomically); raise :class:`ExportError` on failure.

    ``calibration`` yields inputs of shape ``(1, C, H, W)`` preprocessed as at inference.
    The quantized model must load in onnxruntime before it is kept.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if settings.method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {settings.method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    source, target = Path(source), Path(target)
    arrays = list(calibration)
    if not arrays:
        raise ExportError("INT8 calibration needs at least one image", hint="set quantization.calibration_images >= 1")
    graph = onnx.load(str(source))
    input_name = graph.graph.input[0].name
    metadata = {p.key: p.value for p in graph.metadata_props}

    class Reader(_Reader, CalibrationDataReader):
        pass

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    extra: dict[str, Any] = {"ActivationSymmetric": settings.symmetric_activations}
    if settings.method == "percentile":
        extra["CalibPercentile"] = settings.percentile
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "quantized.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            exclude = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in settings.exclude_ops]
            quantize_static(
                str(prepared), str(quantized), Reader(input_name, arrays),
                quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                activation_type=QuantType.QInt8 if settings.activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=exclude or None,
                extra_options=extra, calibration_providers=["CPUExecutionProvider"],
            )
        except ExportError:
            raise
        except Exception as exc:  # onnxruntime's quantizer raises many kinds
            raise ExportError(
                f"INT8 quantization of {source} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                hint="try another quantization.method, per_channel: false, or leave the failing operator types in float "
                "(quantization.exclude_ops)",
            ) from None
        model = onnx.load(str(quantized))
        float_ops, quantized_ops = operator_precision(model)
        record = settings.as_dict()
        metadata.update({
            "precision": "int8",
            "quantization": json.dumps(record, sort_keys=True),
            "float_ops": json.dumps(float_ops, sort_keys=True),
            "calibration_images": str(len(arrays)),
        })
        del model.metadata_props[:]
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(model, str(quantized))
        _check_loads(quantized, source)
        os.replace(quantized, target)
    return QuantizationResult(target, target.stat().st_size / 2**20, float_ops, quantized_ops, record)


def operator_precision(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """(operators left in float, operators quantized) by op type, in a QDQ graph.

    An operator is quantized when every one of its non-constant inputs comes
    from a ``DequantizeLinear`` node (onnxruntime then fuses it into an
    integer kernel); Q/DQ nodes themselves are not counted.
    """
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    float_ops: Counter[str] = Counter()
    quantized: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        inputs = [name for name in node.input if name and name not in constants and producers.get(name) != "Constant"]
        if inputs and all(producers.get(name) == "DequantizeLinear" for name in inputs):
            quantized[node.op_type] += 1
        else:
            float_ops[node.op_type] += 1
    return dict(sorted(float_ops.items())), dict(sorted(quantized.items()))


def read_precision(metadata: Mapping[str, str]) -> str:
    return metadata.get("precision", "fp32")


def _check_loads(path: Path, source: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot load the INT8 model quantized from {source}: {str(exc).splitlines()[0]}",
            hint="leave the failing operator types in float (quantization.exclude_ops) or use per_channel: false",
        ) from None
