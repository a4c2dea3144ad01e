"""Checkpoint files: the network's identity and weights, plus whatever training needs to resume.

A checkpoint is a dict saved with ``torch.save`` and loaded with
``weights_only=True`` (no code runs on load). The keys ``model``, ``knobs``,
``num_classes``, ``in_channels`` and ``state_dict`` identify the network; a
trainer adds its own keys (epoch, optimizer state, ...). Writes are atomic: a
run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import write_bytes_atomic
from ._paths import read_regular, require_input
from .errors import UsageError
from .models import build_model
from .network import Network

FORMAT = "optiseg-checkpoint-1"
IDENTITY_KEYS = ("model", "knobs", "num_classes", "in_channels", "state_dict")
_WHICH = "give the checkpoint.pt or best.pt of a training run (`optiseg train` prints it)"


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (which must hold the identity keys) to ``path`` atomically."""
    missing = [k for k in IDENTITY_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_bytes_atomic(path, buffer.getvalue(), mode=0o600)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    require_input(path, "checkpoint", hint=_WHICH)
    try:
        payload = torch.load(io.BytesIO(read_regular(path)), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(
            f"checkpoint {path} cannot be read: {exc}",
            hint="it may be truncated or not an optiseg checkpoint; train again or pick another file",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path} is not an optiseg checkpoint (format {FORMAT!r} expected)", hint=_WHICH)
    return payload


def network_from_checkpoint(payload: Mapping[str, Any], resolution: Any = None) -> Network:
    """The :class:`Network` a checkpoint describes (``resolution`` for checkpoints that do not store one)."""
    size = payload.get("resolution") or resolution
    if size is None:
        raise UsageError("the checkpoint does not say its input resolution", hint="give the resolution (e.g. --resolution 192)")
    return Network.create(payload["model"], payload["knobs"], tuple(size),
                          in_channels=int(payload["in_channels"]), num_classes=int(payload["num_classes"]))


def model_from_checkpoint(payload: Mapping[str, Any]) -> nn.Module:
    """Build the network a checkpoint describes and load its weights."""
    model = build_model(payload["model"], payload["knobs"], payload["num_classes"], payload["in_channels"])
    model.load_state_dict(payload["state_dict"])
    return model
