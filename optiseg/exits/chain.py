"""A network with side exits as a chain of stage graphs: stage k gives exit k's logits and what later stages need.

The chain is cut from the model's own stage list (``model.stages()``): stage k
runs every stage after the previous exit up to and including exit k; the last
stage runs the rest, up to the final logits. A stage's graph reads the tensors
its stages read that earlier stages wrote (only stage 1 reads the image) and
writes its exit's logits first, then every tensor it wrote that a later stage
reads. A runner keeps the named tensors of one image, so going on after exit k
starts from what is already computed: nothing is computed twice and nothing is
copied through a stage that does not use it.

Every stage graph goes through optiseg's one export path
(:func:`optiseg.export.export_graph`: ``onnx.checker``, onnxruntime against
PyTorch), then the whole chain, run by onnxruntime stage after stage, is
checked against the PyTorch network's every output. ``exits.json`` in the
folder lists the stages; :func:`load_exit_chain` reads it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import write_json_atomic
from .._runners.early_exit import MANIFEST, ExitChainRunner
from ..errors import ExportError, UsageError
from ..export import DEFAULT_OPSET, PARITY_TOLERANCE, export_graph, network_metadata
from ..models import INPUT, Stage, forward_exits, output_names
from ..network import Network
from ..profile import profile_stages
from ..split import StagePart, model_stages

FORMAT = "optiseg-exit-chain-1"


@dataclass(frozen=True)
class ChainStage:
    """Stage ``index`` (1-based) of a chain: its file, the tensors it reads and writes, the logits it gives, its MACs.

    ``outputs[0]`` is ``exit``, the stage's logits (``exit1``, ... or
    ``logits`` for the last stage); the other outputs are features a later
    stage reads. ``after`` names the model stages it runs.
    """

    index: int
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exit: str
    macs: int
    after: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "inputs": list(self.inputs), "outputs": list(self.outputs), "exit": self.exit,
                "macs": self.macs, "runs": list(self.after)}


@dataclass(frozen=True)
class ExitChain:
    """The stage graphs of one network with exits, in ``folder``; ``max_abs_diff`` of the chain against PyTorch."""

    network: Network
    folder: Path
    stages: tuple[ChainStage, ...]
    max_abs_diff: float

    @property
    def exits(self) -> tuple[str, ...]:
        """Each stage's logits in order: the exits, then ``logits``."""
        return tuple(stage.exit for stage in self.stages)

    @property
    def cumulative_macs(self) -> tuple[int, ...]:
        """MACs of the chain up to each output (stages 1..k, exit heads on the way included)."""
        total, result = 0, []
        for stage in self.stages:
            total += stage.macs
            result.append(total)
        return tuple(result)

    def as_dict(self) -> dict[str, Any]:
        """The content of ``exits.json``."""
        return {
            "format": FORMAT,
            "network": self.network.as_dict(),
            "network_key": self.network.key,
            "stages": [stage.as_dict() for stage in self.stages],
            "max_abs_diff": self.max_abs_diff,
        }


