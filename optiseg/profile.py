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
        if isinstance(module, nn.Conv2d):
            kernel_h, kernel_w = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kernel_h * kernel_w
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

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

