"""Static cost of a network: parameters, multiply-accumulates and activation memory.

What is counted (one image, batch size 1):

* ``params``: every trainable parameter (conv weights and biases, BatchNorm
  scale and shift). BatchNorm running statistics are buffers, not parameters.
* ``macs``: multiply-accumulates of every convolution,
  ``output elements x (input channels / groups) x kernel height x kernel width``,
  and of every linear layer. Bias additions, BatchNorm (folded into the
  convolutions on export), activations, pooling (however it is computed),
  resizing and additions are not multiply-accumulates and are not counted.
* ``activation_mb``: the sum of the float32 tensors that the leaf modules of
  one forward pass allocate (in-place activations and identities allocate
  none), i.e. roughly what a training step keeps for the backward pass; the
  peak of an inference engine that frees tensors early is lower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BYTES_PER_FLOAT32 = 4
MB = 1024 * 1024


@dataclass(frozen=True)
class ModelProfile:
    params: int
    macs: int
    input_shape: tuple[int, int, int, int]
    input_mb: float
    activation_mb: float


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a leaf ``module`` that produced ``output`` (0 unless conv or linear)."""
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kernel_h * kernel_w
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@dataclass(frozen=True)
class StageProfile:
    """One forward pass through a stage list: MACs of each stage (by name) and the shape of every named tensor."""

    macs: dict[str, int]
    shapes: dict[str, tuple[int, ...]]


def profile_stages(stages, input_shape: tuple[int, ...]) -> StageProfile:
    """Run every stage (exits included) once at ``input_shape``, in eval mode, and count MACs and shapes.

    Nothing is computed: the tensors, weights included, live on PyTorch's
    ``meta`` device, which carries shapes only, so this takes milliseconds on
    any machine however loaded. MACs are counted as :func:`profile_model`
    counts them; ``stages`` is a model's ``stages()`` (see
    ``optiseg/models/_stages.py``). Every module's training flag is restored.
    """
    from torch.func import functional_call

    from .models import INPUT

    macs: dict[str, int] = {}
    current = [""]

    def on_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        macs[current[0]] += layer_macs(module, output)

    modules = {id(m): m for stage in stages for m in stage.module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    hooks = [m.register_forward_hook(on_output) for m in modules.values()]
    flags = [(m, m.training) for stage in stages for m in stage.module.modules()]
    env = {INPUT: torch.zeros(input_shape, device="meta")}
    size = tuple(input_shape[-2:])
    try:
        with torch.no_grad():
            for stage in stages:
                stage.module.eval()
                current[0] = stage.name
                macs[stage.name] = 0
                meta = {name: t.to("meta") for name, t in [*stage.module.named_parameters(), *stage.module.named_buffers()]}
                args = tuple(env[name] for name in stage.inputs)
                kwargs = {"size": size} if stage.needs_input_size else {}
                out = functional_call(stage.module, meta, args, kwargs)
                env.update(zip(stage.outputs, out if isinstance(out, tuple) else (out,)))
    finally:
        for hook in hooks:
            hook.remove()
        for module, was_training in flags:
            module.training = was_training
    return StageProfile(macs, {name: tuple(int(d) for d in t.shape) for name, t in env.items()})


def profile_model(model: nn.Module, input_shape: tuple[int, int, int, int]) -> ModelProfile:
    """Count parameters, MACs and activation memory of one forward pass at ``input_shape`` (N=1)."""
    if input_shape[0] != 1:
        raise ValueError(f"profile_model expects batch size 1, got input shape {input_shape}")
    macs = 0
    activation_elements = 0

    def on_leaf_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs, activation_elements
        if not (inputs and output.data_ptr() == inputs[0].data_ptr()):  # in-place ops and Identity allocate nothing
            activation_elements += output.numel()
        macs += layer_macs(module, output)

    hooks = [m.register_forward_hook(on_leaf_output) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    input_elements = 1
    for dim in input_shape:
        input_elements *= dim
    return ModelProfile(
        params=count_parameters(model),
        macs=int(macs),
        input_shape=tuple(input_shape),
        input_mb=input_elements * BYTES_PER_FLOAT32 / MB,
        activation_mb=activation_elements * BYTES_PER_FLOAT32 / MB,
    )

