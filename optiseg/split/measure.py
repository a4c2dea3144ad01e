"""Every split plan of one network measured on a real device, server and link (``optiseg split --config``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._runners.tensor_codec import mask_nbytes
from ..network import Network
from .cuts import plan_cuts
from .parts import export_split
from .timing import SplitTiming


@dataclass(frozen=True)
class MeasuredPlans:
    """The whole network's latency on the device, and each (cut, bits) plan's :class:`SplitTiming`."""

    device_ms: float
    cuts: tuple[str, ...]  # ``server`` first, then the cut points
    timings: dict[tuple[str, int], SplitTiming]

    def as_dict(self) -> dict:
        return {
            "all_on_device_ms": self.device_ms,
            "plans": [{"cut": cut, "bits": bits, **timing.metrics(), "upload_ms": timing.upload_ms,
                       "download_ms": timing.download_ms, "mask_bytes": timing.mask_bytes}
                      for (cut, bits), timing in self.timings.items()],
        }


def measure_split_plans(network: Network, bits: Sequence[int], device, server, link, folder: Path,
                        step: Callable[[str], None] = lambda text: None) -> MeasuredPlans:
    """Export the untrained network's head and tail at every cut into ``folder`` and time them: the head with the
    encoding at each of ``bits`` on the ``device`` runner, the tail with the decoding on the ``server`` runner."""
    from ..devices import CodecStep
    from ..export import export_onnx

    model = network.build()
    folder.mkdir(parents=True, exist_ok=True)
    whole = folder / "network.onnx"
    export_onnx(model, whole, network)
    step("the whole network on the device")
    device_ms = device.measure(whole).median_ms
    timings = {}
    cuts = plan_cuts(network, model)
    for cut in cuts:
        head, tail = folder / f"{cut.after}-head.onnx", folder / f"{cut.after}-tail.onnx"
        export_split(model, network, cut, head, tail)
        for b in bits:
            step(f"cut {cut.after}, {b} bits: head on the device")
            head_latency = device.measure(head, CodecStep("encode", b)).to_dict()
            step(f"cut {cut.after}, {b} bits: tail on the server")
            tail_latency = server.measure(tail, CodecStep("decode", b)).to_dict()
            timings[(cut.after, b)] = SplitTiming.of(head_latency, tail_latency, link, mask_nbytes(*network.resolution))
    return MeasuredPlans(device_ms=device_ms, cuts=tuple(c.after for c in cuts), timings=timings)
