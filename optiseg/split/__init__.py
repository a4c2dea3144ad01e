"""Split computing: cut a network between the device (head) and a server (tail), and what crosses the cut.

* :func:`cut_points` -- every cut a model declares, with the tensors that cross it (skip connections marked);
* :func:`split_model` / :func:`export_split` -- the head and the tail as modules and as parity-checked ONNX files;
* :mod:`codec` -- the tensor format on the link (32/16/8/4 bits per value, numpy only);
* :func:`iou_with_codec` -- IoU of head -> encode -> decode -> tail, run by onnxruntime;
* :func:`split_table` -- per cut: device MACs and memory, values and bytes per frame, bitrate, fit on the link.
"""

from .. import _runners  # noqa: F401  (the codec lives with the device-side scripts)
from .._runners import tensor_codec as codec
from .cuts import (
    IMAGE,
    SERVER,
    CrossingTensor,
    CutPoint,
    crossing_names,
    cut_names,
    cut_points,
    find_cut,
    model_stages,
    plan_cuts,
    server_cut,
    tensor_shapes,
)
from .evaluate import iou_with_codec
from .parts import SplitExport, StagePart, export_split, split_model
from .measure import MeasuredPlans, measure_split_plans
from .table import SplitPlanRow, SplitTable, split_table
from .timing import SplitTiming

__all__ = [
    "IMAGE",
    "SERVER",
    "CrossingTensor",
    "CutPoint",
    "MeasuredPlans",
    "SplitExport",
    "SplitPlanRow",
    "SplitTable",
    "SplitTiming",
    "StagePart",
    "codec",
    "crossing_names",
    "cut_names",
    "cut_points",
    "export_split",
    "find_cut",
    "iou_with_codec",
    "measure_split_plans",
    "model_stages",
    "plan_cuts",
    "server_cut",
    "split_model",
    "split_table",
    "tensor_shapes",
]
