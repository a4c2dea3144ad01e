"""The whole study file: one YAML drives a search."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ._base import ConfigPath, Section
from .data import DataConfig
from .device import DeviceConfig
from .training import TrainingConfig

EFFORTS = ("beginner", "intermediate", "expert")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write seconds or e.g. 90s, 30m, 2h, 1d")
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class Constraints(Section):
    max_latency_ms: PositiveFloat | None = None
    min_iou: float | None = Field(None, ge=0.0, le=1.0)


class Budget(Section):
    n_trials: PositiveInt | None = 20
    timeout: float | None = Field(None, description="seconds, or a duration such as 30m or 2h")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials, timeout or both, or the search never ends")
        return self


class StudyConfig(Section):
    study: str | None = Field(None, description="study name; default: the config file's name")
    model: str = "fastscnn"
    effort: Literal["beginner", "intermediate", "expert"] = "beginner"
    resolution: Any = Field(None, description="the user's resolution: the baseline's input size")
    search_space: dict[str, list[Any]] = Field(default_factory=dict)
    constraints: Constraints = Constraints()
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    device: DeviceConfig = DeviceConfig()
    budget: Budget = Budget()
    storage: str | None = None
    sampler: Literal["auto", "tpe", "gp", "nsga2", "random", "grid"] = "auto"
    seed: int = 0
    output: ConfigPath = Field(default="runs", validate_default=True)
    warm_start: ConfigPath | None = Field(
        None, description="a lower-tier study (folder or config) whose evaluated candidates this study starts with"
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from ..models import list_models
        from ..errors import did_you_mean

        if value not in list_models():
            raise ValueError(f"unknown model {value!r}{did_you_mean(value, list_models())}; available: {', '.join(list_models())}")
        return value
