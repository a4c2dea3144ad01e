"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KnobError


def scaled_width(channels: int, a: float, model: str, smallest: int) -> int:
    """``int(channels * a)``, refusing widths that round to zero channels.

    ``smallest`` is the narrowest base width of the model, so the message can
    give the smallest valid ``a``.
    """
    width = int(channels * a)
    if width < 1:
        raise KnobError(
            f"knob a={a:g} is too small for {model}: a {channels}-channel layer would get 0 channels; "
            f"valid range: {1 / smallest:g} <= a <= 1"
        )
    return width


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional ReLU, 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        relu: bool = True,
    ):
        padding = dilation * (kernel_size // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Dropout(nn.Module):
    """``nn.Dropout``'s element-wise dropout (kept values scaled by 1 / (1 - p)), with the CPU's random draws
    16 bits an element: torch's CPU Bernoulli draws a random number for every element (1.5 ms of a 56 ms
    training step of Fast-SCNN at batch 4), this one 64 bits for every four. The drop rate is p rounded to
    1/65536. Off the CPU, and in eval mode, as ``nn.Dropout``; no parameters, so checkpoints are unchanged."""

    _LANES = 65536

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._dropped = round(p * self._LANES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self._dropped:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = _random_int16_like(x) >= self._dropped - self._LANES // 2
        return x * keep.to(x.dtype).mul_(self._LANES / (self._LANES - self._dropped))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _random_int16_like(x: torch.Tensor) -> torch.Tensor:
    """Uniform int16 values shaped, and laid out in memory, as ``x`` (channels-last stays channels-last), from
    torch's generator: the 16-bit lanes of uniform 64-bit draws."""
    count = x.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
    lanes = words.view(torch.int16)[:count]
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        batch, channels, height, width = x.shape
        return lanes.view(batch, height, width, channels).permute(0, 3, 1, 2)
    return lanes.view(x.shape)


class DepthwiseSeparableConv(nn.Sequential):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand (x t), 3x3 depthwise, 1x1 linear projection.

    The identity shortcut is used when stride is 1 and the widths match.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, hidden, 1),
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
            ConvBNReLU(hidden, out_channels, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_shortcut else out


def adaptive_avg_pool2d_static(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Adaptive average pooling to ``bins x bins``, exportable at any input size.

    Same result as ``F.adaptive_avg_pool2d``. The pooling windows are computed
    in Python from the tensor's size, which is a constant when the network is
    traced for ONNX with a fixed input shape: when the size divides evenly this
    is a plain ``AveragePool``; otherwise (e.g. a 17x30 map into 8 bins, or a
    2x2 map into 4 bins) it is two small matrix products with the exact
    adaptive-pooling weights. Neither needs ``AdaptiveAvgPool2d``, which the
    ONNX exporters only handle when the size divides evenly (pytorch#42653).
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    if height % bins == 0 and width % bins == 0:
        kernel = (height // bins, width // bins)
        return F.avg_pool2d(x, kernel_size=kernel, stride=kernel)
    rows = _adaptive_pool_matrix(height, bins, x.dtype, x.device)
    cols = _adaptive_pool_matrix(width, bins, x.dtype, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _adaptive_pool_matrix(size: int, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``bins x size`` matrix whose row i averages PyTorch's adaptive window i."""
    rows = []
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)  # ceil((i + 1) * size / bins)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return torch.tensor(rows, dtype=dtype, device=device)


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to an explicit ``(height, width)``."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
