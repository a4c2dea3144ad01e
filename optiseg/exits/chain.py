"""A network with side exits as a chain of stage graphs: stage k gives exit k's logits and what later stages need.

The chain is cut from the model's own stage list (``model.stages()``): stage k
runs every stage after the previous exit up to and including exit k's head;
the last stage runs the rest, up to the final logits. A stage's graph reads
the tensors its stages read that earlier stages wrote (only stage 1 reads the
image) and writes its exit's logits first (at the resolution of the feature
the head reads: ``exit1_lowres``), then their confidences
(``exit1_confidence``: one row of :data:`CONFIDENCES`, computed in the graph so
that timing the stage times them too), then every tensor it wrote that a later
stage reads. The exit's upsampling to the input size (the exit's last model
stage) is a graph of its own, ``exit1.onnx``, run only for an image that
leaves there: resizing to the input size costs as much as a few convolutions,
and an image that goes on never needs it. A runner keeps the named tensors of one image, so going on after exit k
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
import torch.nn.functional as F
from torch import nn

from .._atomic import write_json_atomic
from .._runners.early_exit import CONFIDENCES, MANIFEST, ExitChainRunner
from ..errors import ExportError, UsageError
from ..export import DEFAULT_OPSET, PARITY_TOLERANCE, export_graph, network_metadata
from ..models import INPUT, OUTPUT, Stage, exit_names, forward_exits
from ..network import Network
from ..profile import profile_stages
from ..split import StagePart, model_stages

FORMAT = "optiseg-exit-chain-2"


@dataclass(frozen=True)
class ChainStage:
    """Stage ``index`` (1-based) of a chain: its file, the tensors it reads and writes, its output, its MACs.

    ``exit`` names the output it gives (``exit1``, ... or ``logits`` for the
    last stage). ``outputs[0]`` is ``logits``, the name of that output's logits
    in the graph: an exit's at the resolution of the feature it reads
    (``exit1_lowres``), then ``confidence`` (``exit1_confidence``, one row of
    :data:`CONFIDENCES`); the final output's at the input size. The other
    outputs are features a later stage reads. ``upsample`` is the exit's own
    small graph that resizes its logits to the input size, run only for an
    image that leaves there (None for the last stage). ``after`` names the
    model stages the stage graph runs.
    """

    index: int
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exit: str
    confidence: str | None
    upsample: Path | None
    macs: int
    after: tuple[str, ...]

    @property
    def logits(self) -> str:
        return self.outputs[0]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "inputs": list(self.inputs), "outputs": list(self.outputs), "exit": self.exit,
                "confidence": self.confidence, "upsample": self.upsample.name if self.upsample else None,
                "macs": self.macs, "runs": list(self.after)}


@dataclass(frozen=True)
class ExitChain:
    """The stage graphs of one network with exits, in ``folder``; ``max_abs_diff`` of the chain against PyTorch.

    ``pixel_probability`` is the probability at which the ``pixel_share``
    confidence counts a pixel as sure (a constant of the graphs).
    """

    network: Network
    folder: Path
    stages: tuple[ChainStage, ...]
    max_abs_diff: float
    pixel_probability: float

    @property
    def exits(self) -> tuple[str, ...]:
        """Each stage's output in order: the exits, then ``logits``."""
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
            "confidences": list(CONFIDENCES),
            "pixel_probability": self.pixel_probability,
            "max_abs_diff": self.max_abs_diff,
        }


class ExitConfidence(nn.Module):
    """The confidences of exit logits (N, C, H, W), in the order of :data:`CONFIDENCES`: (N, 2).

    ``max_prob``: the mean over pixels of the largest class probability (one
    logit: ``max(p, 1 - p)``, ``p = sigmoid``; several: softmax);
    ``pixel_share``: the share of pixels whose largest probability is at least ``pixel_probability``.
    """

    def __init__(self, pixel_probability: float):
        super().__init__()
        self.pixel_probability = float(pixel_probability)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits[:, 0])
            largest = torch.maximum(p, 1 - p)
        else:
            largest = F.softmax(logits, dim=1).amax(dim=1)
        sure = (largest >= self.pixel_probability).to(largest.dtype)
        return torch.stack([largest.mean(dim=(1, 2)), sure.mean(dim=(1, 2))], dim=1)


