"""End-to-end time of a split plan from its measured parts: head on the device, the link, tail on the server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..devices import p90_of


@dataclass(frozen=True)
class SplitTiming:
    """One split plan's figures per frame: each part's median (and 90th percentile) and the link's share.

    ``device_ms`` is the head with the encoding of what crosses, ``server_ms`` the tail with its decoding
    (both measured); ``upload_ms`` / ``download_ms`` come from the link's bandwidth and round-trip time for
    ``frame_bytes`` up and ``mask_bytes`` down.
    """

    device_ms: float
    device_p90_ms: float
    server_ms: float
    server_p90_ms: float
    frame_bytes: int
    mask_bytes: int
    upload_ms: float
    download_ms: float

    @classmethod
    def of(cls, head: Mapping[str, Any], tail: Mapping[str, Any], link, mask_bytes: int) -> SplitTiming:
        """From the head's and the tail's latency measurements (``LatencyResult.to_dict``) and a LinkConfig."""
        frame = int(head["codec"]["frame_bytes"])
        return cls(
            device_ms=float(head["median_ms"]), device_p90_ms=p90_of(head),
            server_ms=float(tail["median_ms"]), server_p90_ms=p90_of(tail),
            frame_bytes=frame, mask_bytes=int(mask_bytes),
            upload_ms=link.upload_ms(frame), download_ms=link.download_ms(mask_bytes),
        )

    @property
    def link_ms(self) -> float:
        return self.upload_ms + self.download_ms

    @property
    def latency_ms(self) -> float:
        return self.device_ms + self.upload_ms + self.server_ms + self.download_ms

    @property
    def p90_ms(self) -> float:
        return self.device_p90_ms + self.upload_ms + self.server_p90_ms + self.download_ms

    @property
    def fps(self) -> float:
        return 1000.0 / self.latency_ms

    @property
    def uplink_mbps(self) -> float:
        """The uplink's bitrate at this plan's own frame rate."""
        return self.frame_bytes * 8 * self.fps / 1e6

    def metrics(self) -> dict[str, float]:
        """The named metrics (:data:`optiseg.plans.METRICS`) these figures give."""
        return {
            "latency_ms": self.latency_ms, "latency_p90_ms": self.p90_ms, "fps": self.fps,
            "device_latency_ms": self.device_ms, "server_latency_ms": self.server_ms,
            "link_ms": self.link_ms, "link_bytes": self.frame_bytes, "uplink_mbps": self.uplink_mbps,
        }
