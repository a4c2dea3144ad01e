"""The whole study file: one YAML drives a search."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, create_model, field_validator, model_validator

from .._paths import path_kind, shown
from ..secrets import has_password
from ._base import ConfigPath, Section
from .confirm import ConfirmConfig
from .data import DataConfig
from .device import DeviceConfig
from .fidelity import FidelityConfig
from .latency import LatencyConfig
from .link import LinkConfig
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


class _ConstraintsBase(Section):
    max_latency_ms: PositiveFloat | None = None
    min_iou: float | None = Field(None, ge=0.0, le=1.0)

    def items(self) -> list[tuple[str, float | None]]:
        """``(max_<metric> | min_<metric>, bound)`` for every constraint key, set or not."""
        return [(name, getattr(self, name)) for name in type(self).model_fields]


def _constraint_fields() -> dict[str, Any]:
    """``max_<metric>`` for every metric to minimize, ``min_<metric>`` for every one to maximize (see optiseg.plans.METRICS)."""
    from ..plans._evaluation import METRICS

    fields: dict[str, Any] = {}
    for metric in METRICS.values():
        key = f"{'max' if metric.direction == 'minimize' else 'min'}_{metric.name}"
        if key not in _ConstraintsBase.model_fields:
            fields[key] = (float | None, Field(None, description=metric.description))
    return fields


Constraints = create_model("Constraints", __base__=_ConstraintsBase, **_constraint_fields())
Constraints.__doc__ = "Bounds on any recorded metric: max_<metric> for metrics to minimize, min_<metric> for the others."


class Quantization(Section):
    """INT8 static post-training quantization (the `int8` deployment mode)."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_images: PositiveInt = 100
    per_channel: bool = True
    activations: Literal["int8", "uint8"] = "int8"
    symmetric_activations: bool = False
    percentile: float = Field(99.999, gt=90.0, lt=100.0)
    exclude_ops: tuple[str, ...] = ()


class Budget(Section):
    n_trials: PositiveInt | None = 20
    timeout: float | None = Field(None, description="seconds, or a duration such as 30m or 2h")
    train_compute: PositiveFloat | None = Field(
        None, description="training compute, in MACs (epochs x training images x MACs per image, summed over networks)")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if self.n_trials is None and self.timeout is None and self.train_compute is None:
            raise ValueError("give n_trials, timeout or train_compute (or several), or the search never ends")
        return self


