"""The per-cut table of a split network: what the device computes and holds, and what the link must carry.

Pure data (:func:`split_table` returns a :class:`SplitTable`); the command line
draws it. Rows: every cut point, plus the two trivial plans: everything on
the device (nothing crosses) and everything on the server (the image crosses,
as uint8, 8 bits per value, whatever the ``bits`` asked for the cut tensors).

Bytes per frame are the payload of the crossing tensors:
``ceil(values x bits / 8)`` per tensor, summed (4-bit codes two per byte). The
frame's header (names, shapes, scales and zero points: a few dozen bytes per
tensor, 8 bytes more per channel for per-channel scales) is not counted.
Bitrate = bytes x 8 x fps / 10^6 Mbit/s; a plan fits the link when its bitrate
is at most the link's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .._runners.tensor_codec import BITS, payload_nbytes
from ..errors import UsageError
from ..models import INPUT
from ..network import Network
from ..profile import BYTES_PER_FLOAT32, MB, profile_model
from .cuts import IMAGE, CrossingTensor, cut_points
from .parts import split_model

IMAGE_BITS = 8


@dataclass(frozen=True)
class SplitPlanRow:
    """One way to run the network: ``plan`` is ``device``, ``server`` or ``cut``; the head's costs and the link's load."""

    plan: str
    after: str | None
    device_macs: int
    device_params: int
    device_params_mb: float
    device_activation_mb: float
    tensors: tuple[CrossingTensor, ...]
    values: int
    bytes_per_frame: dict[int, int]
    mbps: dict[int, dict[float, float]]
    fits: dict[int, dict[float, bool]]

    @property
    def device_mb(self) -> float:
        return self.device_params_mb + self.device_activation_mb

    def as_dict(self) -> dict:
        return {
            "plan": self.plan,
            "after": self.after,
            "device": {
                "macs": self.device_macs,
                "params": self.device_params,
                "params_mb": round(self.device_params_mb, 4),
                "activation_mb": round(self.device_activation_mb, 4),
                "memory_mb": round(self.device_mb, 4),
            },
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "values": t.values, "skip": t.skip, "produced_by": t.produced_by}
                for t in self.tensors
            ],
            "values": self.values,
            "bytes_per_frame": {str(b): n for b, n in self.bytes_per_frame.items()},
            "mbps": {str(b): {f"{fps:g}": round(v, 3) for fps, v in per_fps.items()} for b, per_fps in self.mbps.items()},
            "fits": {str(b): {f"{fps:g}": ok for fps, ok in per_fps.items()} for b, per_fps in self.fits.items()},
        }


@dataclass(frozen=True)
class SplitTable:
    network: Network
    bits: tuple[int, ...]
    fps: tuple[float, ...]
    link_mbps: float
    rows: tuple[SplitPlanRow, ...]

    def as_dict(self) -> dict:
        return {
            "network": self.network.as_dict(),
            "network_key": self.network.key,
            "bits": list(self.bits),
            "fps": list(self.fps),
            "link_mbps": self.link_mbps,
            "image_bits": IMAGE_BITS,
            "bytes_counted": "payload of the crossing tensors: ceil(values * bits / 8) per tensor; frame headers not counted",
            "rows": [row.as_dict() for row in self.rows],
        }


def check_bits(bits: Sequence[int]) -> tuple[int, ...]:
    bad = [b for b in bits if isinstance(b, bool) or b not in BITS]
    if bad or not bits:
        raise UsageError(f"bits {', '.join(map(str, bad)) or '(none)'} invalid: choose from {', '.join(map(str, BITS))} (e.g. --bits 16,4)")
    return tuple(dict.fromkeys(int(b) for b in bits))


def split_table(
    network: Network,
    bits: Sequence[int] = (16, 4),
    fps: Sequence[float] = (12, 10),
    link_mbps: float = 1000.0,
    model: nn.Module | None = None,
) -> SplitTable:
    """The table of ``network``: all on the device, one row per cut point, all on the server."""
    bits = check_bits(bits)
    fps = tuple(float(f) for f in fps)
    if not fps or any(not f > 0 for f in fps):
        raise UsageError(f"fps {', '.join(f'{f:g}' for f in fps) or '(none)'} invalid: every frame rate must be > 0 (e.g. --fps 12,10)")
    if not link_mbps > 0:
        raise UsageError(f"link {link_mbps:g} Mbit/s invalid: it must be > 0 (e.g. --link-mbps 1000)")
    module = model if model is not None else network.build()

    def row(plan, after, profile, tensors, per_bits):
        mbps = {b: {f: n * 8 * f / 1e6 for f in fps} for b, n in per_bits.items()}
        return SplitPlanRow(
            plan=plan,
            after=after,
            device_macs=profile.macs if profile else 0,
            device_params=profile.params if profile else 0,
            device_params_mb=profile.params * BYTES_PER_FLOAT32 / MB if profile else 0.0,
            device_activation_mb=profile.activation_mb if profile else 0.0,
            tensors=tuple(tensors),
            values=sum(t.values for t in tensors),
            bytes_per_frame=per_bits,
            mbps=mbps,
            fits={b: {f: v <= link_mbps for f, v in per_fps.items()} for b, per_fps in mbps.items()},
        )

    whole = profile_model(module, network.input_shape)
    rows = [row("device", None, whole, (), {b: 0 for b in bits})]
    for cut in cut_points(network, module):
        head, _ = split_model(module, network, cut)
        per_bits = {b: sum(payload_nbytes(t.values, b) for t in cut.tensors) for b in bits}
        rows.append(row("cut", cut.after, profile_model(head, network.input_shape), cut.tensors, per_bits))
    image = CrossingTensor(IMAGE, network.input_shape, "uint8", "input", skip=False, key=INPUT)
    rows.append(row("server", None, None, (image,), {b: payload_nbytes(image.values, IMAGE_BITS) for b in bits}))
    return SplitTable(network=network, bits=bits, fps=fps, link_mbps=float(link_mbps), rows=tuple(rows))
