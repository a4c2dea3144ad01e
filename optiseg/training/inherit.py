"""A starting point for a new network: the weights of a trained network that contains it (width slicing).

As weight-sharing NAS does (once-for-all, slimmable networks), a network of the same family that is as wide
and as deep or more hands each of the new network's tensors its leading slice: the first output and input
channels of a wider layer (width ``a``), the first hidden channels of a larger expansion (``t``), the first
blocks of a deeper group (``r``). The same shape at another input resolution is copied whole: the layers of
these fully convolutional families do not depend on the input size.

A concatenation breaks leading slices (the first channels of ``[A, B]`` are not the first of each), so a
module that concatenates names, in ``concatenated_inputs``, the children that read the concatenation; their
input channels must match exactly. So must a grouped convolution with several outputs per group (output ``j``
reads group ``j // m``: slicing would rewire it). Knobs rule out the rest (:func:`knob_mismatch`): a module
switched on in one network and off in the other (the layers after a module that is not residual were trained
on its output), and side exits unless the shapes are the same (exits are placed by MAC share, so heads of
other shapes tap other stages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InitialWeights:
    """Weights to start a training from, and what they are (for the log, the metrics and the trial record)."""

    state_dict: Mapping[str, torch.Tensor]
    source: str


def _exact_input_prefixes(model: nn.Module) -> tuple[str, ...]:
    prefixes = []
    for name, module in model.named_modules():
        for child in getattr(module, "concatenated_inputs", ()):
            prefixes.append(f"{name}.{child}." if name else f"{child}.")
    return tuple(prefixes)


def _exact_tensors(model: nn.Module) -> set[str]:
    """Weights of grouped convolutions with several outputs per group: only an identical tensor keeps their wiring."""
    return {f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and module.groups > 1 and module.out_channels // module.groups > 1}


def knob_mismatch(model: str, source_knobs: Mapping, target_knobs: Mapping) -> str | None:
    """Why two networks' knobs rule out starting one from the other (see the module's text), or None."""
    from ..models import get_model_entry

    specs = get_model_entry(model).knobs
    source = {k.name: source_knobs.get(k.name, k.default) for k in specs}
    target = {k.name: target_knobs.get(k.name, k.default) for k in specs}
    for spec in specs:
        if spec.kind is bool and bool(source[spec.name]) != bool(target[spec.name]):
            return f"{spec.name} is {int(bool(source[spec.name]))} in the source and {int(bool(target[spec.name]))} here"
    if (source.get("exits") or target.get("exits")) and source != target:
        return "networks with side exits start only from the same shape (exits are placed by MAC share)"
    return None


def inheritable(source_shapes: Mapping[str, tuple[int, ...]], target: nn.Module) -> bool:
    """Whether a network with these tensor shapes contains ``target``: every tensor of ``target`` exists in it
    with at least its size along every axis (and the same input channels where ``target`` concatenates)."""
    exact, identical = _exact_input_prefixes(target), _exact_tensors(target)
    for name, tensor in target.state_dict().items():
        shape = source_shapes.get(name)
        if shape is None or len(shape) != tensor.dim() or (name in identical and shape != tuple(tensor.shape)):
            return False
        if any(wanted > have for wanted, have in zip(tensor.shape, shape)):
            return False
        if tensor.dim() >= 2 and exact and name.startswith(exact) and shape[1] != tensor.shape[1]:
            return False
    return True


def state_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return state_shapes(model.state_dict())


def inherit(target: nn.Module, source_state: Mapping[str, torch.Tensor]) -> int:
    """Load the leading slice of each of ``source_state``'s tensors into ``target``; returns how many were sliced
    (0: the same shape). Raises ``ValueError`` if the source does not contain ``target``."""
    if not inheritable(state_shapes(source_state), target):
        raise ValueError("the source network does not contain the target network (narrower, shallower or another family)")
    loaded, sliced = {}, 0
    for name, tensor in target.state_dict().items():
        source = source_state[name]
        if tuple(source.shape) != tuple(tensor.shape):
            source = source[tuple(slice(0, size) for size in tensor.shape)]
            sliced += 1
        loaded[name] = source.detach().clone().to(dtype=tensor.dtype)
    target.load_state_dict(loaded)
    return sliced
