"""The device's one model file: the small network and its router exported together, and its router scores on a split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..network import Network
from ._routers import RoutedModel

QUALITY_OUTPUT = "quality"
TARGET_WORDS = {"accuracy": "pixel accuracy on the image", "iou": "IoU on the image"}


def export_device_graph(routed: RoutedModel, path: Path, *, small: Network, large: Network, router: str, target: str,
                        class_names: Sequence[str], example: np.ndarray) -> Path:
    """Export ``routed`` (image -> logits, quality) to ``path``; its metadata tell the device script what to do.

    The parity check runs on ``example``, a real preprocessed image (uint8 ``(H, W, 3)`` at the small
    network's input size): the router's inputs are standardized with statistics of real images, and
    noise would put them far outside that range.
    """
    from ..export import INPUT_NAME, OUTPUT_NAME, export_graph, network_metadata

    metadata = network_metadata(small, class_names=class_names)
    metadata.update({
        "cascade_router": router,
        "quality_output": QUALITY_OUTPUT,
        "cascade_target": target,
        "cascade_rule": f"send the image to the server when {QUALITY_OUTPUT} (this model's predicted {TARGET_WORDS[target]}) < threshold",
        "server_network_key": large.key,
        "server_input_shape": json.dumps(list(large.input_shape)),
        "server_num_classes": str(large.num_classes),
    })
    from ..training.evaluate import to_model_input

    image = to_model_input(example[None], small.in_channels, torch.device("cpu")).contiguous()
    export_graph(routed, path, {INPUT_NAME: image}, (OUTPUT_NAME, QUALITY_OUTPUT), metadata,
                 what=f"the cascade's device graph ({small.describe()} with its {router} router)")
    return path


def router_scores(path: Path, images, *, in_channels: int, threads: int = 0) -> np.ndarray:
    """The ``quality`` output of the device graph at ``path`` for every image of a resized split, run by onnxruntime."""
    from ..training.evaluate import onnx_predictor, to_model_input

    predict = onnx_predictor(path, threads, output=QUALITY_OUTPUT)
    cpu = torch.device("cpu")
    return np.array([float(np.ravel(predict(to_model_input(images[i][0][None], in_channels, cpu).contiguous().numpy()))[0])
                     for i in range(len(images))], np.float64)


def profile_macs(module: nn.Module, network: Network) -> int:
    """Multiply-accumulates of ``module`` at ``network``'s input shape, counted as optiseg counts them."""
    from ..profile import profile_model

    return profile_model(module, network.input_shape).macs
