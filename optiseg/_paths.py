"""What a path is when it is not the file or folder wanted, reading only regular files, and where output can go.

Every path optiseg reads or writes for the user is checked here before any work, so that a wrong one is one line
naming the path and what is there.

Opening a FIFO blocks until a writer comes (forever, and in a worker thread that
Ctrl-C does not reach), and opening a device node can have side effects: data
files are opened only once they are known to be regular files, and without blocking.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

_KINDS = (
    (stat.S_ISREG, "is a file"),
    (stat.S_ISDIR, "is a folder"),
    (stat.S_ISFIFO, "is a FIFO (named pipe)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
)


class NotRegularFile(OSError):
    """A path that is not a regular file (FIFO, socket, device, folder, broken link...): never opened."""


def path_kind(path: Path) -> str:
    """What is at ``path``, in words: "does not exist", "is a symlink loop", "is a FIFO (named pipe)", ...

    Symlinks are followed, and a link that cannot be followed says why.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a part of the path above it is a file)"
    except OSError as exc:
        return _unreachable(path, exc)
    if stat.S_ISLNK(info.st_mode):
        try:
            info = path.stat()
        except FileNotFoundError:
            return f"is a broken symlink (to {os.readlink(path)}, which does not exist)"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symlink loop"
            return f"is a symlink that cannot be followed ({exc.strerror})"
    for test, words in _KINDS:
        if test(info.st_mode):
            return words
    return "is not a regular file"


def _unreachable(path: Path, exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return f"cannot be reached: permission denied on a folder above it (check the permissions of {path.parent})"
    return f"cannot be read ({exc.strerror or exc})"


def read_regular(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (symlinks followed); :class:`NotRegularFile` if not.

    Special files are refused before they are opened, and the open never blocks,
    so a file swapped for a FIFO after that check cannot hang the read either.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotRegularFile(f"it {path_kind(path)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(f"it {path_kind(path)}, not a regular file (only regular files are read)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotRegularFile("it was replaced by something that is not a regular file while being opened")
        return handle.read()


def output_problem(path: Path, want: str = "folder") -> str | None:
    """Why ``path`` cannot be written as a ``want`` (``"folder"`` or ``"file"``), naming the culprit; None when it can.

    What is there must already be what is wanted (a regular file is replaced, a folder written into);
    otherwise the nearest existing path above it must be a folder. That folder is then tried, not
    guessed at: a folder made in it and removed at once, so permissions, read-only file systems and
    ``/proc`` (where even root cannot write) all answer as the real write would.
    Examples: "/x is a file, not a folder"; "/x/y is a symlink loop, not a folder"; "/x/f (above run) is a file,
    not a folder"; "/r is a folder optiseg cannot write in (Permission denied)". The text is printable (see :func:`shown`).
    """
    if want not in ("folder", "file"):
        raise ValueError(f"want must be 'folder' or 'file', not {want!r}")
    if os.path.lexists(path):
        kind = path_kind(path)
        if kind != ("is a folder" if want == "folder" else "is a file"):
            return shown(f"{path} {kind}" + (f", not a {want}" if kind.startswith("is ") else ""))
        return _not_writable(path if want == "folder" else path.absolute().parent)
    for above in path.absolute().parents:
        if os.path.lexists(above):
            kind = path_kind(above)
            if kind != "is a folder":
                return shown(f"{above} (above {path.name}) {kind}" + (", not a folder" if kind.startswith("is ") else ""))
            return _not_writable(above)
    return None


def _not_writable(folder: Path) -> str | None:
    try:
        probe = tempfile.mkdtemp(prefix=".optiseg-probe-", dir=folder)
    except OSError as exc:
        return shown(f"{folder} is a folder optiseg cannot write in ({exc.strerror or exc})")
    os.rmdir(probe)
    return None


def input_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (it does not exist, is a folder, a FIFO, a broken link...); None when it can."""
    kind = path_kind(path)
    if kind == "is a file":
        return None
    return shown(f"{path} {kind}" + (", not a regular file" if kind.startswith("is ") else ""))


def shown(text: str) -> str:
    r"""``text`` printable on any terminal: bytes of file names that are not UTF-8 become ``\xNN`` escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that no file name decoding made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def require_input(path: Path, what: str, *, hint: str | None = None) -> None:
    """A :class:`~optiseg.errors.UsageError` "<what> <path> is a FIFO (named pipe), not a regular file" unless
    ``path`` is a regular file (symlinks followed)."""
    from .errors import UsageError

    problem = input_problem(path)
    if problem is not None:
        raise UsageError(f"{what} {problem}", hint=hint or "check the path")


def require_output(path: Path, want: str, what: str) -> None:
    """A :class:`~optiseg.errors.UsageError` naming ``what`` (e.g. ``-o``) and the culprit unless ``path`` can be
    written as a ``want`` (``"folder"`` or ``"file"``, see :func:`output_problem`); call it before any work."""
    from .errors import UsageError

    problem = output_problem(path, want)
    if problem is not None:
        hint = ("give a folder you can write in (a missing one is made)" if want == "folder"
                else "give a file name in a folder you can write in (an existing file is replaced)")
        raise UsageError(f"{what} {shown(str(path))} cannot be written: {problem}", hint=hint)
