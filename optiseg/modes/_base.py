"""The protocol every deployment mode follows, and what the search hands it.

Life cycle (the orchestrator, :func:`optiseg.search.trial.evaluate`, calls, per trial):

1. ``mode.plan(network, knobs)``: the :class:`DeploymentPlan` of ``network`` with
   the mode's deployment ``knobs`` (pure; no file is touched). ``mode.knob_values(network)``
   says which values each knob takes for that network (the search space draws from them).
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
   trial finished; it must be a file the study folder keeps. ``None`` for a plan
   whose latency is not one graph on the device (a split plan: two graphs and a link).

Attributes: ``name`` (the plan's mode), ``family`` (the name a study's ``mode:``
lists; ``device`` covers FP32 and INT8), ``knobs`` (deployment knobs with every
value; an empty tuple: values that depend on the network, e.g. split's ``cut``),
``needs_server`` (a part runs on the study's ``server:``, over its ``link:``), and
``latency_is_one_model`` (``latency_ms`` is one graph timed on the device: the
latency model may predict it and check it).

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
    """What a mode may use.

    ``measure(onnx, local_file, shared_name, codec=None)`` times a model on the device (kept in
    ``local_file`` and, under ``shared_name``, in the device's latency cache; a figure found there is
    not measured again); ``measure_server`` does the same on the study's server (``None`` without one).
    ``codec`` (a :class:`~optiseg.devices.CodecStep`) adds the link's encoding or decoding to each run.
    ``link`` is the study's :class:`~optiseg.config.LinkConfig` (``None`` without one).
    """

    network_folder: NetworkFolder
    measure: Callable[..., dict[str, Any]]
    measure_server: Callable[..., dict[str, Any]] | None = None
    link: Any = None  # LinkConfig
    device_label: str = "device"
    server_label: str = "server"
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
    family: str
    needs_server: bool
    knobs: Mapping[str, tuple[Any, ...]]
    latency_is_one_model: bool  # its latency_ms is one graph timed on the device, which the latency model may predict

    def knob_values(self, network: Network) -> Mapping[str, tuple[Any, ...]]: ...

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan: ...

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation: ...

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation: ...

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]: ...

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path | None: ...
