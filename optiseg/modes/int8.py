"""Mode ``int8``: the whole network on the device, statically quantized to INT8 (QDQ, onnxruntime's tools).

Cost (before training): the untrained FP32 graph is quantized, calibrated on
a few training images, and timed on the device: the graph of an INT8 model,
hence its speed, depends on the architecture, not on the weights. Quality
(after training): the trained FP32 model is quantized with the full
calibration set, its IoU is measured **through onnxruntime on the test split**
and its latency on the device again; no speed-up is assumed anywhere (on CPUs
without 8-bit dot-product instructions INT8 convolutions can be slower than
FP32: the front shows what the device measured).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._atomic import write_json_atomic
from ..errors import StudyError
from ..layout import NetworkFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation
from ..quantize import quantize_int8
from . import register_mode
from ._base import Artifact, ModeContext
from ._common import calibration_inputs, latency_figures, read_json, timed, untrained_network

COST_CALIBRATION_IMAGES = 8  # for timing the untrained graph: the scales do not change the graph
PLAN_FOLDER = "int8"


class Int8Mode:
    name = "int8"
    description = "the whole network on the device, INT8 (static post-training quantization, QDQ)"
    family = "device"  # the name a study's `mode:` lists
    needs_server = False
    latency_is_one_model = True  # latency_ms is one graph timed on the device (the latency model may predict it)
    knobs: Mapping[str, tuple[Any, ...]] = {"precision": ("int8",)}

    def knob_values(self, network: Network) -> Mapping[str, tuple[Any, ...]]:
        return self.knobs

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        return DeploymentPlan(mode=self.name, networks=(network,), knobs=(("precision", "int8"),))

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        network = plan.network
        figures, fp32 = untrained_network(network, context)
        folder = context.network_folder.plan(PLAN_FOLDER)
        settings = context.quantization
        if not folder.untrained_model.exists():
            with timed(context, "quantize_s"):
                context.stage("quantizing to INT8 (untrained, for timing)")
                calibration = calibration_inputs(network, context, min(COST_CALIBRATION_IMAGES, settings.calibration_images), settings.seed)
                quantize_int8(fp32, folder.untrained_model, calibration, settings)
        latency = context.measure(folder.untrained_model, folder.cost, f"{network.key}@int8-{_digest(settings)}")
        metrics = {**figures, **latency_figures(latency, folder.untrained_model, figures["activation_mb"])}
        return Evaluation(metrics={k: v for k, v in metrics.items() if v is not None},
                          details={"latency": latency, "quantization": settings.as_dict()})

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation:
        from ..training import evaluate_onnx

        network = plan.network
        folder = context.network_folder.plan(PLAN_FOLDER)
        stored = read_json(folder.quality)
        if stored is not None:
            return Evaluation.from_dict(stored)
        settings = context.quantization
        if trained.onnx is None:
            raise StudyError(f"the trained FP32 model of {network.key} is missing ({context.network_folder.trained_onnx})",
                             hint="the training run did not export it; delete the network's train/ folder to train it again")
        with timed(context, "quantize_s"):
            context.stage(f"quantizing to INT8 ({settings.calibration_images} calibration images)")
            calibration = calibration_inputs(network, context, settings.calibration_images, settings.seed)
            result = quantize_int8(trained.onnx, folder.model, calibration, settings)
        with timed(context, "score_s"):
            context.stage("scoring the INT8 model with onnxruntime on the test split")
            dataset = context.dataset
            scores = evaluate_onnx(
                folder.model, context.cache.resized("test", network.resolution), context.cache.original_masks("test"),
                class_names=tuple(dataset.class_names), binary=dataset.binary, in_channels=network.in_channels,
            )
        latency = context.measure(folder.model, folder.latency, None)
        fp32_iou = trained.metrics.get("test_iou")
        metrics = {**cost.metrics, **latency_figures(latency, folder.model, cost.metrics["activation_mb"]),
                   "iou": scores.primary_iou, "miou": scores.mean_iou, "val_iou": trained.metrics.get("val_iou")}
        evaluation = Evaluation(
            metrics={k: v for k, v in metrics.items() if v is not None},
            per_class_iou={k: v for k, v in zip(scores.class_names, scores.iou) if v is not None},
            details={
                "latency": latency,
                "untrained_latency": cost.details.get("latency"),
                "quantization": result.as_dict(),
                "fp32_iou": fp32_iou,
                "iou_change": None if fp32_iou is None or scores.primary_iou is None else scores.primary_iou - fp32_iou,
                "iou_source": "the INT8 ONNX model run by onnxruntime on the test split",
                "training": dict(trained.metrics),
            },
        )
        write_json_atomic(folder.quality, evaluation.as_dict())
        return evaluation

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        return [Artifact(network_folder.plan(PLAN_FOLDER).model, "model.onnx",
                         "the trained network quantized to INT8 (QDQ; onnxruntime runs it with integer kernels)")]

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path:
        """The trained INT8 model ``quality`` timed; before training (a plan measured too slow), the untrained one."""
        folder = network_folder.plan(PLAN_FOLDER)
        return folder.model if folder.model.exists() else folder.untrained_model


def _digest(settings) -> str:
    return hashlib.sha256(json.dumps(settings.as_dict(), sort_keys=True).encode()).hexdigest()[:10]


register_mode(Int8Mode())
