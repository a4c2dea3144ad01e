"""The `training:` section: how each candidate is trained."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ._base import Section


class TrainingConfig(Section):
    epochs: PositiveInt = 30
    batch_size: int = Field(8, ge=2, description="BatchNorm needs at least two images per batch")
    lr: PositiveFloat = 1e-3
    lr_power: PositiveFloat = 0.9
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["auto", "bce", "ce", "bce+dice", "ce+dice"] = "auto"
    select_by: Literal["val_loss", "val_iou"] = "val_loss"
    patience: PositiveInt | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    seed: int = 0
