"""Latency of an exit chain on a device: each stage graph timed there, summed up to each exit.

Each stage graph is timed by the device's runner (``runner.measure``: the same
protocol, warm-up and median as every model optiseg times) on inputs of its
own shapes. The time to exit k is the sum of the medians of stages 1..k: the
deployed policy runs exactly those graphs one after the other, each as its
own onnxruntime call, so a stage's time on the device is what going on to it
costs. What the sum leaves out is the policy itself (the confidence of each
exit passed: one pass over the exit's logits in numpy) and the hand-over of
the features between two calls; ``benchmarks/early_exit.py`` measures both by
running the deployed script and compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .chain import ExitChain


@dataclass(frozen=True)
class ChainLatency:
    """Median milliseconds of each stage graph on one device, and the cumulative time to each output."""

    device_key: str
    stage_ms: tuple[float, ...]
    results: tuple[Any, ...] = ()  # the runner's LatencyResult of each stage, when measured here

    @property
    def cumulative_ms(self) -> tuple[float, ...]:
        """Milliseconds from the image to each output: exit 1, ..., the final logits."""
        total, result = 0.0, []
        for ms in self.stage_ms:
            total += ms
            result.append(total)
        return tuple(result)

    def as_dict(self) -> dict[str, Any]:
        return {"device_key": self.device_key, "stage_ms": list(self.stage_ms), "cumulative_ms": list(self.cumulative_ms)}


def measure_chain(chain: ExitChain, runner) -> ChainLatency:
    """Time every stage graph of ``chain`` with ``runner.measure`` (any :class:`~optiseg.devices.Runner`)."""
    results = tuple(runner.measure(stage.path) for stage in chain.stages)
    return ChainLatency(device_key=runner.device_key, stage_ms=tuple(r.median_ms for r in results), results=results)


def chain_latency(stage_ms: Sequence[float], device_key: str = "") -> ChainLatency:
    """A :class:`ChainLatency` from stage times measured elsewhere (e.g. by a deployment mode's cached measure)."""
    return ChainLatency(device_key=device_key, stage_ms=tuple(float(ms) for ms in stage_ms))