@dataclass(frozen=True)
class _Segment:
    stages: tuple[Stage, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def chain_segments(stages: Sequence[Stage]) -> list[_Segment]:
    """The model stages of each chain stage, and the named tensors it reads and writes (see the module docstring)."""
    ends = [index for index, stage in enumerate(stages) if stage.is_exit] + [len(stages) - 1]
    if len(ends) == 1:
        raise UsageError("the network has no exits (knob exits = 0): there is no chain to cut")
    names = output_names(stages)
    segments, start = [], 0
    for number, end in enumerate(ends):
        part = tuple(stages[start : end + 1])
        written = [name for stage in part for name in stage.outputs]
        reads = list(dict.fromkeys(name for stage in part for name in stage.inputs if name not in written))
        later = {name for stage in stages[end + 1 :] for name in stage.inputs}
        features = [name for name in written if name in later]
        segments.append(_Segment(part, tuple(reads), (names[number], *features)))
        start = end + 1
    return segments


def export_exit_chain(
    model: nn.Module,
    network: Network,
    folder: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExitChain:
    """Export ``model`` (the module of ``network``, with exits) as ``folder/stage1.onnx``, ... and ``folder/exits.json``.

    Each stage graph is parity-checked by :func:`~optiseg.export.export_graph`;
    then onnxruntime runs the chain on a random image and every output must
    agree with PyTorch's (:func:`~optiseg.models.forward_exits`) within
    ``tolerance``, or :class:`~optiseg.errors.ExportError` is raised and the
    stage graphs are removed. Works on untrained weights as well (the graphs'
    speed does not depend on them).
    """
    folder = Path(folder)
    stages = model_stages(model)
    segments = chain_segments(stages)
    macs = profile_stages(stages, network.input_shape).macs
    dummy = torch.randn(*network.input_shape, generator=torch.Generator().manual_seed(0))
    parts = [StagePart(segment.stages, segment.inputs, segment.outputs, network.resolution) for segment in segments]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [t.numpy() for t in forward_exits(model, dummy)]
            env = {INPUT: dummy}
            examples = []
            for part, segment in zip(parts, segments):
                examples.append({name: env[name] for name in segment.inputs})
                env.update(zip(segment.outputs, part(*examples[-1].values())))
    finally:
        model.train(was_training)

    what = f"{network.model} {network.knob_dict} at {network.resolution_text}"
    base = network_metadata(network, opset=opset)
    written: list[Path] = []
    chain_stages = []
    try:
        for number, (part, segment, example) in enumerate(zip(parts, segments, examples), start=1):
            path = folder / f"stage{number}.onnx"
            shapes = {name: list(tensor.shape) for name, tensor in example.items()}
            metadata = {
                **base,
                "exit_chain_stage": str(number),
                "exit_chain_length": str(len(segments)),
                "exit_name": segment.outputs[0],
                "output_name": ",".join(segment.outputs),
                "output": f"{segment.outputs[0]}: the logits of this exit (decoded as `output` of stage {len(segments)} says); "
                          "then the tensors later stages read",
            }
            if number > 1:
                metadata.update({"input_name": ",".join(segment.inputs), "input_shape": json.dumps(shapes),
                                 "input_layout": "tensors of earlier stages, float32, by name"})
            result = export_graph(part, path, example, segment.outputs, metadata,
                                  what=f"stage {number} of the exit chain of {what}", opset=opset, tolerance=tolerance)
            written.append(result.path)
            chain_stages.append(ChainStage(
                index=number, path=result.path, inputs=segment.inputs, outputs=segment.outputs, exit=segment.outputs[0],
                macs=sum(macs[stage.name] for stage in segment.stages), after=tuple(stage.name for stage in segment.stages),
            ))
        chain = ExitChain(network=network, folder=folder, stages=tuple(chain_stages), max_abs_diff=0.0)
        write_json_atomic(folder / MANIFEST, chain.as_dict())
        max_diff = _chain_parity(folder, dummy.numpy(), expected)
        if not max_diff <= tolerance:
            raise ExportError(
                f"the exit chain of {what}, run stage after stage by onnxruntime, disagrees with PyTorch: "
                f"max abs difference {max_diff:.3g} > {tolerance:g}",
                hint="this is a bug in optiseg or in the exporter; please report it with the command you ran",
            )
    except BaseException:
        for path in [*written, folder / MANIFEST]:
            path.unlink(missing_ok=True)
        raise
    chain = ExitChain(network=network, folder=folder, stages=tuple(chain_stages), max_abs_diff=max_diff)
    write_json_atomic(folder / MANIFEST, chain.as_dict())
    return chain


def _chain_parity(folder: Path, image: np.ndarray, expected: Sequence[np.ndarray]) -> float:
    """Max abs difference between every output of the chain run by onnxruntime and PyTorch's."""
    actual = ExitChainRunner(folder).run_all(image)
    return max(float(np.max(np.abs(a - e[0]))) for a, e in zip(actual, expected))


def load_exit_chain(folder: str | os.PathLike) -> ExitChain:
    """The chain that :func:`export_exit_chain` wrote into ``folder``."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder} holds no exit chain ({path}: {exc})", hint="export one with optiseg exits") from None
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not an optiseg exit chain (format {FORMAT!r} expected)")
    stages = tuple(
        ChainStage(index=number, path=folder / s["file"], inputs=tuple(s["inputs"]), outputs=tuple(s["outputs"]),
                   exit=s["exit"], macs=int(s["macs"]), after=tuple(s["runs"]))
        for number, s in enumerate(manifest["stages"], start=1)
    )
    return ExitChain(Network.from_dict(manifest["network"]), folder, stages, float(manifest["max_abs_diff"]))

