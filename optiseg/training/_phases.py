"""The phases of a training run: what is trained, on which outputs' losses, at which learning rates.

A network without exits has one phase, the thesis's protocol. A network with
side exits (knob ``exits``) is trained as ``training.exits.schedule`` says:

* ``joint``: one phase of ``training.epochs``; every output's loss, weighted;
* ``two_stage``: phase ``backbone`` (``training.epochs``: the final output's
  loss only, the exit heads untouched), then phase ``branches``
  (``exits.branch_epochs`` more, from the best backbone epoch): the exit heads
  at ``branch_lr``, the backbone frozen or at ``backbone_lr``.

Each phase has its own Adam optimizer and polynomial decay, and chooses its
best epoch on its own selection weights (the last phase's best is the run's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..config import TrainingConfig
from ..models._exits import exit_head_modules


@dataclass(frozen=True)
class Phase:
    """One phase: ``epochs`` long; ``loss_weights`` per output (exits, then final; 0 = not computed).

    ``heads_lr`` is the initial learning rate of the exit heads (of every
    parameter outside the ``branches`` phase), ``backbone_lr`` that of the rest
    in the ``branches`` phase (0 = frozen).
    """

    name: str
    epochs: int
    loss_weights: tuple[float, ...]
    heads_lr: float
    backbone_lr: float

    @property
    def frozen_backbone(self) -> bool:
        return self.backbone_lr == 0.0

    def trained_outputs(self, outputs: Sequence[str]) -> tuple[str, ...]:
        """The outputs whose loss is computed in this phase."""
        return tuple(name for name, weight in zip(outputs, self.loss_weights) if weight > 0)


def plan_phases(training: TrainingConfig, exits: int) -> tuple[Phase, ...]:
    """The phases of a run of a network with ``exits`` side exits."""
    lr = training.lr
    if exits == 0:
        return (Phase("train", training.epochs, (1.0,), lr, lr),)
    settings = training.exits
    weights = settings.loss_weights(exits)
    if settings.schedule == "joint":
        return (Phase("joint", training.epochs, weights, lr, lr),)
    branch_lr = settings.branch_lr if settings.branch_lr is not None else lr
    # With the backbone frozen, the final output cannot change: its loss is not computed.
    branch_weights = (*weights[:-1], weights[-1] if settings.backbone_lr > 0 else 0.0)
    if not any(branch_weights):
        from ..errors import UsageError

        raise UsageError(
            f"training.exits.weights = {list(weights)} gives the exit heads no loss to learn from in the second stage of two_stage",
            hint="give at least one exit a weight > 0",
        )
    return (
        Phase("backbone", training.epochs, (0.0,) * exits + (1.0,), lr, lr),
        Phase("branches", settings.branch_epochs, branch_weights, branch_lr, settings.backbone_lr),
    )


def parameter_groups(model: nn.Module, phase: Phase) -> list[dict]:
    """Adam's parameter groups for ``phase``: every parameter at one rate, or the exit heads and the backbone apart.

    Without a separate rate (one phase, or the ``backbone`` phase) the order and
    grouping are those of ``model.parameters()``, as before exits existed.
    """
    if phase.name != "branches":
        return [{"params": list(model.parameters()), "lr": phase.heads_lr}]
    heads = exit_head_parameters(model)
    head_ids = {id(p) for p in heads}
    groups = [{"params": heads, "lr": phase.heads_lr}]
    if not phase.frozen_backbone:
        groups.append({"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": phase.backbone_lr})
    return groups


def exit_head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every exit head of ``model`` (the modules of its exits' stages)."""
    return [p for module in exit_head_modules(model.stages()) for p in module.parameters()]


def selection_weights(phase: Phase, configured: Sequence[float]) -> tuple[float, ...]:
    """How the outputs' validation figures are weighted to pick a phase's best epoch.

    The backbone phase and a run without exits look at the final output only;
    other phases weigh every output as its loss is weighted in training
    (``configured``: the ``exits + 1`` weights of ``training.exits``).
    """
    if phase.name in ("train", "backbone"):
        return (0.0,) * (len(configured) - 1) + (1.0,)
    return tuple(configured)

