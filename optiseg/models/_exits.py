"""Side exits: where a model's exits attach, the light head each one is, and all outputs at once.

A model with the knob ``exits`` = K builds K exit heads (:class:`ExitHead`) and
inserts each into its stage list right after the stage whose output it reads,
as two stages of the exit (``Stage(exit="exit1")``): ``exit1_head`` writes the
logits at the tapped feature's resolution (``exit1_lowres``), ``exit1``
upsamples them to the input size (``exit1``), as the network's own classifier
and upsampling stages do. The plain forward pass does not run them
(:func:`~optiseg.models.run_stages` only runs what the wanted outputs need),
so ``model(x)`` is the network's final logits whatever K is;
:func:`forward_exits` returns every exit's logits and the final ones.

Where the exits go (:func:`place_exits`) follows the early-exit study: at
points equally spaced in multiply-accumulates. The K exits and the final
output split the backbone's MACs into K + 1 shares; exit k aims at
``k / (K + 1)`` of them. The candidates are the model's cut points (the
boundaries its author allows) where the image no longer crosses, so a later
part of the chain never needs the image again; among every choice of K
candidates, the one whose cumulative MAC shares are nearest to the targets
(sum of absolute differences) wins. The shares are counted for a 256x256
input (on PyTorch's meta device: shapes only, nothing computed): the
placement is part of the architecture (the heads' widths depend on it), so it
cannot depend on the size a network is later trained at. Convolution MACs grow
with the input area except on pooled maps of a fixed size, so the shares at
other sizes differ by a fraction of a percent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import KnobError
from ._layers import DepthwiseSeparableConv
from ._registry import KnobSpec
from ._stages import INPUT, OUTPUT, ResizeToInput, Stage, crossing_names, run_stages

MAX_EXITS = 3
REFERENCE_SIDE = 256


def exit_knobs() -> tuple[KnobSpec, KnobSpec]:
    """The two knob specs every model with exits shares: ``exits`` and ``exit_width`` (both neutral at 0 exits)."""
    return (
        KnobSpec("exits", int, 0, "side exits spaced evenly in MACs (0 = none, the network as before; see optiseg exits)",
                 0, MAX_EXITS, neutral=True),
        KnobSpec("exit_width", int, 64, "channels of each exit head (depthwise-separable conv, then 1x1 classifier)",
                 1, 1024, neutral=True, only_with="exits"),
    )


def exit_name(index: int) -> str:
    """The name of exit ``index`` (1-based) in the stage list and in the ONNX files: ``exit1``, ``exit2``, ..."""
    return f"exit{index}"


class ExitHead(nn.Module):
    """A light segmentation head: depthwise-separable 3x3 conv to ``width`` channels, then a 1x1 classifier (logits at the feature's resolution)."""

    def __init__(self, in_channels: int, width: int, num_classes: int):
        super().__init__()
        self.conv = DepthwiseSeparableConv(in_channels, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


@dataclass(frozen=True)
class ExitTap:
    """Where one exit attaches: after stage ``after``, reading its output ``tensor`` (``channels`` wide).

    ``share`` is the backbone's cumulative share of multiply-accumulates up to
    that point at a 256x256 input, ``target`` the share the placement aimed at.
    """

    after: str
    tensor: str
    channels: int
    share: float
    target: float


def exit_candidates(stages: Sequence[Stage]) -> list[int]:
    """Positions of the stages after which an exit may attach: cut points the image does not cross."""
    return [
        index for index, stage in enumerate(stages[:-1])
        if stage.cut_after and INPUT not in crossing_names(stages, index)
    ]


def place_exits(stages: Sequence[Stage], count: int, in_channels: int, model: str) -> tuple[ExitTap, ...]:
    """The ``count`` exit points of a backbone's ``stages``, spaced as evenly in MACs as its cut points allow.

    ``model`` names the architecture in the error raised when it has fewer
    candidate points than ``count``.
    """
    if count == 0:
        return ()
    from ..profile import profile_stages

    candidates = exit_candidates(stages)
    if count > len(candidates):
        raise KnobError(f"knob exits={count} is invalid for {model}: it has {len(candidates)} points where an exit can attach")
    profile = profile_stages(stages, (1, in_channels, REFERENCE_SIDE, REFERENCE_SIDE))
    macs = [profile.macs[stage.name] for stage in stages]
    total = sum(macs)
    shares = [sum(macs[: index + 1]) / total for index in range(len(stages))]
    targets = [k / (count + 1) for k in range(1, count + 1)]
    best = min(
        itertools.combinations(candidates, count),
        key=lambda chosen: sum(abs(shares[i] - t) for i, t in zip(chosen, targets)),
    )
    return tuple(
        ExitTap(stages[i].name, stages[i].outputs[0], profile.shapes[stages[i].outputs[0]][1], shares[i], target)
        for i, target in zip(best, targets)
    )


def build_exit_heads(
    stages: Sequence[Stage], count: int, width: int, num_classes: int, in_channels: int, model: str
) -> tuple[tuple[ExitTap, ...], nn.ModuleList | None]:
    """The taps and heads of ``count`` exits on a backbone's ``stages`` (``((), None)`` for none)."""
    taps = place_exits(stages, count, in_channels, model)
    if not taps:
        return (), None
    return taps, nn.ModuleList(ExitHead(tap.channels, width, num_classes) for tap in taps)


def with_exits(stages: Sequence[Stage], taps: Sequence[ExitTap], heads: nn.ModuleList | None) -> tuple[Stage, ...]:
    """``stages`` with exit ``k``'s head and upsampling inserted right after the stage it taps (unchanged without exits)."""
    if not taps:
        return tuple(stages)
    after = {tap.after: (index, tap) for index, tap in enumerate(taps)}
    result: list[Stage] = []
    for stage in stages:
        result.append(stage)
        if stage.name in after:
            index, tap = after[stage.name]
            name = exit_name(index + 1)
            result.append(Stage(f"{name}_head", heads[index], (tap.tensor,), (f"{name}_lowres",), cut_after=False, exit=name))
            result.append(Stage(name, ResizeToInput(), (f"{name}_lowres",), (name,), cut_after=False, needs_input_size=True,
                                exit=name))
    return tuple(result)


def exit_names(stages: Sequence[Stage]) -> tuple[str, ...]:
    """The exits' output names in the order the network reaches them (empty without exits)."""
    return tuple(dict.fromkeys(stage.exit for stage in stages if stage.exit is not None))


def exit_sources(stages: Sequence[Stage]) -> dict[str, str]:
    """Each exit's name -> the network stage whose output its head reads."""
    writer = {name: stage.name for stage in stages for name in stage.outputs}
    sources: dict[str, str] = {}
    for stage in stages:
        if stage.exit is not None and stage.exit not in sources:
            sources[stage.exit] = writer[stage.inputs[0]]
    return sources


def exit_head_modules(stages: Sequence[Stage]) -> list[nn.Module]:
    """The modules of every exit's stages (what training with exits trains apart from the backbone)."""
    return [stage.module for stage in stages if stage.exit is not None]


def output_names(stages: Sequence[Stage]) -> tuple[str, ...]:
    """Every output a network can give, in order: its exits, then the final logits."""
    return (*exit_names(stages), OUTPUT)


def forward_exits(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits, then the final logits, of ``model`` on ``x`` (just ``[model(x)]`` without exits)."""
    stages = model.stages()
    names = output_names(stages)
    outputs = run_stages(stages, {INPUT: x}, x.shape[-2:], names)
    return [outputs[name] for name in names]
