"""A pool of devices of one kind: each measurement takes a free device, one measurement per device at a time.

The claim on a device is an ``flock`` on a file under ``~/.cache/optiseg/locks/``
(``$XDG_CACHE_HOME`` is honoured), so it holds across threads and across every
optiseg process of this user on this machine; the kernel drops it when a
process dies, so a crash never leaves a device claimed.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import DeviceError, UsageError
from ._base import Runner

POLL_S = 0.2


def lock_directory() -> Path:
    """Where the device lock files live."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "optiseg" / "locks"


class DeviceLock:
    """An exclusive, non-blocking claim on one device (an ``flock`` on its lock file)."""

    def __init__(self, key: str, directory: Path | None = None):
        self.path = (directory or lock_directory()) / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".lock")
        self._descriptor: int | None = None

    def try_acquire(self) -> bool:
        """Claim the device if no one holds it; never waits."""
        if self._descriptor is not None:
            raise RuntimeError(f"{self.path} is already held by this lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None


class _Slot:
    def __init__(self, runner: Runner, lock: DeviceLock):
        self.runner = runner
        self.lock = lock
        self.busy = False
        self.last_used = 0.0


class DevicePool:
    """Runners for several devices of one kind (or just one); ``acquire()`` lends a free one."""

    def __init__(
        self,
        members: Sequence[tuple[str, Runner]],
        *,
        device_key: str,
        label: str,
        lock_dir: Path | None = None,
    ):
        if not members:
            raise ValueError("a device pool needs at least one device")
        self.device_key = device_key
        self.label = label
        self._slots = [_Slot(runner, DeviceLock(lock_key, lock_dir)) for lock_key, runner in members]
        self._condition = threading.Condition()
        self._closed = False

    @property
    def size(self) -> int:
        return len(self._slots)

    @property
    def runners(self) -> tuple[Runner, ...]:
        return tuple(slot.runner for slot in self._slots)

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Runner]:
        """Wait for a free device (at most ``timeout`` seconds; None = as long as it takes) and lend its runner."""
        slot = self._claim(timeout)
        try:
            yield slot.runner
        finally:
            with self._condition:
                slot.lock.release()
                slot.busy = False
                slot.last_used = time.monotonic()
                self._condition.notify()

    def _claim(self, timeout: float | None) -> _Slot:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                if self._closed:
                    raise UsageError("this device pool is closed")
                # The least recently used first: work spreads evenly, and a device that just failed waits its turn.
                for slot in sorted((s for s in self._slots if not s.busy), key=lambda s: s.last_used):
                    if slot.lock.try_acquire():
                        slot.busy = True
                        return slot
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeviceError(
                        f"no device of {self.label} became free within {timeout:g} s",
                        hint=f"other optiseg processes hold them (lock files in {self._slots[0].lock.path.parent})",
                    )
                # Notified when a thread of this process releases; polled for other processes.
                self._condition.wait(POLL_S if remaining is None else min(POLL_S, remaining))

    def close(self) -> None:
        """Close every runner (in-flight measurements finish first if they hold the runner's lock)."""
        with self._condition:
            self._closed = True
        for slot in self._slots:
            slot.runner.close()

    def __enter__(self) -> "DevicePool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
