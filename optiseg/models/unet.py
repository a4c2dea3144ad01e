"""U-Net as the split-computing study used it, with a width knob.

An encoder of five blocks, each two 3x3 conv-BN-ReLU (64, 128, 256, 512 and
512 channels) followed by a 2x2 max-pool, so the deepest map is at 1/32 (the
reason resolutions are multiples of 32); a bottleneck block of two 3x3
conv-BN-ReLU at 1/32; and a mirrored decoder: at each scale, bilinear
upsampling x2, concatenation with the encoder block's output at that scale
(the skip connection) and two 3x3 conv-BN-ReLU, back to 64 channels at full
resolution, then a 1x1 convolution to the logits.

The cut points are after each max-pool. Everything an encoder block produced
before a cut is read again by the decoder, so a cut after pool k sends the
pooled map and the k skip tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from ._layers import ConvBNReLU, resize_to, scaled_width
from ._registry import KnobSpec, register_model
from ._stages import INPUT, OUTPUT, Stage, run_stages

ENCODER_WIDTHS = (64, 128, 256, 512, 512)
_SMALLEST_BASE_WIDTH = 64

UNET_KNOBS = (
    KnobSpec("a", float, 1.0, "width multiplier of every layer", 0.0, 1.0, exclusive_minimum=True),
)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(ConvBNReLU(in_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3))


class EncoderBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU, then a 2x2 max-pool; returns (features before the pool, pooled)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = DoubleConv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.convs(x)
        return features, self.pool(features)


class DecoderBlock(nn.Module):
    """Upsample x2 (bilinear) to the skip's size, concatenate the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([resize_to(x, skip.shape[-2:]), skip], dim=1))


@register_model("unet", UNET_KNOBS, "U-Net: five-block encoder with max-pools, mirrored decoder with skip connections")
class UNet(nn.Module):
    """U-Net. Output: ``num_classes`` logits at the input resolution."""

    # The wiring (see training/inherit.py): decoder block k's convolutions read [the deeper map, encoder skip].
    channel_flow = {
        f"decoder.{k}.convs": ("bottleneck" if k == 0 else f"decoder.{k - 1}.convs", f"encoder.{4 - k}.convs")
        for k in range(5)
    }

    def __init__(self, num_classes: int = 1, in_channels: int = 3, a: float = 1.0):
        super().__init__()
        widths = [scaled_width(c, a, "unet", _SMALLEST_BASE_WIDTH) for c in ENCODER_WIDTHS]
        self.encoder = nn.ModuleList(
            EncoderBlock(cin, cout) for cin, cout in zip((in_channels, *widths[:-1]), widths)
        )
        self.bottleneck = DoubleConv(widths[-1], widths[-1])
        # Mirrored: the block at scale k takes the deeper map and skip k, and gives the width of scale k-1.
        decoder_out = (*widths[:-1][::-1], widths[0])  # 512, 256, 128, 64, 64 for a=1
        decoder_in = (widths[-1], *decoder_out[:-1])
        self.decoder = nn.ModuleList(
            DecoderBlock(cin, skip, cout) for cin, skip, cout in zip(decoder_in, widths[::-1], decoder_out)
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def stages(self) -> tuple[Stage, ...]:
        """Five encoder stages (cut after each pool), the bottleneck, five decoder stages, the 1x1 classifier."""
        encoder = [
            Stage(f"encoder{k}", block, (INPUT if k == 1 else f"pool{k - 1}",), (f"enc{k}", f"pool{k}"))
            for k, block in enumerate(self.encoder, start=1)
        ]
        decoder = [
            Stage(f"decoder{k}", block, ("bottleneck" if k == 5 else f"decoder{k + 1}", f"enc{k}"), (f"decoder{k}",),
                  cut_after=False)
            for k, block in zip(range(5, 0, -1), self.decoder)
        ]
        return (
            *encoder,
            Stage("bottleneck", self.bottleneck, ("pool5",), ("bottleneck",), cut_after=False),
            *decoder,
            Stage("classifier", self.classifier, ("decoder1",), (OUTPUT,), cut_after=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), {INPUT: x}, x.shape[-2:])[OUTPUT]
