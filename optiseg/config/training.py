"""The `training:` section: how each candidate is trained.

The protocol is the thesis's (Adam, polynomial decay, BCE or cross-entropy,
best epoch on the validation loss). The defaults were measured on the
thesis's data set to reach its IoU (0.97 at 192x192) in 40 epochs on a
2-core CPU instead of 400 on a GPU: batches of 16 at a learning rate of 6e-3
(3e-3 x sqrt(batch / 4); shorter trainings take batches of 8 or 4 at 3e-3,
to keep their steps), a Dice term, masks twice as fine as the input
for the loss, and lighter augmentation (no crop; shift-scale-rotate with
p=0.3 and +-10 degrees). See README, "Training".
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_serializer

from ._base import Section


class AugmentConfig(Section):
    """Training augmentation (geometric steps at two scales, photometric ones by albumentations); validation and test
    images are only resized."""

    crop: Literal["none", "random", "scale"] = Field(
        "none",
        description="none: whole image; random: fixed-size crop of the image enlarged by crop_margin; "
        "scale: random-size crop (area min_scale..1) resized to the model's input",
    )
    crop_margin: float = Field(1.25, ge=1.0, le=2.0, description="random/scale crops start from the image resized to resolution x this")
    min_scale: float = Field(0.5, gt=0.0, le=1.0, description="scale crop: smallest crop, as a fraction of the enlarged image's area")
    affine: float = Field(0.3, ge=0.0, le=1.0, description="probability of a shift-scale-rotate")
    shift: float = Field(0.0625, ge=0.0, le=0.5, description="shift-scale-rotate: largest shift, as a fraction of the side")
    scale: float = Field(0.1, ge=0.0, le=0.9, description="shift-scale-rotate: largest zoom in or out (0.1 = +-10 %)")
    rotate: float = Field(10.0, ge=0.0, le=180.0, description="shift-scale-rotate: largest rotation in degrees")
    rgb_shift: int = Field(20, ge=0, le=255, description="largest shift of each colour channel (0..255 scale), p=0.5")
    brightness: float = Field(0.2, ge=0.0, le=1.0, description="largest brightness change (fraction), p=0.5")
    contrast: float = Field(0.2, ge=0.0, le=1.0, description="largest contrast change (fraction), p=0.5")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip (0 when left/right matters)")


class ExitTrainingConfig(Section):
    """How a network with side exits (knob ``exits`` >= 1) is trained; ignored for a network without.

    ``joint``: every output trained together on ``sum_k weights[k] x loss_k``
    for ``epochs`` epochs. ``two_stage`` (the early-exit study's way): the
    backbone and its final head alone for ``epochs`` epochs, then, from the
    best of them, the exit heads for ``branch_epochs`` more at ``branch_lr``
    with the backbone frozen (``backbone_lr: 0``: weights and BatchNorm
    statistics) or trained on at ``backbone_lr``. The loss of each output is
    the training loss (BCE or cross-entropy + Dice) on its logits.
    """

    schedule: Literal["joint", "two_stage"] = Field("joint", description="joint: all outputs at once; two_stage: backbone, then exit heads")
    weights: tuple[NonNegativeFloat, ...] | None = Field(
        None, description="loss weight of exit 1, ..., exit K and the final output (K + 1 numbers >= 0); default: 1 each"
    )
    branch_epochs: PositiveInt = Field(10, description="two_stage: epochs of the second stage (the exit heads)")
    branch_lr: PositiveFloat | None = Field(None, description="two_stage: initial learning rate of the exit heads; default: training.lr")
    backbone_lr: float = Field(
        0.0, ge=0, description="two_stage: learning rate of the backbone in the second stage; 0 = frozen (the study: branch_lr / 100)"
    )

    def loss_weights(self, exits: int) -> tuple[float, ...]:
        """The ``exits + 1`` loss weights (exits, then the final output); :class:`~optiseg.errors.UsageError` if ``weights`` has another length."""
        if self.weights is None:
            return (1.0,) * (exits + 1)
        if len(self.weights) != exits + 1 or not any(self.weights):
            from ..errors import UsageError

            raise UsageError(
                f"training.exits.weights = {list(self.weights)} is invalid for a network with {exits} exit(s): "
                f"give {exits + 1} numbers, not all 0 (exit 1, ..., exit {exits}, final output)",
                hint=f"e.g. weights: [{', '.join(['0.5'] * exits + ['1'])}], or leave it out for 1 each",
            )
        return tuple(float(w) for w in self.weights)


# Training settings that say how a network is trained, not what: a run resumes across a change of them, and a
# study's settings hash leaves them out.
HOW_NOT_WHAT = ("device", "amp", "fused_optimizer")


DEFAULT_BATCHES = (16, 8, 4)  # the largest that leaves a training its steps (below)
# A default batch leaves a training about this many steps or more (epochs x images / batch; 720 when the last,
# incomplete batch of each epoch is dropped): those of the 40-epoch training on the thesis's 300 images at
# batches of 16 (test IoU 0.971). Fewer, larger steps cost quality in short trainings: at 10
# epochs, batches of 16 took the search's hypervolume below the grid's, where batches of 4 beat it.
MIN_DEFAULT_STEPS = 750
REFERENCE_LR, REFERENCE_BATCH_SIZE = 3e-3, 4  # the learning rate measured best at batches of 4


class TrainingConfig(Section):
    """How one candidate is trained and which epoch is kept."""

    epochs: PositiveInt = Field(40, description="passes over the training split")
    batch_size: int | None = Field(
        None, ge=2,
        description=f"images per step (BatchNorm needs at least 2; the incomplete last batch is dropped); null: "
        f"the largest of {', '.join(map(str, DEFAULT_BATCHES))} that leaves the training about {MIN_DEFAULT_STEPS} "
        f"steps or more (epochs x training images / batch), at most half the training images (at least 2)",
    )
    lr: PositiveFloat | None = Field(
        None, description=f"initial learning rate of Adam; null: {REFERENCE_LR:g} x sqrt(batch_size / {REFERENCE_BATCH_SIZE}) "
        f"(square-root scaling: {REFERENCE_LR * math.sqrt(DEFAULT_BATCHES[0] / REFERENCE_BATCH_SIZE):g} at {DEFAULT_BATCHES[0]})",
    )
    lr_power: PositiveFloat = Field(0.9, description="polynomial decay per step: lr * (1 - step/steps) ** lr_power")
    weight_decay: float = Field(0.0, ge=0, description="Adam's L2 weight decay")
    dice_weight: float = Field(
        1.0, ge=0, description="loss = BCE (binary) or cross-entropy (multi-class) + dice_weight x soft Dice loss"
    )
    label_scale: int = Field(
        2, ge=1, le=4,
        description="training masks at this multiple of the input size; the logits are upsampled (bilinear) to "
        "them for the loss, as they are for scoring, which teaches sub-pixel boundaries",
    )
    select_by: Literal["val_loss", "val_iou"] = Field("val_loss", description="which validation figure picks the best epoch")
    patience: PositiveInt | None = Field(
        None, description="stop after this many epochs without a better validation figure; null = never stop early"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    fused_optimizer: bool = Field(
        True, description="Adam's fused kernel (one pass over every parameter: the same update, faster); false: torch's loop over parameters"
    )
    seed: int = Field(0, description="seed of weights, shuffling and augmentation: same seed, same run")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="training augmentation")
    exits: ExitTrainingConfig = Field(default_factory=ExitTrainingConfig, description="networks with side exits: schedule and loss weights")

    def for_split(self, train_images: int) -> TrainingConfig:
        """These settings with the batch size and learning rate that a training on ``train_images`` images runs
        with (what ``null`` stands for; a value written in the config is kept)."""
        fits = self.epochs * train_images // MIN_DEFAULT_STEPS
        default = next((batch for batch in DEFAULT_BATCHES if batch <= fits), DEFAULT_BATCHES[-1])
        batch_size = self.batch_size or max(2, min(default, train_images // 2))
        lr = self.lr or REFERENCE_LR * math.sqrt(batch_size / REFERENCE_BATCH_SIZE)
        return self.model_copy(update={"batch_size": batch_size, "lr": lr})

    @model_serializer(mode="wrap")
    def _exits_only_when_set(self, handler: Any) -> dict[str, Any]:
        """``exits`` counts in a dump (a run's identity, a study's settings hash) only when it differs from the
        default, so the runs and studies made before it existed keep their identity."""
        dumped = handler(self)
        if isinstance(dumped, dict) and self.exits == ExitTrainingConfig():
            dumped.pop("exits", None)
        return dumped


def check_batch_size(training: TrainingConfig, train_images: int, source: str) -> None:
    """Refuse a batch larger than the training split, written or default (no step could run): a ConfigError
    naming ``source`` (the config file), before any trial is built, measured or trained."""
    from ..errors import ConfigError

    batch_size = training.for_split(train_images).batch_size
    if train_images >= batch_size:
        return
    if training.batch_size is None:
        raise ConfigError(
            f"{source}: the training split has only {train_images} image(s); a training step needs at least 2 (BatchNorm)",
            hint="add training images (or move some from the validation and test splits)",
        )
    raise ConfigError(
        f"{source}: training.batch_size = {batch_size}: the training split has only {train_images} "
        "image(s), so no batch can be filled",
        hint=f"set training.batch_size to at most {train_images} (and at least 2), or add training images",
    )
