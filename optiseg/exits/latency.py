"""Latency of an exit chain on a device: each stage graph timed there, summed up to each exit.

Each graph is timed by the device's runner (``runner.measure``: the same
protocol, warm-up and median as every model optiseg times) on inputs of its
own shapes. The time to exit k is the sum of the medians of stages 1..k plus
exit k's upsampling: the deployed policy runs exactly those graphs one after
the other, each as its own onnxruntime call, and the confidences are computed
inside the stage graphs. What the sum leaves out is the hand-over of the
tensors between two calls and the comparison with the threshold;
``benchmarks/early_exit.py`` times the deployed policy image by image and
compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .chain import ExitChain


@dataclass(frozen=True)
class ChainLatency:
    """Median milliseconds of each stage graph and each exit's upsampling on one device, and the time to each output.

    ``upsample_ms`` has one figure per exit (the final output's upsampling is
    inside the last stage graph).
    """

    device_key: str
    stage_ms: tuple[float, ...]
    upsample_ms: tuple[float, ...]
    results: tuple[Any, ...] = ()  # the runner's LatencyResult of each graph, stages then upsamplings, when measured here

    @property
    def cumulative_ms(self) -> tuple[float, ...]:
        """Milliseconds from the image to each output's logits at the input size: exit 1, ..., the final logits."""
        total, result = 0.0, []
        for ms, upsample in zip(self.stage_ms, (*self.upsample_ms, 0.0)):
            total += ms
            result.append(total + upsample)
        return tuple(result)

    def as_dict(self) -> dict[str, Any]:
        return {"device_key": self.device_key, "stage_ms": list(self.stage_ms), "upsample_ms": list(self.upsample_ms),
                "cumulative_ms": list(self.cumulative_ms)}


def measure_chain(chain: ExitChain, runner) -> ChainLatency:
    """Time every stage graph and exit upsampling of ``chain`` with ``runner.measure`` (any :class:`~optiseg.devices.Runner`)."""
    stages = tuple(runner.measure(stage.path) for stage in chain.stages)
    upsamples = tuple(runner.measure(stage.upsample) for stage in chain.stages if stage.upsample is not None)
    return ChainLatency(device_key=runner.device_key, stage_ms=tuple(r.median_ms for r in stages),
                        upsample_ms=tuple(r.median_ms for r in upsamples), results=stages + upsamples)


def chain_latency(stage_ms: Sequence[float], upsample_ms: Sequence[float], device_key: str = "") -> ChainLatency:
    """A :class:`ChainLatency` from times measured elsewhere (e.g. by a deployment mode's cached measure)."""
    if len(upsample_ms) != len(stage_ms) - 1:
        raise ValueError(f"{len(stage_ms)} stages need {len(stage_ms) - 1} upsampling times, not {len(upsample_ms)}")
    return ChainLatency(device_key=device_key, stage_ms=tuple(float(ms) for ms in stage_ms),
                        upsample_ms=tuple(float(ms) for ms in upsample_ms))
