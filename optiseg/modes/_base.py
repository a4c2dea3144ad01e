"""The protocol every deployment mode follows, and what the search hands it.

Life cycle (the orchestrator, :func:`optiseg.search.trial.evaluate`, calls, per trial):

1. ``mode.plan(network, knobs)``: the :class:`DeploymentPlan` of ``network`` with
   the mode's deployment ``knobs`` (pure; no file is touched).
2. ``mode.cost(plan, context)`` **before any training**: build what the plan
   deploys from the *untrained* network(s) (the graph, hence its speed and
   size, does not depend on the weights) and measure it on its runner(s).
   Returns an :class:`Evaluation` holding only cost metrics
   (:attr:`Metric.cost`). Files go below ``context.folder``; a finished file is
   reused, so calling it again after an interruption redoes nothing finished.
3. The orchestrator gates on the cost constraints: a plan that cannot meet them
   is recorded as too slow and its network is not trained for it.
4. The network(s) are trained (once per network, whatever the plan).
5. ``mode.quality(plan, trained, context, cost)`` after training: build the
   deployable artifact from the trained weights, score it (IoU measured on the
   test split with the artifact itself where it differs from the PyTorch
   network) and return ``cost`` merged with the quality metrics. It may
   re-measure latency on the trained artifact and replace the cost figures.
   It may add operating points (a runtime knob swept without retraining).
   Idempotent like ``cost``.
6. ``mode.artifacts(plan, network_folder)``: the files ``optiseg deploy`` ships, with a
   line each for its README.
7. ``mode.timed_model(plan, network_folder)``: the model file whose latency is the
   plan's ``latency_ms`` (what ``quality`` measured last, else what ``cost`` measured).
   Confirmation rounds (:mod:`optiseg.search.confirm`) time it again, after the
   trial finished; it must be a file the study folder keeps.

A mode raises :class:`~optiseg.errors.OptisegError` for a plan that cannot be
built or loaded; that fails the trial, never the study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..layout import NetworkFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation
from ..quantize import QuantizationSettings


@dataclass
class ModeContext:
    """What a mode may use. ``measure(onnx, local_file, shared_name)`` times a model on the device (cached)."""

    network_folder: NetworkFolder
    measure: Callable[[Path, Path, str | None], dict[str, Any]]
    dataset: Any = None
    cache: Any = None  # DatasetCache
    class_names: list[str] | None = None
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    stage: Callable[[str], None] = lambda text: None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A file ``optiseg deploy`` ships: where it is, the name it gets, what it is."""

    source: Path
    name: str
    description: str


@runtime_checkable
class DeploymentMode(Protocol):
    """A way of deploying trained network(s); see the module docstring for the life cycle."""

    name: str
    description: str
    family: str  # the name a study's `mode:` lists (device covers the FP32 and INT8 modes)
    needs_server: bool  # a part of its plans runs on the study's `server:`, over its `link:`
    knobs: Mapping[str, tuple[Any, ...]]  # the deployment knobs it takes, with every value
    latency_is_one_model: bool  # its latency_ms is one graph timed on the device, which the latency model may predict

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan: ...

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation: ...

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation: ...

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]: ...

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path: ...