class StudyConfig(Section):
    study: str | None = Field(None, description="study name; default: the config file's name")
    model: str = "fastscnn"
    effort: Literal["beginner", "intermediate", "expert"] = "beginner"
    resolution: Any = Field(None, description="the user's resolution: the baseline's input size")
    search_space: dict[str, list[Any]] = Field(default_factory=dict)
    objectives: list[str] = Field(default_factory=lambda: ["iou", "latency_ms"],
                                  description="metrics the front is made of, each with its direction")
    constraints: Constraints = Constraints()
    quantization: Quantization = Quantization()
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    device: DeviceConfig = DeviceConfig()
    mode: list[str] = Field(default_factory=lambda: ["device"],
                            description="deployment modes whose plans the front holds: device, split, ...")
    server: DeviceConfig | None = Field(None, description="where the server's part of a plan runs (split, cascade)")
    link: LinkConfig | None = Field(None, description="the network between device and server")
    latency: LatencyConfig = LatencyConfig()
    fidelity: FidelityConfig | None = Field(None, description="successive halving over epochs; off when absent")
    budget: Budget = Budget()
    confirm: ConfirmConfig = ConfirmConfig()
    storage: str | None = None
    sampler: Literal["auto", "tpe", "gp", "nsga2", "random", "grid"] = "auto"
    seed: int = 0
    output: ConfigPath = Field(default="runs", validate_default=True)
    warm_start: ConfigPath | None = Field(
        None, description="a lower-tier study (folder or config) whose evaluated candidates this study starts with"
    )
    inherit_weights: bool = Field(
        False, description="start each new network from the weights of a trained network of the study that contains "
                           "it (the same shape at another resolution, or a wider/deeper one, width-sliced)"
    )

    @field_validator("study")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
            raise ValueError(
                "not a study name: the study folder is <output>/<study>, so use 1 to 100 letters, digits, "
                "'.', '_' and '-', starting with a letter or digit (no '/', no '..')"
            )
        return value

    @field_validator("fidelity", mode="before")
    @classmethod
    def _fidelity_switch(cls, value: Any) -> Any:
        """``fidelity: true`` stands for the defaults; ``false`` for none."""
        return ({} if value else None) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fidelity_needs_validation_scores(self) -> "StudyConfig":
        if self.fidelity is not None:
            from ..plans._evaluation import METRICS

            late = [m for m in self.objectives if not METRICS[m].cost and m not in ("iou", "miou")]
            if late:
                raise ValueError(f"fidelity: a briefly trained network is judged on its validation IoU, which stands for "
                                 f"iou and miou only; the objective(s) {', '.join(late)} need a whole training: remove "
                                 "fidelity: or those objectives")
        return self

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_switch(cls, value: Any) -> Any:
        """``confirm: false`` (or ``true``) stands for ``confirm: {enabled: false}``."""
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("storage")
    @classmethod
    def _no_literal_password(cls, value: str | None) -> str | None:
        if value is not None and has_password(value):
            raise ValueError(
                "holds a password in the config; write ${VAR} and export VAR (e.g. "
                "postgresql://optiseg:${OPTISEG_DB_PASSWORD}@db/optiseg), or use PGPASSWORD / ~/.pgpass for PostgreSQL"
            )
        return value

    @field_validator("warm_start")
    @classmethod
    def _warm_start_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Only a search reads it; a finished study whose warm start was deleted since still opens.
        if value is None or not (info.context or {}).get("for_search"):
            return value
        kind = path_kind(value)
        if kind not in ("is a folder", "is a file"):
            raise ValueError(
                f"{shown(str(value))} {kind}; give the lower-tier study's folder (e.g. runs/conveyor-beginner) "
                "or its config file, or remove warm_start"
            )
        return value

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: list[str]) -> list[str]:
        from ..errors import did_you_mean
        from ..plans._evaluation import METRICS

        if not value:
            raise ValueError("give at least one metric, e.g. [iou, latency_ms]")
        for name in value:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}{did_you_mean(name, METRICS)}; metrics: {', '.join(METRICS)}")
        if len(set(value)) != len(value):
            raise ValueError("each metric may appear once")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_list(cls, value: Any) -> Any:
        """``mode: split`` stands for ``mode: [split]``."""
        return [value] if isinstance(value, str) else value

    @field_validator("mode")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        from ..errors import did_you_mean
        from ..modes import placement_modes

        known = placement_modes()
        if not value:
            raise ValueError(f"give at least one mode, e.g. [device]; modes: {', '.join(known)}")
        for name in value:
            if name not in known:
                raise ValueError(f"unknown mode {name!r}{did_you_mean(name, known)}; modes: {', '.join(known)}")
        if len(set(value)) != len(value):
            raise ValueError("each mode may appear once")
        from ..modes import is_derived

        if all(is_derived(name) for name in value):
            raise ValueError(f"mode {', '.join(value)} pairs networks the search trains: list a mode that trains them too, "
                             f"e.g. [device, {value[0]}]")
        return value

    @model_validator(mode="after")
    def _server_for_remote_modes(self) -> "StudyConfig":
        from ..modes import modes_of_family

        remote = [name for name in self.mode if any(mode.needs_server for mode in modes_of_family(name))]
        missing = [key for key, value in (("server", self.server), ("link", self.link)) if value is None]
        if remote and missing:
            raise ValueError(
                f"mode {', '.join(remote)} runs a part on a server: add {' and '.join(f'{k}:' for k in missing)} "
                "(e.g. server: {kind: local} and link: {uplink_mbps: 100, rtt_ms: 2}; "
                "`optiseg device link-test HOST --write CONFIG` measures a link)"
            )
        return self

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from ..models import list_models
        from ..errors import did_you_mean

        if value not in list_models():
            raise ValueError(f"unknown model {value!r}{did_you_mean(value, list_models())}; available: {', '.join(list_models())}")
        return value
