"""Stages: the blocks a network runs in order, the named tensors between them, and where it may be cut.

Every registered model describes its forward pass as a tuple of :class:`Stage`
objects (``model.stages()``) and runs it with :func:`run_stages`, so the
description cannot drift from what the model computes. A stage reads named
tensors and writes named tensors; the network reads :data:`INPUT` and its last
stage writes :data:`OUTPUT`. This is timm's ``feature_info`` idea carried one
step further: besides *where* the features are, the stage list says *what a
later part of the network still needs* at every boundary, which is what split
computing (``optiseg.split``) sends over a link and what early exits
(``optiseg.exits``) chain their stage graphs with.

A side *exit* is a branch of stages with ``exit`` set to its name: a light
segmentation head on a feature the network computes anyway, then the
upsampling of its logits to the input size, written as the exit's name
(``exit1``, ``exit2``, ...), as the network's own classifier and upsampling
write ``logits``. Nothing reads an exit, so :func:`run_stages` only runs one
when it is wanted: the plain forward pass (``wanted=[OUTPUT]``) is the network
without exits, and ``wanted=[exit1, ..., OUTPUT]`` gives every output at once.

``cut_after`` marks the boundaries where the model's author allows a cut
(e.g. U-Net: after each max-pool). Whatever crosses such a boundary is derived,
not declared: every tensor written before it and read after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import resize_to

INPUT = "input"
OUTPUT = "logits"


@dataclass(frozen=True, eq=False)
class Stage:
    """One block of a network's forward pass.

    ``module`` is called with the tensors named in ``inputs`` (positionally, in
    order) and returns one tensor, or a tuple with one tensor per name in
    ``outputs``. With ``needs_input_size`` it is also given ``size=(H, W)``, the
    network's input size (a constant of an exported graph, so a part of the
    network that no longer sees the image can still resize to it). ``exit``
    names the side exit the stage belongs to (None: the network's own stages);
    the exit's last stage writes its logits at the input size under that name.
    """

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cut_after: bool = True
    needs_input_size: bool = False
    exit: str | None = None


def run_stages(
    stages: Sequence[Stage],
    tensors: Mapping[str, torch.Tensor],
    input_size: tuple[int, int] | torch.Size,
    wanted: Sequence[str] = (OUTPUT,),
) -> dict[str, torch.Tensor]:
    """Run ``stages`` on the named ``tensors`` and return the ``wanted`` ones.

    Only the stages that a wanted tensor depends on run (an exit nobody asked
    for costs nothing). A tensor is dropped as soon as no later stage reads it
    and it is not wanted, so inference keeps no more alive than the plain
    forward pass does.
    """
    needed = set(wanted)
    runs = [False] * len(stages)
    for index in range(len(stages) - 1, -1, -1):
        if needed.intersection(stages[index].outputs):
            runs[index] = True
            needed.update(stages[index].inputs)
    last_use: dict[str, int] = {}
    for index, stage in enumerate(stages):
        if runs[index]:
            for name in stage.inputs:
                last_use[name] = index
    env = dict(tensors)
    keep = set(wanted)
    for index, stage in enumerate(stages):
        if not runs[index]:
            continue
        args = []
        for name in stage.inputs:
            if name not in env:
                raise KeyError(f"stage {stage.name!r} reads {name!r}, which no earlier stage writes")
            args.append(env[name])
        result = stage.module(*args, size=tuple(input_size)) if stage.needs_input_size else stage.module(*args)
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(stage.outputs):
            raise ValueError(f"stage {stage.name!r} returned {len(results)} tensors for outputs {stage.outputs}")
        env.update(zip(stage.outputs, results))
        for name in stage.inputs:
            if last_use.get(name) == index and name not in keep:
                env.pop(name, None)
    return {name: env[name] for name in wanted}


def crossing_names(stages: Sequence[Stage], stage_index: int) -> list[str]:
    """Names written by stages ``<= stage_index`` (or the image) and read by a later stage, in the order written."""
    written = [INPUT] + [name for stage in stages[: stage_index + 1] for name in stage.outputs]
    read_later = {name for stage in stages[stage_index + 1 :] for name in stage.inputs}
    return [name for name in written if name in read_later]


class ResizeToInput(nn.Module):
    """Bilinear resize of the logits to the network's input size (a stage with ``needs_input_size``)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_to(x, size)
