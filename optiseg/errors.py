"""The error family of optiseg.

Every failure a user can cause or fix is an :class:`OptisegError`: its message
says what was wrong and where (file, key, path, host), and its ``hint`` says
what to do. The command line prints both without a traceback and exits with
``exit_code``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OptisegError(Exception):
    """Base class of every user-facing failure."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(OptisegError, ValueError):
    """Bad input from the command line or the API: wrong name, knob or value."""

    exit_code = 2


class KnobError(UsageError):
    """A model knob that does not exist or whose value is out of range."""


class ConfigError(UsageError):
    """A configuration file that is missing, unreadable or invalid."""


class DataError(OptisegError):
    """A data set that is missing files, inconsistent or unreadable."""

    exit_code = 2


class ExportError(OptisegError):
    """ONNX export failed or the exported graph disagrees with PyTorch."""


class DeviceError(OptisegError):
    """A device could not be reached, or failed to measure a model.

    ``retryable`` says whose fault it is. ``True`` (the default): the device or
    its environment failed (unreachable, login refused, onnxruntime missing or
    crashing, disk full, killed by the OOM killer, timed out), so the candidate
    itself is not to blame and a later run should measure it again once the
    user has fixed the device. ``False``: the failure is final for that
    candidate (e.g. the device's onnxruntime cannot load this model), and
    measuring it again would fail the same way. Neither value means "retry now":
    a runner retries transient network failures itself before raising.
    """

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = True):
        super().__init__(message, hint)
        self.retryable = retryable


class StudyError(OptisegError):
    """A search study cannot be created, resumed or read."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, ' (did you mean X or Y?)' when two are about as close
    (``modle``: ``mode`` or ``model``), or '' if none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    if not close:
        return ""
    ratio = lambda c: difflib.SequenceMatcher(None, word, c).ratio()  # noqa: E731
    if len(close) == 2 and ratio(close[1]) >= ratio(close[0]) - 0.1:
        return f" (did you mean {close[0]!r} or {close[1]!r}?)"
    return f" (did you mean {close[0]!r}?)"
