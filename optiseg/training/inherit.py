"""A starting point for a new network: the weights of a trained network that contains it (width slicing).

As weight-sharing NAS does (once-for-all, slimmable networks), a network of the same family that is as wide
and as deep or more hands each of the new network's tensors a slice: the first output and input channels of
a wider layer (width ``a``), the first hidden channels of a larger expansion (``t``), the first blocks of a
deeper group (``r``). The same shape at another input resolution is copied whole: the layers of these fully
convolutional families do not depend on the input size.

The slice follows the channels through the network (:func:`inheritance_plan`, from the source's tensor
shapes alone): each of the new network's channels takes one of the source's, and every layer that reads it
reads that one. Mostly that is the leading slice; two structures need more.

* **Grouped convolutions with one input per group** (depthwise; a depthwise expansion with ``m`` outputs
  per group, whose output ``j`` reads input ``j // m``): output ``j = g*m' + k`` of the new network takes
  the source's output ``s(g)*m + k``, ``s(g)`` being the source channel that its input ``g`` took, if
  ``m' <= m`` (and ``g`` runs over no more groups than the source's). The BatchNorm after it, a depthwise
  convolution after that (output ``j`` reads input ``j``) and the input channels of the layer that reads
  them take the same channels. The source's ``m`` is its output count over the count of the layer that
  feeds it, which must be known (see below); where it is not, the convolution must be depthwise
  (``m' = 1``) or have the source's shape. One with several inputs per group must match the source's.
* **Concatenations**: a layer that reads ``[A, B]`` takes, in each part, the first channels of the
  source's part (the first channels of ``[A, B]`` are not the first of each); the parts' sizes are the
  output counts of the layers that make them, in each network. A part that is a leading slice of unknown
  size (the input of a module fed by another module's forward) is what the other parts leave of the
  reading layer's input channels, in each network (that layer must be a convolution with one group or a
  BatchNorm, first in the reading child); two such parts are refused.

An ``nn.Sequential`` (that keeps its ``forward``) feeds each child the previous child's output; a module
without tensors (activations, pooling, resizing, dropout) keeps channels in place. A module with a forward
of its own declares its wiring: ``channel_flow`` maps a child to the sibling whose output it reads, or to a
tuple of siblings whose outputs it reads concatenated in that order (BiSeNetV2's stem and
gather-and-expand layers). In a tuple, ``"input"`` is the module's own input, the channels it was fed
(Fast-SCNN's pyramid pooling reads ``[pooled branches, input]``). A dotted name reaches into a child: as
a key, a descendant whose input the module's forward wires (U-Net's decoder convolutions, which read
``[deeper map, encoder skip]``: the skip is an argument of the decoder block's forward, so the module that
passes it declares it); as a part, a descendant's output, planned before its reader. An undeclared child
reads the module's inputs, which must be leading slices, and an output that no sibling reads leaves the
module, so it must be a leading slice too. ``trailing_children`` maps an ``nn.Sequential`` child to ``n``:
its last ``n`` children follow a group of repeated blocks (BiSeNetV2's context embedding after its ``r``
gather-and-expand layers) and take the source's last ``n``, the blocks before them the source's first.
``concatenated_inputs`` names children that read a concatenation whose parts are not declared: their input
channels must match exactly (no family needs it now).

Knobs rule out the rest (:func:`knob_mismatch`): a module switched on in one network and off in the other
(the layers after a module that is not residual were trained on its output), and side exits unless the
shapes are the same (exits are placed by MAC share, so heads of other shapes tap other stages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InitialWeights:
    """Weights to start a training from, and what they are (for the log, the metrics and the trial record)."""

    state_dict: Mapping[str, torch.Tensor]
    source: str


# Channels on their way through the network: for each of the new network's channels the source channel it
# took, and how many the source has there; None: a leading slice of a source count that is not known here.
_Flow = tuple[torch.Tensor, int] | None


class _NotContained(Exception):
    pass


MODULE_INPUT = "input"  # in a channel_flow tuple: the module's own input (the flow it was fed)


def _parts(parts: str | tuple[str, ...]) -> tuple[str, ...]:
    return (parts,) if isinstance(parts, str) else tuple(parts)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _leading(flow: _Flow) -> bool:
    return flow is None or torch.equal(flow[0], torch.arange(len(flow[0])))


def _taken(flow: _Flow, channels: int, where: str) -> torch.Tensor:
    if flow is None:
        return torch.arange(channels)
    if len(flow[0]) != channels:
        raise RuntimeError(f"{where} reads {channels} channels, its declared inputs give {len(flow[0])} (channel_flow)")
    return flow[0]


class _Planner:
    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.shapes = shapes
        self.sources: dict[str, str] = {}  # module of the new network -> the source's module
        self.axes: dict[str, dict[int, torch.Tensor]] = {}  # tensor -> axis -> the source's indices it takes
        self.flows: dict[str, _Flow] = {}  # module of the new network -> the flow it gave
        self.fed: dict[str, Callable[[nn.Module, str, int], _Flow]] = {}  # module -> what it reads, declared above

    def shape(self, source: str, tensor: str) -> tuple[int, ...]:
        shape = self.shapes.get(_join(source, tensor))
        if shape is None:
            raise _NotContained
        return shape

    def walk(self, module: nn.Module, name: str, source: str, flow: _Flow, tail: int = 0) -> _Flow:
        """Plan ``module`` (the source's ``source``) fed ``flow``; returns the flow it gives."""
        if name in self.fed:  # declared by a module above it (a dotted channel_flow entry)
            flow = self.fed.pop(name)(module, source, tail)
        self.flows[name] = flow = self.plan(module, name, source, flow, tail)
        return flow

    def plan(self, module: nn.Module, name: str, source: str, flow: _Flow, tail: int) -> _Flow:
        self.sources[name] = source
        if not module.state_dict():
            return flow  # activations, pooling, resizing, dropout keep channels in place
        if isinstance(module, nn.Conv2d):
            return self.conv(module, name, source, flow)
        if isinstance(module, nn.BatchNorm2d):
            return self.batch_norm(module, name, source, flow)
        children = list(module.named_children())
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            shift = 0
            if tail:  # the trailing children take the source's last: count the source's children
                prefix = f"{source}." if source else ""
                have = [int(n[len(prefix):].split(".", 1)[0]) for n in self.shapes if n.startswith(prefix)]
                shift = max(have, default=-1) - max(int(n.split(".", 1)[0]) for n in module.state_dict())
            for position, (child_name, child) in enumerate(children):
                source_child = str(position + shift) if position >= len(children) - tail else child_name
                flow = self.walk(child, _join(name, child_name), _join(source, source_child), flow)
            return flow
        return self.module(module, name, source, flow, dict(children))

    def module(self, module: nn.Module, name: str, source: str, flow: _Flow, children: dict[str, nn.Module]) -> _Flow:
        """A module with a forward of its own: leading slices in and out, but for the wiring it declares."""
        if not _leading(flow):
            raise _NotContained  # its forward may route these channels anywhere
        reads = getattr(module, "channel_flow", {})
        tails = getattr(module, "trailing_children", {})
        if MODULE_INPUT in children:
            raise RuntimeError(f"{name}: a child named {MODULE_INPUT!r} (channel_flow reserves the name)")
        read = {part for parts in reads.values() for part in _parts(parts)}
        outputs: dict[str, _Flow] = {}

        def part(part: str) -> _Flow:  # the module's input, a child's output or (dotted) a child's descendant's
            if part == MODULE_INPUT:
                return flow
            if "." not in part:
                return output(part)
            if _join(name, part) not in self.flows:
                raise RuntimeError(f"{name} declares a read of {part}, not planned before its reader (channel_flow)")
            return self.flows[_join(name, part)]

        def inflow(parts: str | tuple[str, ...], reader: nn.Module, reader_source: str, tail: int) -> _Flow:
            if isinstance(parts, str):
                return part(parts)
            return self.concatenation([part(p) for p in parts], reader, reader_source, tail)

        def output(child: str) -> _Flow:
            if child not in outputs:
                for key, parts in reads.items():  # what a reader in this child reads of other children: plan it first
                    if key.split(".", 1)[0] == child:
                        for p in _parts(parts):
                            if p != MODULE_INPUT and p.split(".", 1)[0] != child:
                                output(p.split(".", 1)[0])
                        if "." in key:
                            self.fed[_join(name, key)] = (lambda reader, reader_source, tail, parts=parts:
                                                          inflow(parts, reader, reader_source, tail))
                parts = reads.get(child)
                tail = tails.get(child, 0)
                inputs = None if parts is None else inflow(parts, children[child], _join(source, child), tail)
                outputs[child] = self.walk(children[child], _join(name, child), _join(source, child), inputs, tail)
            return outputs[child]

        for child in children:
            if not _leading(output(child)) and child not in read:
                raise _NotContained  # channels that leave the module must be a leading slice
        return None

    def concatenation(self, flows: list[_Flow], reader: nn.Module, source: str, tail: int
                      ) -> tuple[torch.Tensor, int]:
        """Part ``k`` of the new network's concatenation takes the leading channels of the source's part ``k``.

        A part of unknown size in the source (None: a leading slice) is what the other parts leave of the
        input channels of the layer that reads the concatenation, in each network; two such parts are refused."""
        unknown = [k for k, flow in enumerate(flows) if flow is None]
        if unknown:
            if len(unknown) > 1 or tail:
                raise _NotContained
            wanted, have = self.reader_inputs(reader, source)
            known = [flow for flow in flows if flow is not None]
            size, count = wanted - sum(len(index) for index, _ in known), have - sum(count for _, count in known)
            if size < 1:
                raise RuntimeError(f"{source} reads {wanted} channels, its declared parts give more (channel_flow)")
            if count < size:
                raise _NotContained
            flows = [*flows[:unknown[0]], (torch.arange(size), count), *flows[unknown[0] + 1:]]
        offsets = [0]
        for _, count in flows[:-1]:
            offsets.append(offsets[-1] + count)
        return torch.cat([index + offset for (index, _), offset in zip(flows, offsets)]), offsets[-1] + flows[-1][1]

    def reader_inputs(self, reader: nn.Module, source: str) -> tuple[int, int]:
        """The new network's and the source's input channels of the first layer of ``reader`` (the source's
        ``source``): a convolution with one group or a BatchNorm, through nn.Sequential and layers without tensors."""
        while isinstance(reader, nn.Sequential) and type(reader).forward is nn.Sequential.forward:
            first = next(((n, child) for n, child in reader.named_children() if child.state_dict()), None)
            if first is None:
                raise _NotContained
            source, reader = _join(source, first[0]), first[1]
        if isinstance(reader, nn.Conv2d) and reader.groups == 1:
            return reader.in_channels, self.shape(source, "weight")[1]
        if isinstance(reader, nn.BatchNorm2d):
            tensor = "running_mean" if reader.track_running_stats else "weight"
            return reader.num_features, self.shape(source, tensor)[0]
        raise _NotContained

    def conv(self, conv: nn.Conv2d, name: str, source: str, flow: _Flow) -> _Flow:
        have = self.shape(source, "weight")
        out, per_group = conv.weight.shape[:2]
        # One input per group in both; a one-channel layer has one group here but is the source's depthwise layer
        # when the source feeds it several channels (a = 1/32).
        one_per_group = per_group == 1 and have[1] == 1 and (conv.groups > 1 or (flow is not None and flow[1] > 1))
        if conv.groups == 1 and not one_per_group:
            if flow is not None and flow[1] != have[1]:
                raise _NotContained
            inputs, outputs = _taken(flow, per_group, name), torch.arange(out)
        elif one_per_group:  # output j = g*m + k reads input g
            m = out // conv.groups
            if flow is None:  # the source's input count is not known: its outputs per group neither, unless depthwise
                if m > 1:
                    raise _NotContained
                groups, source_m = torch.arange(conv.groups), m
            else:
                groups, count = _taken(flow, conv.groups, name), flow[1]
                if have[0] % count:
                    raise _NotContained
                source_m = have[0] // count
            if m > source_m:
                raise _NotContained
            inputs, outputs = torch.arange(1), (groups[:, None] * source_m + torch.arange(m)).flatten()
        else:  # several inputs per group: only the source's tensor keeps the wiring
            if have != tuple(conv.weight.shape) or not _leading(flow):
                raise _NotContained
            inputs, outputs = torch.arange(per_group), torch.arange(out)
        self.axes[_join(name, "weight")] = {0: outputs, 1: inputs}
        self.axes[_join(name, "bias")] = {0: outputs}
        return outputs, have[0]

    def batch_norm(self, norm: nn.BatchNorm2d, name: str, source: str, flow: _Flow) -> _Flow:
        have = self.shape(source, "running_mean" if norm.track_running_stats else "weight")
        if flow is not None and flow[1] != have[0]:
            raise _NotContained
        channels = _taken(flow, norm.num_features, name)
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            self.axes[_join(name, tensor)] = {0: channels}
        return channels, have[0]


def _exact_input_prefixes(model: nn.Module) -> tuple[str, ...]:
    prefixes = []
    for name, module in model.named_modules():
        for child in getattr(module, "concatenated_inputs", ()):
            prefixes.append(f"{name}.{child}." if name else f"{child}.")
    return tuple(prefixes)


def inheritance_plan(source_shapes: Mapping[str, tuple[int, ...]], target: nn.Module
                     ) -> dict[str, tuple[str, tuple[torch.Tensor, ...]]] | None:
    """For each of ``target``'s tensors, the source's tensor it takes and the indices it takes along each axis
    (see the module's text); None where a network with these tensor shapes does not contain ``target``."""
    planner = _Planner(source_shapes)
    try:
        planner.walk(target, "", "", None)
    except (_NotContained, IndexError, ValueError):  # IndexError, ValueError: tensors of another layout than the target's
        return None
    if planner.fed:
        raise RuntimeError(f"channel_flow declares what {', '.join(planner.fed)} read, which the plan never reaches")
    exact, plan = _exact_input_prefixes(target), {}
    for name, tensor in target.state_dict().items():
        module, _, leaf = name.rpartition(".")
        source = _join(planner.sources[module], leaf)
        shape = source_shapes.get(source)
        if shape is None or len(shape) != tensor.dim():
            return None
        axes = planner.axes.get(name, {})
        index = tuple(axes.get(axis, torch.arange(size)) for axis, size in enumerate(tensor.shape))
        if any(len(taken) and int(taken.max()) >= have for taken, have in zip(index, shape)):
            return None
        if tensor.dim() >= 2 and exact and name.startswith(exact) and shape[1] != tensor.shape[1]:
            return None
        plan[name] = (source, index)
    return plan


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
    """Whether a network with these tensor shapes contains ``target`` (see the module's text)."""
    return inheritance_plan(source_shapes, target) is not None


def state_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return state_shapes(model.state_dict())


def inherit(target: nn.Module, source_state: Mapping[str, torch.Tensor]) -> int:
    """Load into ``target`` the slice of ``source_state`` that :func:`inheritance_plan` gives; returns how many
    tensors were sliced (0: the same shape). Raises ``ValueError`` if the source does not contain ``target``."""
    plan = inheritance_plan(state_shapes(source_state), target)
    if plan is None:
        raise ValueError("the source network does not contain the target network (narrower, shallower or another family)")
    loaded, sliced = {}, 0
    for name, tensor in target.state_dict().items():
        source_name, index = plan[name]
        source = source_state[source_name]
        sliced += tuple(source.shape) != tuple(tensor.shape)
        for axis, taken in enumerate(index):
            source = source.index_select(axis, taken.to(source.device))
        loaded[name] = source.detach().clone().to(dtype=tensor.dtype)
    target.load_state_dict(loaded)
    return sliced
