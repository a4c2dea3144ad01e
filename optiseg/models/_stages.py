"""Stages: the blocks a network runs in order, the named tensors between them, and where it may be cut.

Every registered model describes its forward pass as a tuple of :class:`Stage`
objects (``model.stages()``) and runs it with :func:`run_stages`, so the
description cannot drift from what the model computes. A stage reads named
tensors and writes named tensors; the network reads :data:`INPUT` and its last
stage writes :data:`OUTPUT`. This is timm's ``feature_info`` idea carried one
step further: besides *where* the features are, the stage list says *what a
later part of the network still needs* at every boundary, which is what split
computing (``optiseg.split``) sends over a link and what early exits will
attach to.

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
    network that no longer sees the image can still resize to it).
    """

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cut_after: bool = True
    needs_input_size: bool = False


def run_stages(
    stages: Sequence[Stage],
    tensors: Mapping[str, torch.Tensor],
    input_size: tuple[int, int] | torch.Size,
    wanted: Sequence[str] = (OUTPUT,),
) -> dict[str, torch.Tensor]:
    """Run ``stages`` on the named ``tensors`` and return the ``wanted`` ones.

    A tensor is dropped as soon as no later stage reads it and it is not
    wanted, so inference keeps no more alive than the plain forward pass does.
    """
    last_use: dict[str, int] = {}
    for index, stage in enumerate(stages):
        for name in stage.inputs:
            last_use[name] = index
    env = dict(tensors)
    keep = set(wanted)
    for index, stage in enumerate(stages):
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


class ResizeToInput(nn.Module):
    """Bilinear resize of the logits to the network's input size (a stage with ``needs_input_size``)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_to(x, size)
