"""Search spaces: which knobs a study searches, with which choices, at which effort tier.

The knob definitions live in ``search_spaces/<model>.yaml`` (shipped in the
package). An effort tier opens every knob of its tier and the tiers below;
the study config's ``search_space:`` can narrow or widen any knob's choices,
fix a knob (one choice) or open a knob above the tier. Knobs that are not
open keep the baseline value: the model's default, the user's resolution and
RGB input.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from ..config import EFFORTS
from ..errors import ConfigError, UsageError, did_you_mean
from ..models import format_resolution, get_model_entry, parse_resolution
from ..network import Network
from ..plans import DEFAULT_DEPLOYMENT, DEPLOYMENT_KNOBS, DeploymentPlan

INPUT_KNOBS = ("resolution", "in_channels")
KnobValue = int | float | bool | str


@dataclass(frozen=True)
class SearchSpace:
    """The open knobs (name -> choices) and the values of the others (the baseline's)."""

    model: str
    effort: str
    choices: dict[str, tuple[KnobValue, ...]]
    baseline: dict[str, KnobValue]
    tiers: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of distinct plans (networks x deployment-knob combinations)."""
        total = 1
        for values in self.choices.values():
            total *= len(values)
        return total

    @property
    def deployment_knobs(self) -> tuple[str, ...]:
        """The open knobs that only change how a trained network is deployed (never cost a training)."""
        return tuple(name for name in self.choices if name in DEPLOYMENT_KNOBS)

    @property
    def network_count(self) -> int:
        """Number of distinct networks (what trainings are counted in)."""
        total = 1
        for name, values in self.choices.items():
            if name not in DEPLOYMENT_KNOBS:
                total *= len(values)
        return total

    def baseline_params(self) -> dict[str, KnobValue]:
        """The Optuna params of the baseline candidate (the reference point, evaluated first)."""
        return {name: self.baseline[name] for name in self.choices}

    def network(self, params: Mapping[str, KnobValue], num_classes: int = 1) -> Network:
        """The network that Optuna ``params`` (values of the open knobs) describe."""
        values = {**self.baseline, **params}
        entry = get_model_entry(self.model)
        return Network.create(
            self.model, {k: values[k] for k in entry.knob_names}, values["resolution"],
            in_channels=int(values["in_channels"]), num_classes=num_classes,
        )

    def deployment(self, params: Mapping[str, KnobValue]) -> dict[str, KnobValue]:
        """The deployment-knob values of ``params`` (baseline values for the knobs not open)."""
        values = {**self.baseline, **params}
        return {name: values[name] for name in DEPLOYMENT_KNOBS if name in values}

    def plan(self, params: Mapping[str, KnobValue], num_classes: int = 1) -> DeploymentPlan:
        """The deployment plan that Optuna ``params`` describe: its network, and the mode its deployment knobs select."""
        from ..modes import mode_for

        knobs = self.deployment(params)
        return mode_for(knobs).plan(self.network(params, num_classes), knobs)

    def suggest(self, trial, num_classes: int = 1) -> DeploymentPlan:
        """Ask an Optuna trial for a value of every open knob."""
        params = {name: trial.suggest_categorical(name, list(values)) for name, values in self.choices.items()}
        return self.plan(params, num_classes)

    def sibling_params(self, params: Mapping[str, KnobValue]) -> list[dict[str, KnobValue]]:
        """The params of every other plan of the same network: each other combination of the deployment knobs."""
        combos = [dict(zip(self.deployment_knobs, values))
                  for values in itertools.product(*(self.choices[name] for name in self.deployment_knobs))]
        own = {name: params.get(name) for name in self.deployment_knobs}
        return [{**params, **combo} for combo in combos if combo != own]

    def fingerprint(self) -> str:
        payload = json.dumps({"model": self.model, "choices": self.choices, "baseline": self.baseline}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "effort": self.effort,
            "choices": {k: list(v) for k, v in self.choices.items()},
            "baseline": self.baseline,
            "size": self.size,
        }


def load_knob_definitions(model: str) -> dict[str, dict[str, Any]]:
    """The knob table of ``search_spaces/<model>.yaml``."""
    try:
        text = resources.files("optiseg._search_spaces").joinpath(f"{model}.yaml").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no search space is defined for model {model!r} (search_spaces/{model}.yaml is missing)") from None
    return yaml.safe_load(text)["knobs"]


def build_search_space(
    model: str,
    effort: str,
    overrides: Mapping[str, list[Any]] | None = None,
    resolution: Any = None,
    source: str = "config",
) -> SearchSpace:
    """The search space of ``model`` at ``effort``, with the config's overrides applied.

    ``resolution`` is the user's resolution, the baseline's input size; by
    default the largest resolution choice up to 512. Errors name the
    ``search_space.<knob>`` key, the bad value and what is valid.
    """
    if effort not in EFFORTS:
        raise ConfigError(f"{source}: effort = {effort!r}: choose one of {', '.join(EFFORTS)}")
    definitions = load_knob_definitions(model)
    entry = get_model_entry(model)
    specs = {k.name: k for k in entry.knobs}
    open_tiers = set(EFFORTS[: EFFORTS.index(effort) + 1])
    overrides = dict(overrides or {})

    unknown = [name for name in overrides if name not in definitions]
    if unknown:
        name = unknown[0]
        raise ConfigError(
            f"{source}: unknown knob 'search_space.{name}' for {model}{did_you_mean(name, definitions)}; "
            f"searchable knobs: {', '.join(definitions)}"
        )

    def check(name: str, value: Any, key: str | None = None) -> KnobValue:
        where = f"{source}: {key or f'search_space.{name}'} = {value!r}"
        try:
            if name == "resolution":
                size = parse_resolution(value)
                return size[0] if size[0] == size[1] else format_resolution(size)
            if name == "in_channels":
                if value not in (1, 3) or isinstance(value, bool):
                    raise UsageError("in_channels must be 3 (RGB) or 1 (luma)")
                return int(value)
            if name in DEPLOYMENT_KNOBS:
                if value not in DEPLOYMENT_KNOBS[name]:
                    raise UsageError(f"{name} must be one of {', '.join(DEPLOYMENT_KNOBS[name])}")
                return value
            coerced = specs[name].coerce(value)
            return int(coerced) if isinstance(coerced, bool) else coerced
        except UsageError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None

    baseline: dict[str, KnobValue] = {name: (int(v) if isinstance(v, bool) else v) for name, v in entry.defaults().items()}
    baseline["in_channels"] = 3
    baseline.update(DEFAULT_DEPLOYMENT)
    baseline["resolution"] = check("resolution", resolution, key="resolution") if resolution is not None else None

    choices: dict[str, tuple[KnobValue, ...]] = {}
    tiers: dict[str, str] = {}
    for name, definition in definitions.items():
        tiers[name] = definition["tier"]
        if name in overrides:
            values = overrides[name]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: search_space.{name} must be a non-empty list of choices, e.g. {definition['choices']}")
            checked = tuple(dict.fromkeys(check(name, v) for v in values))
        elif definition["tier"] in open_tiers:
            checked = tuple(check(name, v) for v in definition["choices"])
        else:
            continue
        if len(checked) == 1:
            baseline[name] = checked[0]
        else:
            choices[name] = checked

    if baseline["resolution"] is None:
        sides = [v for v in choices.get("resolution", ()) if isinstance(v, int) and v <= 512]
        baseline["resolution"] = max(sides) if sides else check("resolution", 512)
    for name, values in choices.items():
        if baseline[name] not in values:
            # The baseline is always evaluated; a choice list that lacks its value gains it.
            choices[name] = (baseline[name], *values)
    return SearchSpace(model=model, effort=effort, choices=choices, baseline=baseline, tiers=tiers)

