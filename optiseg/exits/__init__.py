"""Early exits: a network with side exits run as a chain of stage graphs that stops on easy images.

The model side (the ``exits`` and ``exit_width`` knobs, the exit heads in the
stage list, :func:`~optiseg.models.forward_exits`) lives in ``optiseg.models``
and training with exits in ``optiseg.training``. This package deploys and
measures such a network:

* :func:`export_exit_chain` -- stage k of the chain gives exit k's logits and what later stages need (parity-checked);
* :func:`measure_chain` -- each stage graph (and exit upsampling) timed on a device, cumulative to each exit;
* :func:`exit_outputs` -- every output's confidence and confusion on every image of a split (onnxruntime);
* :func:`operating_curve`, :func:`exit_table`, :func:`best_point` -- the policy's arithmetic (pure);
* :func:`write_exit_deployment` -- the stage graphs, the threshold table and ``early_exit.py`` for the device;
* :func:`analyse_exits` -- all of it for one trained network (what ``optiseg exits`` prints).

>>> chain = export_exit_chain(model, network, "chain/")
>>> latency = measure_chain(chain, runner)
>>> per_image = exit_outputs(chain, cache.resized("test", network.resolution), cache.original_masks("test"),
...                          num_classes=2, in_channels=3)   # confidences computed by the stage graphs
>>> curve = operating_curve(per_image, latency.cumulative_ms, [0.8, 0.9, 0.95], class_names=names, binary=True)
"""

from .._runners.early_exit import CONFIDENCES
from .chain import (
    ChainSegment,
    ChainStage,
    ExitChain,
    ExitConfidence,
    chain_segments,
    cumulative_exit_macs,
    export_exit_chain,
    load_exit_chain,
)
from .collect import exit_outputs
from .deploy import write_exit_deployment
from .latency import ChainLatency, chain_latency, measure_chain
from .policy import (
    ExitRow,
    ImageExits,
    OperatingPoint,
    best_point,
    efficient_points,
    exit_index,
    exit_table,
    operating_curve,
    sweep_thresholds,
)
from .report import ExitReport, Reference, analyse_exits

__all__ = [
    "CONFIDENCES",
    "ChainLatency",
    "ChainSegment",
    "ChainStage",
    "ExitChain",
    "ExitConfidence",
    "ExitReport",
    "ExitRow",
    "ImageExits",
    "OperatingPoint",
    "Reference",
    "analyse_exits",
    "best_point",
    "chain_latency",
    "chain_segments",
    "cumulative_exit_macs",
    "efficient_points",
    "exit_index",
    "exit_outputs",
    "exit_table",
    "export_exit_chain",
    "load_exit_chain",
    "measure_chain",
    "operating_curve",
    "sweep_thresholds",
    "write_exit_deployment",
]
