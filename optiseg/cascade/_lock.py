"""One builder at a time in a cascade's folder.

Several workers of a study finish at about the same time, and each builds the
cascade of the study's pair into the same folder, then stores its operating
points as trials. :func:`cascade_lock` makes them take turns: an exclusive
``flock`` on ``folder/.lock``, held while the cascade is built
(:func:`~optiseg.cascade.build_cascade`) and while its points are stored
(:func:`~optiseg.cascade.add_cascade_trials`). The worker that comes second
finds the files and the trials there and reuses them.

Processes and threads exclude each other (each holder opens the file anew); a
thread that holds the lock may take it again (a build inside a caller's lock).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError

LOCK = ".lock"

_held = threading.local()  # the folders this thread holds the lock of


@contextmanager
def cascade_lock(folder: str | Path, waiting: Callable[[str], None] = lambda text: None) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock for the block, waiting as long as another process or thread holds it.

    ``waiting`` is told once when the lock is taken by someone else (who, if the holder wrote it).
    """
    folder = Path(folder)
    key = str(folder.resolve())
    held = _held_folders()
    if key in held:
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK, "a+")  # noqa: SIM115  (closed below)
    except OSError as exc:
        raise UsageError(f"cannot build the cascade in {folder}: {exc.strerror or exc}",
                         hint="give a folder you can write to (-o), or build it where the study's files are writable") from None
    with handle:
        _lock(handle, folder, waiting)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held_folders() -> set[str]:
    if not hasattr(_held, "folders"):
        _held.folders = set()
    return _held.folders


def _lock(handle, folder: Path, waiting: Callable[[str], None]) -> None:
    """Take the lock (after waiting for its holder), then say in the file who holds it now."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        waiting(f"{holder} is building the cascade in {folder}: waiting for it, then reusing what it made")
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
