"""Fast-SCNN (Poudel et al., 2019) with the thesis's tuning knobs.

Layout and parameter counts follow the implementation the thesis measured:
learning-to-downsample (conv, two depthwise-separable convs, to 1/8), a global
feature extractor (three groups of inverted-residual bottlenecks to 1/32, then
pyramid pooling), feature fusion of the 1/32 and 1/8 maps, and a classifier.
The pyramid pooling module shares one 1x1 convolution across its four bins and
pools with windows computed from the actual input size, so it works (and
exports to ONNX) at every resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layers import (
    ConvBNReLU,
    DepthwiseSeparableConv,
    Dropout,
    InvertedResidual,
    adaptive_avg_pool2d_static,
    resize_to,
    scaled_width,
)
from ._registry import KnobSpec, register_model
from ._exits import build_exit_heads, exit_knobs, with_exits
from ._stages import INPUT, OUTPUT, ResizeToInput, Stage, run_stages

_SMALLEST_BASE_WIDTH = 32  # the first convolution; the pyramid pooling needs int(128 a) // 4 >= 1, the same bound

FASTSCNN_KNOBS = (
    KnobSpec("a", float, 1.0, "width multiplier of every layer", 0.0, 1.0, exclusive_minimum=True),
    KnobSpec("t", int, 6, "expansion factor of the bottlenecks", 1, 16),
    KnobSpec("r", int, 3, "bottlenecks per group", 1, 8),
    KnobSpec("pp", bool, True, "pyramid pooling module on (1) or off (0)"),
    *exit_knobs(),
)


class PyramidPooling(nn.Module):
    """Average-pool into 1, 2, 4 and 8 bins, 1x1 conv to C/4 (shared), upsample, concat, 1x1 conv to C."""

    bins = (1, 2, 4, 8)
    # The wiring (see training/inherit.py): project reads the pooled branches and the module's input, concatenated.
    channel_flow = {"project": (*("reduce",) * len(bins), "input")}

    def __init__(self, channels: int):
        super().__init__()
        reduced = channels // 4
        self.reduce = nn.Sequential(nn.Conv2d(channels, reduced, 1, bias=False), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(channels + reduced * len(self.bins), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize_to(self.reduce(adaptive_avg_pool2d_static(x, b)), size) for b in self.bins]
        return self.project(torch.cat([*pooled, x], dim=1))


class FeatureFusion(nn.Module):
    """Upsample the 1/32 features to 1/8, depthwise 3x3 (dilation 4) + 1x1, add a 1x1 of the 1/8 map, ReLU."""

    def __init__(self, high_res_channels: int, low_res_channels: int, out_channels: int):
        super().__init__()
        self.low_res_depthwise = ConvBNReLU(low_res_channels, low_res_channels, 3, groups=low_res_channels, dilation=4)
        self.low_res_project = nn.Conv2d(low_res_channels, out_channels, 1)
        self.high_res_project = nn.Conv2d(high_res_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, high_res: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        low = resize_to(low_res, high_res.shape[-2:])
        low = self.low_res_project(self.low_res_depthwise(low))
        return self.relu(low + self.high_res_project(high_res))


@register_model("fastscnn", FASTSCNN_KNOBS, "Fast-SCNN: two-branch encoder with a shared 1/8 learning-to-downsample stem")
class FastSCNN(nn.Module):
    """Fast-SCNN. Output: ``num_classes`` logits at the input resolution."""

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        a: float = 1.0,
        t: int = 6,
        r: int = 3,
        pp: bool = True,
        exits: int = 0,
        exit_width: int = 64,
    ):
        super().__init__()

        def width(channels: int) -> int:
            return scaled_width(channels, a, "fastscnn", _SMALLEST_BASE_WIDTH)

        c32, c48, c64, c96, c128 = (width(c) for c in (32, 48, 64, 96, 128))
        self.learning_to_downsample = nn.Sequential(
            ConvBNReLU(in_channels, c32, 3, stride=2),
            DepthwiseSeparableConv(c32, c48, stride=2),
            DepthwiseSeparableConv(c48, c64, stride=2),
        )
        self.global_features = nn.Sequential(
            _bottleneck_group(c64, c64, t, r, stride=2),
            _bottleneck_group(c64, c96, t, r, stride=2),
            _bottleneck_group(c96, c128, t, r, stride=1),
            PyramidPooling(c128) if pp else nn.Identity(),
        )
        self.fusion = FeatureFusion(c64, c128, c128)
        self.classifier = nn.Sequential(
            DepthwiseSeparableConv(c128, c128),
            DepthwiseSeparableConv(c128, c128),
            Dropout(0.1),
            nn.Conv2d(c128, num_classes, 1),
        )
        self.upsample = ResizeToInput()
        # Built last, so the backbone's initial weights are those of the network without exits.
        self.exit_taps, self.exit_heads = build_exit_heads(self._backbone(), exits, exit_width, num_classes, in_channels, "fastscnn")

    def stages(self) -> tuple[Stage, ...]:
        """Learning-to-downsample, the three bottleneck groups (and pyramid pooling), fusion, classifier, upsampling.

        The learning-to-downsample output ``ltd`` is read again by the fusion, so
        it crosses every cut inside the global feature extractor. Exits (knob
        ``exits``) follow the stages they tap.
        """
        return with_exits(self._backbone(), self.exit_taps, self.exit_heads)

    def _backbone(self) -> tuple[Stage, ...]:
        groups = [Stage(f"bottlenecks{i + 1}", self.global_features[i], (prev,), (f"gfe{i + 1}",))
                  for i, prev in enumerate(("ltd", "gfe1", "gfe2"))]
        low_res = "gfe3"
        if not isinstance(self.global_features[3], nn.Identity):
            groups.append(Stage("pyramid_pooling", self.global_features[3], ("gfe3",), ("ppm",)))
            low_res = "ppm"
        return (
            Stage("learning_to_downsample", self.learning_to_downsample, (INPUT,), ("ltd",)),
            *groups,
            Stage("feature_fusion", self.fusion, ("ltd", low_res), ("fused",)),
            Stage("classifier", self.classifier, ("fused",), ("logits_1_8",), cut_after=False),
            Stage("upsample", self.upsample, ("logits_1_8",), (OUTPUT,), cut_after=False, needs_input_size=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), {INPUT: x}, x.shape[-2:])[OUTPUT]


def _bottleneck_group(in_channels: int, out_channels: int, expansion: int, repeats: int, stride: int) -> nn.Sequential:
    blocks = [InvertedResidual(in_channels, out_channels, expansion, stride)]
    blocks += [InvertedResidual(out_channels, out_channels, expansion, 1) for _ in range(repeats - 1)]
    return nn.Sequential(*blocks)
