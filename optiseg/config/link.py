"""The ``link:`` section: the network between the device and the server (split and cascade plans).

``optiseg device link-test HOST`` measures these figures over SSH and can write
them into a config. A frame's transfer time is its bytes over the bandwidth
plus half the round-trip time, each way: a request goes up, its answer comes
down, and the pair costs one round trip.
"""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveFloat, model_validator

from ._base import Section


class LinkConfig(Section):
    """Uplink and downlink bandwidth (Mbit/s) and round-trip time (ms) between the device and the server."""

    uplink_mbps: PositiveFloat = Field(description="device -> server bandwidth, Mbit/s (10^6 bits per second)")
    downlink_mbps: PositiveFloat | None = Field(None, description="server -> device bandwidth, Mbit/s; default: the uplink's")
    rtt_ms: NonNegativeFloat = Field(0.0, description="round-trip time, ms (ping)")
    measured: str | None = Field(None, description="how and when the figures were measured (written by link-test)")

    @model_validator(mode="after")
    def _symmetric_by_default(self) -> "LinkConfig":
        if self.downlink_mbps is None:
            object.__setattr__(self, "downlink_mbps", self.uplink_mbps)
        return self

    def upload_ms(self, nbytes: int) -> float:
        """Milliseconds to send ``nbytes`` from the device to the server (half a round trip included)."""
        return nbytes * 8 / (self.uplink_mbps * 1e3) + self.rtt_ms / 2

    def download_ms(self, nbytes: int) -> float:
        """Milliseconds to send ``nbytes`` from the server back to the device (half a round trip included)."""
        return nbytes * 8 / (float(self.downlink_mbps) * 1e3) + self.rtt_ms / 2

    def describe(self) -> str:
        down = "" if self.downlink_mbps == self.uplink_mbps else f" up, {self.downlink_mbps:g} down"
        return f"{self.uplink_mbps:g} Mbit/s{down}, RTT {self.rtt_ms:g} ms"