class _ExitStagePart(nn.Module):
    """A chain stage ending at an exit's head: the stage part's outputs with the confidences after the exit's logits."""

    def __init__(self, part: StagePart, pixel_probability: float):
        super().__init__()
        self.part = part
        self.confidence = ExitConfidence(pixel_probability)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, *features = self.part(*tensors)
        return (logits, self.confidence(logits), *features)


@dataclass(frozen=True)
class ChainSegment:
    """The model stages of one chain stage, the tensors it reads and writes (its logits first), the output it gives.

    ``upsample`` is the exit's last model stage (the resize of its logits to the
    input size), exported apart; None for the final output, whose stage graph
    ends with the network's own upsampling.
    """

    stages: tuple[Stage, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exit: str
    upsample: Stage | None


def chain_segments(stages: Sequence[Stage]) -> list[ChainSegment]:
    """Cut a stage list with exits into chain stages (see the module docstring)."""
    names = exit_names(stages)
    if not names:
        raise UsageError("the network has no exits (knob exits = 0): there is no chain to cut")
    segments, start = [], 0
    for name in [*names, OUTPUT]:
        if name == OUTPUT:
            end, upsample, after_end = len(stages) - 1, None, len(stages)
        else:
            last = next(i for i, stage in enumerate(stages) if stage.exit == name and name in stage.outputs)
            end, upsample, after_end = last - 1, stages[last], last + 1
        part = tuple(stages[start : end + 1])
        written = [tensor for stage in part for tensor in stage.outputs]
        reads = tuple(dict.fromkeys(tensor for stage in part for tensor in stage.inputs if tensor not in written))
        logits = upsample.inputs[0] if upsample is not None else OUTPUT
        later = {tensor for stage in stages[after_end:] for tensor in stage.inputs}
        features = [tensor for tensor in written if tensor in later and tensor != logits]
        segments.append(ChainSegment(part, reads, (logits, *features), name, upsample))
        start = after_end
    return segments


def cumulative_exit_macs(model: nn.Module, network: Network) -> dict[str, int]:
    """MACs from the image to each output of ``model`` run as a chain (exit heads on the way included), by output name."""
    stages = model_stages(model)
    macs = profile_stages(stages, network.input_shape).macs
    total, result = 0, {}
    for segment in chain_segments(stages):
        total += _macs(segment, macs)
        result[segment.exit] = total
    return result


def _macs(segment: ChainSegment, macs: dict[str, int]) -> int:
    return sum(macs[stage.name] for stage in (*segment.stages, *([segment.upsample] if segment.upsample else [])))


def export_exit_chain(
    model: nn.Module,
    network: Network,
    folder: str | os.PathLike,
    *,
    pixel_probability: float = 0.9,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExitChain:
    """Export ``model`` (the module of ``network``, with exits) as ``folder/stage1.onnx``, ..., ``folder/exit1.onnx``, ... and ``exits.json``.

    ``stageK.onnx`` is chain stage K; ``exitK.onnx`` resizes exit K's logits to
    the input size. Each graph is parity-checked by
    :func:`~optiseg.export.export_graph`; then onnxruntime runs the chain on a
    random image and every output must agree with PyTorch's
    (:func:`~optiseg.models.forward_exits`) within ``tolerance``, or
    :class:`~optiseg.errors.ExportError` is raised and the graphs are removed.
    Works on untrained weights as well (the graphs' speed does not depend on
    them). ``pixel_probability`` is where the ``pixel_share`` confidence counts
    a pixel as sure.
    """
    folder = Path(folder)
    stages = model_stages(model)
    segments = chain_segments(stages)
    macs = profile_stages(stages, network.input_shape).macs
    dummy = torch.randn(*network.input_shape, generator=torch.Generator().manual_seed(0))
    parts: list[nn.Module] = [StagePart(segment.stages, segment.inputs, segment.outputs, network.resolution) for segment in segments]
    parts[:-1] = [_ExitStagePart(part, pixel_probability) for part in parts[:-1]]
    names = [(s.outputs[0], f"{s.exit}_confidence", *s.outputs[1:]) for s in segments[:-1]] + [segments[-1].outputs]
    upsamples = [StagePart((s.upsample,), s.upsample.inputs, (s.exit,), network.resolution) for s in segments[:-1]]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [t.numpy() for t in forward_exits(model, dummy)]
            env = {INPUT: dummy}
            examples = []
            for part, segment, outputs in zip(parts, segments, names):
                examples.append({name: env[name] for name in segment.inputs})
                env.update(zip(outputs, part(*examples[-1].values())))
    finally:
        model.train(was_training)

    what = f"{network.model} {network.knob_dict} at {network.resolution_text}"
    base = network_metadata(network, opset=opset)
    written: list[Path] = []
    chain_stages = []
    (folder / MANIFEST).unlink(missing_ok=True)  # an older chain's manifest must not describe the graphs rewritten here
    try:
        for number, (part, segment, example, outputs) in enumerate(zip(parts, segments, examples, names), start=1):
            last = number == len(segments)
            shapes = {name: list(tensor.shape) for name, tensor in example.items()}
            metadata = {
                **base,
                "exit_chain_stage": str(number),
                "exit_chain_length": str(len(segments)),
                "exit_name": segment.exit,
                "output_name": ",".join(outputs),
                "output": (f"{outputs[0]}: the final logits, decoded as `num_classes` says; " if last else
                           f"{outputs[0]}: the logits of {segment.exit} at the resolution of the feature it reads "
                           f"(exit{number}.onnx resizes them to the input size); {outputs[1]}: their confidences "
                           f"{list(CONFIDENCES)} (pixels sure at {pixel_probability:g}); ") + "then the tensors later stages read",
            }
            if number > 1:
                metadata.update({"input_name": ",".join(segment.inputs), "input_shape": json.dumps(shapes),
                                 "input_layout": "tensors of earlier stages, float32, by name"})
            result = export_graph(part, folder / f"stage{number}.onnx", example, outputs, metadata,
                                  what=f"stage {number} of the exit chain of {what}", opset=opset, tolerance=tolerance)
            written.append(result.path)
            upsample = None
            if not last:
                logits = outputs[0]
                meta = {**base, "exit_name": segment.exit, "input_name": logits, "input_shape": json.dumps({logits: list(env[logits].shape)}),
                        "input_layout": f"the logits {logits} of stage{number}.onnx", "output_name": segment.exit}
                upsample = export_graph(upsamples[number - 1], folder / f"exit{number}.onnx", {logits: env[logits]}, (segment.exit,),
                                        meta, what=f"the upsampling of {segment.exit} of {what}", opset=opset, tolerance=tolerance).path
                written.append(upsample)
            chain_stages.append(ChainStage(
                index=number, path=result.path, inputs=segment.inputs, outputs=outputs, exit=segment.exit,
                confidence=None if last else outputs[1], upsample=upsample, macs=_macs(segment, macs),
                after=tuple(stage.name for stage in segment.stages),
            ))
        unchecked = ExitChain(network, folder, tuple(chain_stages), max_abs_diff=0.0, pixel_probability=pixel_probability)
        max_diff = _chain_parity(folder, unchecked.as_dict(), dummy.numpy(), expected)
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
    chain = ExitChain(network, folder, tuple(chain_stages), max_abs_diff=max_diff, pixel_probability=pixel_probability)
    write_json_atomic(folder / MANIFEST, chain.as_dict())
    return chain


def _chain_parity(folder: Path, manifest: dict[str, Any], image: np.ndarray, expected: Sequence[np.ndarray]) -> float:
    """Max abs difference between every output of the chain run by onnxruntime and PyTorch's; ``exits.json`` is
    written only after this passes, so a chain interrupted before has no manifest to load."""
    actual, _ = ExitChainRunner(folder, manifest=manifest).run_all(image)
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
        raise UsageError(f"{path} is not an optiseg exit chain of this version (format {FORMAT!r} expected)",
                         hint="export the chain again (optiseg exits does)")
    stages = tuple(
        ChainStage(index=number, path=folder / s["file"], inputs=tuple(s["inputs"]), outputs=tuple(s["outputs"]),
                   exit=s["exit"], confidence=s["confidence"], upsample=folder / s["upsample"] if s["upsample"] else None,
                   macs=int(s["macs"]), after=tuple(s["runs"]))
        for number, s in enumerate(manifest["stages"], start=1)
    )
    return ExitChain(Network.from_dict(manifest["network"]), folder, stages, float(manifest["max_abs_diff"]),
                     float(manifest["pixel_probability"]))
