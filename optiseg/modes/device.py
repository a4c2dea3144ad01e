"""Mode ``device``: the whole network on the device in FP32, as exported (optiseg's original behaviour)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..layout import NetworkFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation
from . import register_mode
from ._base import Artifact, ModeContext
from ._common import latency_figures, untrained_network


class DeviceMode:
    name = "device"
    description = "the whole network on the device, FP32"
    family = "device"  # the name a study's `mode:` lists
    needs_server = False
    latency_is_one_model = True  # latency_ms is one graph timed on the device (the latency model may predict it)
    knobs: Mapping[str, tuple[Any, ...]] = {"precision": ("fp32",)}

    def knob_values(self, network: Network) -> Mapping[str, tuple[Any, ...]]:
        return self.knobs

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        return DeploymentPlan(mode=self.name, networks=(network,), knobs=(("precision", "fp32"),))

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        figures, onnx = untrained_network(plan.network, context)
        latency = context.measure(onnx, context.network_folder.latency, plan.network.key)
        metrics = {**figures, **latency_figures(latency, onnx, figures["activation_mb"])}
        return Evaluation(metrics={k: v for k, v in metrics.items() if v is not None}, details={"latency": latency})

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation:
        scores = trained.metrics
        per_class = {name: value for name, value in (scores.get("test_class_iou") or {}).items() if value is not None}
        return cost.merged(
            metrics={"iou": scores.get("test_iou"), "miou": scores.get("test_miou"), "val_iou": scores.get("val_iou")},
            per_class_iou=per_class,
            details={"training": dict(scores), "iou_source": "PyTorch network on the test split"},
        )

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        return [Artifact(network_folder.trained_onnx, "model.onnx", "the trained network, FP32")]

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path:
        """The untrained FP32 graph: ``cost`` timed it, and training changes the weights, not the graph."""
        return network_folder.untrained_onnx


register_mode(DeviceMode())
