"""The model file a runner is asked to time, checked on this machine before anything reaches a device."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .._paths import read_regular, require_input
from ..errors import UsageError

_HINT = "export it again, e.g. `optiseg export --model fastscnn --resolution 192 -o model.onnx`"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    size: int


def inspect_model(path: str | os.PathLike) -> ModelFile:
    """Check that ``path`` is a readable, valid ONNX model and hash it; :class:`UsageError` otherwise."""
    import onnx

    path = Path(path).expanduser()
    require_input(path, "model file")
    try:
        data = read_regular(path)
    except OSError as exc:
        raise UsageError(f"cannot read the model file {path}: {exc.strerror or exc}") from None
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path} is not a valid ONNX model: {detail}", hint=_HINT) from None
    if not model.graph.input:
        raise UsageError(f"{path} is an ONNX model without inputs; there is nothing to time", hint=_HINT)
    return ModelFile(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
