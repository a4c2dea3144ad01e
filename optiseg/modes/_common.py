"""What several modes share: the untrained network's profile and FP32 graph, figures from a latency, calibration images."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import p90_of
from ..network import Network
from ._base import ModeContext

MB = 2**20
NOTHING_REMOTE = {"server_latency_ms": 0.0, "link_ms": 0.0, "link_bytes": 0, "uplink_mbps": 0.0}  # a plan wholly on the device


@contextmanager
def timed(context: ModeContext, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        context.timings[key] = round(context.timings.get(key, 0.0) + time.perf_counter() - start, 3)


def untrained_network(network: Network, context: ModeContext) -> tuple[dict[str, float], Path]:
    """The network's static cost (params, MACs, activation MB) and its untrained FP32 ONNX graph (exported once)."""
    from ..export import export_onnx
    from ..profile import profile_model

    with timed(context, "profile_s"):
        context.stage("building")
        model = network.build()
        profile = profile_model(model, network.input_shape)
    path = context.network_folder.untrained_onnx
    if not path.exists():
        with timed(context, "export_s"):
            context.stage("exporting ONNX")
            export_onnx(model, path, network, class_names=context.class_names)
    figures = {"params": profile.params, "macs": profile.macs, "activation_mb": round(profile.activation_mb, 3)}
    return figures, path


def latency_figures(latency: dict[str, Any], model_file: Path, activation_mb: float) -> dict[str, float]:
    """The named metrics of a model that runs wholly on the device."""
    median = float(latency["median_ms"])
    onnx_mb = round(model_file.stat().st_size / MB, 4)
    return {
        "latency_ms": median,
        "latency_p90_ms": p90_of(latency),
        "device_latency_ms": median,
        **NOTHING_REMOTE,
        "onnx_mb": onnx_mb,
        "device_mb": round(onnx_mb + activation_mb, 3),
        "fps": 1000.0 / median if median > 0 else None,
    }


def calibration_inputs(network: Network, context: ModeContext, count: int, seed: int) -> list[np.ndarray]:
    """``count`` training images (seeded choice) preprocessed exactly as at inference: resized whole, normalized, NCHW."""
    import torch

    from ..training import to_model_input

    images = context.cache.resized("train", network.resolution)
    order = np.random.default_rng(seed).permutation(len(images))[: max(1, min(count, len(images)))]
    cpu = torch.device("cpu")
    return [to_model_input(images[int(i)][0][None], network.in_channels, cpu).contiguous().numpy() for i in order]


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a torn write from a killed run: compute again


def against_whole_network(iou: float | None, trained: Any) -> dict[str, Any]:
    """Details of a plan whose IoU differs from its network's own (the PyTorch network's test IoU): both, and the change."""
    whole = trained.metrics.get("test_iou")
    return {"whole_network_iou": whole, "iou_change": None if whole is None or iou is None else iou - whole,
            "training": dict(trained.metrics)}


def keep_scores(path: Path, evaluation):
    """Write a plan's quality evaluation where ``quality`` reads it back (so it is computed once); return it."""
    from .._atomic import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, evaluation.as_dict())
    return evaluation
