"""The link between this machine and a host, measured over SSH: round-trip time and bandwidth each way.

Bounded: ``rounds`` round trips of 64 bytes, then ``nbytes`` up and ``nbytes``
down, each in one command on the host (``cat``, ``head -c N >/dev/null``,
``head -c N /dev/zero``). The figures go through SSH's encryption, so they are
a lower bound of what a plain TCP socket (the deploy scripts') gets on the same
link; on a slow link (Wi-Fi, 5G) the difference is small.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

PING_BYTES = 64
CHUNK = 1 << 16


@dataclass(frozen=True)
class LinkMeasurement:
    """What :func:`measure_link` found: bandwidth (Mbit/s, 10^6 bit/s) up and down, round-trip time (ms)."""

    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    rtt_p90_ms: float
    bytes_each_way: int
    rounds: int
    host: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"link-test to {self.host} on {time.strftime('%Y-%m-%d')}: {self.bytes_each_way / 1e6:g} MB each way "
                f"over SSH, {self.rounds} round trips")


def measure_link(transport, host: str, nbytes: int = 8_000_000, rounds: int = 20, timeout: float = 10.0) -> LinkMeasurement:
    """Measure the link to the other end of a paramiko ``transport`` (see the module docstring)."""
    if nbytes < CHUNK or rounds < 3:
        raise ValueError(f"a link test sends at least {CHUNK} bytes and makes at least 3 round trips")
    rtts = []
    with _command(transport, "cat", timeout) as channel:
        for _ in range(rounds):
            started = time.perf_counter()
            channel.sendall(b"x" * PING_BYTES)
            _read(channel, PING_BYTES)
            rtts.append((time.perf_counter() - started) * 1000.0)
        channel.shutdown_write()
    rtt = statistics.median(rtts)
    with _command(transport, f"head -c {int(nbytes)} >/dev/null && echo done", timeout) as channel:
        started = time.perf_counter()
        block = b"\0" * CHUNK
        for offset in range(0, nbytes, CHUNK):
            channel.sendall(block[: min(CHUNK, nbytes - offset)])
        if _read(channel, 5) != b"done\n":
            raise OSError("the host did not confirm the upload")
        up_s = _transfer_seconds(time.perf_counter() - started, rtt / 2)  # the answer comes back after the last byte
    with _command(transport, f"head -c {int(nbytes)} /dev/zero", timeout) as channel:
        started = time.perf_counter()
        _read(channel, nbytes)
        down_s = _transfer_seconds(time.perf_counter() - started, rtt)  # the request goes up before the first byte
    ordered = sorted(rtts)
    return LinkMeasurement(
        uplink_mbps=nbytes * 8 / up_s / 1e6, downlink_mbps=nbytes * 8 / down_s / 1e6, rtt_ms=rtt,
        rtt_p90_ms=ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], bytes_each_way=int(nbytes), rounds=rounds,
        host=host,
    )


def _transfer_seconds(elapsed: float, latency_ms: float) -> float:
    """The elapsed time less the round trip's share, never below half of it (a jittery RTT must not win)."""
    return max(elapsed - latency_ms / 1000.0, elapsed / 2)


class _command:
    def __init__(self, transport, command: str, timeout: float):
        self.channel = transport.open_session(timeout=timeout)
        self.channel.settimeout(max(timeout, 60.0))
        self.channel.exec_command(command)

    def __enter__(self):
        return self.channel

    def __exit__(self, *exc_info) -> None:
        self.channel.close()


def _read(channel, count: int) -> bytes:
    chunks, received = [], 0
    while received < count:
        chunk = channel.recv(min(CHUNK * 4, count - received))
        if not chunk:
            raise EOFError(f"the host closed the channel after {received} of {count} bytes")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)
