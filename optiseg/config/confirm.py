"""The ``confirm:`` section: confirmation rounds at the end of a search (README, "Confirmation rounds")."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ._base import Section


class ConfirmConfig(Section):
    """Measure the front again, interleaved, when a search ends (``optiseg confirm STUDY`` does it on demand).

    * ``enabled``: on by default; ``confirm: false`` turns it off.
    * ``rounds``: rounds ``A B C A B C ...`` over the front and the plans within noise of it (at least 3).
    * ``budget_s``: device seconds the rounds may take (seconds, or a duration such as ``2m``); the first 3
      rounds of as many plans as fit, then more rounds while one more fits.
    * ``margin``: a plan off the front is confirmed too if it is at most this fraction slower than the front
      at its IoU (or 3 x its median's measured spread, if larger).
    """

    enabled: bool = True
    rounds: int = Field(5, ge=3, le=100)
    budget_s: float = Field(120.0, gt=0.0, description="device seconds, or a duration such as 2m")
    margin: float = Field(0.10, ge=0.0, le=1.0)

    @field_validator("budget_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            from .study import parse_duration

            return parse_duration(value)
        return value
