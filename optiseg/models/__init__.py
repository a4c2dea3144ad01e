"""Segmentation architectures and their registry.

>>> from optiseg.models import build_model, list_models
>>> model = build_model("fastscnn", {"a": 0.5, "pp": 0}, num_classes=1)
"""

from . import bisenetv2, fastscnn, unet  # noqa: F401  (registers the architectures)
from ._registry import (
    KnobSpec,
    ModelEntry,
    build_model,
    format_knob_value,
    get_model_entry,
    list_models,
    register_model,
)
from ._exits import ExitTap, exit_name, exit_names, forward_exits, output_names
from ._resolution import check_resolution, format_resolution, parse_resolution
from ._stages import INPUT, OUTPUT, Stage, crossing_names, run_stages

__all__ = [
    "INPUT",
    "ExitTap",
    "OUTPUT",
    "KnobSpec",
    "ModelEntry",
    "Stage",
    "build_model",
    "check_resolution",
    "crossing_names",
    "exit_name",
    "exit_names",
    "format_knob_value",
    "format_resolution",
    "forward_exits",
    "get_model_entry",
    "list_models",
    "output_names",
    "parse_resolution",
    "register_model",
    "run_stages",
]
