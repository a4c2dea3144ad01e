"""BiSeNetV2 (Yu et al., 2021) with tuning knobs carried over from the thesis.

A detail branch (wide, shallow, to 1/8) and a semantic branch (narrow, deep,
to 1/32: stem block, gather-and-expand layers, context embedding) meet in a
bilateral guided aggregation layer; a segment head predicts at 1/8 and is
upsampled to the input size. Auxiliary training heads are not built.

Knobs: ``a`` scales every width of both branches; ``t`` is the expansion of
the gather-and-expand layers; ``r`` is the number of stride-1
gather-and-expand layers in the 1/32 stage (3 in the paper; the 1/8 and 1/16
stages keep one each); ``ce`` builds the context-embedding block;
``head_mid`` is the width of the segment head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import ConvBNReLU, Dropout, resize_to, scaled_width
from ._registry import KnobSpec, register_model
from ._exits import build_exit_heads, exit_knobs, with_exits
from ._stages import INPUT, OUTPUT, ResizeToInput, Stage, run_stages

_SMALLEST_BASE_WIDTH = 8  # the stem block's 1x1 reduction

BISENETV2_KNOBS = (
    KnobSpec("a", float, 1.0, "width multiplier of the detail and semantic branches", 0.0, 1.0, exclusive_minimum=True),
    KnobSpec("t", int, 6, "expansion factor of the gather-and-expand layers", 1, 16),
    KnobSpec("r", int, 3, "stride-1 gather-and-expand layers in the 1/32 stage", 1, 8),
    KnobSpec("ce", bool, True, "context-embedding block on (1) or off (0)"),
    KnobSpec("head_mid", int, 1024, "mid channels of the segment head", 1, 4096),
    *exit_knobs(),
)


class StemBlock(nn.Module):
    # The wiring, for starting from a wider network (see training/inherit.py): fuse reads the concatenation.
    channel_flow = {"conv_branch": "conv", "pool_branch": "conv", "fuse": ("conv_branch", "pool_branch")}

    def __init__(self, in_channels: int, out_channels: int, reduced: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3, stride=2)
        self.conv_branch = nn.Sequential(
            ConvBNReLU(out_channels, reduced, 1),
            ConvBNReLU(reduced, out_channels, 3, stride=2),
        )
        self.pool_branch = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.conv_branch(x), self.pool_branch(x)], dim=1))


class GatherExpand(nn.Module):
    """Gather-and-expand layer; stride 2 adds a second depthwise conv and a projected shortcut."""

    channel_flow = {"expand": "gather", "project": "expand"}  # the wiring (see training/inherit.py)

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        mid = in_channels * expansion
        self.gather = ConvBNReLU(in_channels, in_channels, 3)
        if stride == 1:
            self.expand = ConvBNReLU(in_channels, mid, 3, groups=in_channels)
            self.shortcut = None
        else:
            self.expand = nn.Sequential(
                ConvBNReLU(in_channels, mid, 3, stride=2, groups=in_channels, relu=False),
                ConvBNReLU(mid, mid, 3, groups=mid),
            )
            self.shortcut = nn.Sequential(
                ConvBNReLU(in_channels, in_channels, 3, stride=2, groups=in_channels, relu=False),
                ConvBNReLU(in_channels, out_channels, 1, relu=False),
            )
        self.project = ConvBNReLU(mid, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.expand(self.gather(x)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class ContextEmbedding(nn.Module):
    """Global average pooling, BN, 1x1 conv, added back to the map, 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.global_conv = ConvBNReLU(channels, channels, 1)
        self.out = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.global_conv(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out(x + context)


class BilateralGuidedAggregation(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.detail_keep = nn.Sequential(
            ConvBNReLU(channels, channels, 3, groups=channels, relu=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.detail_down = nn.Sequential(
            ConvBNReLU(channels, channels, 3, stride=2, relu=False),
            nn.AvgPool2d(3, stride=2, padding=1),
        )
        self.semantic_up = ConvBNReLU(channels, channels, 3, relu=False)
        self.semantic_keep = nn.Sequential(
            ConvBNReLU(channels, channels, 3, groups=channels, relu=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.out = ConvBNReLU(channels, channels, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(resize_to(self.semantic_up(semantic), size))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.out(high + resize_to(low, size))


@register_model("bisenetv2", BISENETV2_KNOBS, "BiSeNetV2: detail and semantic branches joined by guided aggregation")
class BiSeNetV2(nn.Module):
    """BiSeNetV2. Output: ``num_classes`` logits at the input resolution."""

    # The context embedding (or its Identity) follows the r repeated layers (see training/inherit.py).
    trailing_children = {"semantic": 1}

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        a: float = 1.0,
        t: int = 6,
        r: int = 3,
        ce: bool = True,
        head_mid: int = 1024,
        exits: int = 0,
        exit_width: int = 64,
    ):
        super().__init__()

        def width(channels: int) -> int:
            return scaled_width(channels, a, "bisenetv2", _SMALLEST_BASE_WIDTH)

        c8, c16, c32, c64, c128 = (width(c) for c in (8, 16, 32, 64, 128))
        self.detail = nn.Sequential(
            ConvBNReLU(in_channels, c64, 3, stride=2),
            ConvBNReLU(c64, c64, 3),
            ConvBNReLU(c64, c64, 3, stride=2),
            ConvBNReLU(c64, c64, 3),
            ConvBNReLU(c64, c64, 3),
            ConvBNReLU(c64, c128, 3, stride=2),
            ConvBNReLU(c128, c128, 3),
            ConvBNReLU(c128, c128, 3),
        )
        self.semantic = nn.Sequential(
            StemBlock(in_channels, c16, c8),
            GatherExpand(c16, c32, t, stride=2),
            GatherExpand(c32, c32, t, stride=1),
            GatherExpand(c32, c64, t, stride=2),
            GatherExpand(c64, c64, t, stride=1),
            GatherExpand(c64, c128, t, stride=2),
            *(GatherExpand(c128, c128, t, stride=1) for _ in range(r)),
            ContextEmbedding(c128) if ce else nn.Identity(),
        )
        self.aggregation = BilateralGuidedAggregation(c128)
        self.head = nn.Sequential(
            ConvBNReLU(c128, head_mid, 3),
            Dropout(0.1),
            nn.Conv2d(head_mid, num_classes, 1),
        )
        self.upsample = ResizeToInput()
        # Built last, so the backbone's initial weights are those of the network without exits.
        self.exit_taps, self.exit_heads = build_exit_heads(self._backbone(), exits, exit_width, num_classes, in_channels, "bisenetv2")

    def stages(self) -> tuple[Stage, ...]:
        """The detail branch's three stages, then the semantic branch's, aggregation, head, upsampling.

        The detail branch runs first, so its output ``detail`` (and the image,
        until the stem has read it) crosses every cut inside the semantic branch.
        Exits (knob ``exits``) follow the stages they tap: the semantic stages
        and the aggregation, where the image no longer crosses (the cuts inside
        the detail branch still send it to the semantic stem).
        """
        return with_exits(self._backbone(), self.exit_taps, self.exit_heads)

    def _backbone(self) -> tuple[Stage, ...]:
        semantic = [
            Stage("semantic_stem", self.semantic[0], (INPUT,), ("semantic_1_4",)),
            Stage("semantic_1_8", self.semantic[1:3], ("semantic_1_4",), ("semantic_1_8",)),
            Stage("semantic_1_16", self.semantic[3:5], ("semantic_1_8",), ("semantic_1_16",)),
            Stage("semantic_1_32", self.semantic[5:-1], ("semantic_1_16",), ("semantic_1_32",)),
        ]
        semantic_out = "semantic_1_32"
        if not isinstance(self.semantic[-1], nn.Identity):
            semantic.append(Stage("context_embedding", self.semantic[-1], ("semantic_1_32",), ("context",)))
            semantic_out = "context"
        return (
            Stage("detail_1_2", self.detail[0:2], (INPUT,), ("detail_1_2",)),
            Stage("detail_1_4", self.detail[2:5], ("detail_1_2",), ("detail_1_4",)),
            Stage("detail_1_8", self.detail[5:8], ("detail_1_4",), ("detail",)),
            *semantic,
            Stage("aggregation", self.aggregation, ("detail", semantic_out), ("aggregated",)),
            Stage("head", self.head, ("aggregated",), ("logits_1_8",), cut_after=False),
            Stage("upsample", self.upsample, ("logits_1_8",), (OUTPUT,), cut_after=False, needs_input_size=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), {INPUT: x}, x.shape[-2:])[OUTPUT]
