"""An early-exit deployment folder: the stage graphs, the threshold table and the device-side script that runs the policy."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .._atomic import write_json_atomic
from .._runners.early_exit import MANIFEST
from ..errors import UsageError
from .chain import ExitChain
from .policy import OperatingPoint, check_confidence

SCRIPT = "early_exit.py"


def write_exit_deployment(
    chain: ExitChain,
    curve: Sequence[OperatingPoint],
    out_dir: str | os.PathLike,
    *,
    threshold: float,
    confidence: str = "max_prob",
    latency: dict | None = None,
) -> list[Path]:
    """Write ``stage1.onnx``, ..., ``exit1.onnx``, ..., ``exits.json`` and ``early_exit.py`` into ``out_dir``; return the paths written.

    ``exits.json`` is the chain's manifest plus ``policy``: the confidence
    kind the policy reads, the default ``threshold`` (null: never leave early; ``early_exit.py
    --threshold`` overrides it) and ``thresholds``, the operating curve (per
    threshold: share of images at each output, IoU, expected latency and
    MACs) from which to pick another. ``latency`` (e.g.
    :meth:`ChainLatency.as_dict`) is stored as measured, when given.
    """
    check_confidence(confidence)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder", hint="give a folder to write the deployment into")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in (path for stage in chain.stages for path in (stage.path, stage.upsample) if path is not None):
        target = out / source.name
        if target.resolve() != source.resolve():
            shutil.copyfile(source, target)
        written.append(target)
    script = out / SCRIPT
    script.write_text(resources.files("optiseg._runners").joinpath(SCRIPT).read_text(encoding="utf-8"), encoding="utf-8")
    written.append(script)
    manifest = {
        **chain.as_dict(),
        "policy": {
            "confidence": confidence,
            "threshold": None if math.isinf(threshold) else float(threshold),
            "rule": "leave at the first exit whose confidence >= threshold; the final output always answers",
            "thresholds": [point.as_dict(chain.exits) for point in curve],
        },
        **({"latency": latency} if latency is not None else {}),
    }
    write_json_atomic(out / MANIFEST, manifest)
    written.append(out / MANIFEST)
    return written
