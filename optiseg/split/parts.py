"""The two parts of a network cut at a :class:`~optiseg.split.cuts.CutPoint`, as PyTorch modules and as ONNX files.

The head (the device's part) takes the image ``input`` and outputs every
tensor that crosses the cut, named as in the stage list; the tail (the
server's part) takes all of them as named inputs and outputs ``logits``.
Both go through optiseg's one export path (:func:`optiseg.export.export_graph`:
``onnx.checker`` and onnxruntime-versus-PyTorch parity), and then the
composition is checked: onnxruntime's head feeding onnxruntime's tail must
give the whole network's PyTorch logits within the same tolerance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    ExportResult,
    export_graph,
    network_metadata,
    run_onnxruntime,
)
from ..models import INPUT, OUTPUT, Stage, run_stages
from ..network import Network
from .cuts import CutPoint, model_stages


class StagePart(nn.Module):
    """A contiguous run of a model's stages: reads the named ``inputs``, returns the named ``outputs`` (a tuple)."""

    def __init__(self, stages: Sequence[Stage], inputs: Sequence[str], outputs: Sequence[str], input_size: tuple[int, int]):
        super().__init__()
        self.blocks = nn.ModuleList(stage.module for stage in stages)  # registers the weights: .eval(), parameters()
        self.part_stages = tuple(stages)
        self.inputs, self.outputs, self.input_size = tuple(inputs), tuple(outputs), tuple(input_size)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env = dict(zip(self.inputs, tensors))
        # A tensor that only passes through (the image of BiSeNetV2 before its semantic stem) is copied,
        # so the exported graph has an output of its own rather than an output that is its input.
        passed = {name: env[name].clone() for name in self.outputs if name in env}
        out = run_stages(self.part_stages, env, self.input_size, [n for n in self.outputs if n not in passed])
        return tuple(passed[name] if name in passed else out[name] for name in self.outputs)


def split_model(model: nn.Module, network: Network, cut: CutPoint) -> tuple[StagePart, StagePart]:
    """(head, tail) of ``model`` at ``cut``; they share ``model``'s modules (no copy)."""
    stages = model_stages(model)
    head = StagePart(stages[: cut.stage_index + 1], (INPUT,), cut.keys, network.resolution)
    tail = StagePart(stages[cut.stage_index + 1 :], cut.keys, (OUTPUT,), network.resolution)
    return head, tail


@dataclass(frozen=True)
class SplitExport:
    """The head's and the tail's ONNX files, and ``max_abs_diff`` of head then tail (onnxruntime) against the whole network."""

    cut: CutPoint
    head: ExportResult
    tail: ExportResult
    max_abs_diff: float


def export_split(
    model: nn.Module,
    network: Network,
    cut: CutPoint,
    head_path: str | os.PathLike,
    tail_path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> SplitExport:
    """Export the head and the tail of ``model`` at ``cut``, each parity-checked, then check their composition.

    Raises :class:`ExportError` when a part or the composition disagrees with
    PyTorch by more than ``tolerance``; the files are then removed.
    """
    height, width = network.resolution
    dummy = torch.randn(*network.input_shape, generator=torch.Generator().manual_seed(0))
    head, tail = split_model(model, network, cut)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            whole = model(dummy).numpy()
            crossing = dict(zip(cut.names, head(dummy)))
    finally:
        model.train(was_training)
    what = f"{network.model} {network.knob_dict} at {height}x{width}, cut after {cut.after}"
    tensors = json.dumps([{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "skip": t.skip} for t in cut.tensors])
    base = network_metadata(network, opset=opset)
    common = {"split_cut": cut.after, "split_tensors": tensors}
    head_meta = {**base, **common, "split_part": "head", "output_name": ",".join(cut.names),
                 "output": "the float32 tensors that cross the cut (split_tensors), to send to the tail"}
    tail_meta = {**base, **common, "split_part": "tail", "input_name": ",".join(cut.names),
                 "input_shape": json.dumps({t.name: list(t.shape) for t in cut.tensors}),
                 "input_layout": "the head's outputs, float32, by name"}
    head_result = export_graph(head, head_path, {INPUT_NAME: dummy}, cut.names, head_meta,
                               what=f"the head of {what}", opset=opset, tolerance=tolerance)
    try:
        tail_result = export_graph(tail, tail_path, crossing, (OUTPUT_NAME,), tail_meta,
                                   what=f"the tail of {what}", opset=opset, tolerance=tolerance)
        sent = run_onnxruntime(head_result.path, {INPUT_NAME: dummy.numpy()}, cut.names)
        logits = run_onnxruntime(tail_result.path, dict(zip(cut.names, sent)), (OUTPUT_NAME,))[0]
        max_diff = float(np.max(np.abs(logits - whole)))
        if not max_diff <= tolerance:
            Path(tail_path).unlink(missing_ok=True)
            raise ExportError(
                f"head then tail disagree with the whole network on {what}: max abs difference {max_diff:.3g} > {tolerance:g}",
                hint="this is a bug in optiseg or in the exporter; please report it with the command you ran",
            )
    except BaseException:
        Path(head_path).unlink(missing_ok=True)
        raise
    return SplitExport(cut=cut, head=head_result, tail=tail_result, max_abs_diff=max_diff)
