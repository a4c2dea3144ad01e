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
    modes: tuple[str, ...] = ("device",)  # the mode families (a study's `mode:`); `mode` is a knob when several

    @property
    def size(self) -> int:
        """Number of distinct plans (networks x deployment-knob combinations; split cuts counted over the union
        of the networks' cut points, so an upper bound where networks differ in their cuts)."""
        per_network = 0
        for family in self.modes:
            combos = 1
            for name in family_knobs(family):
                combos *= len(self.choices.get(name, (None,)))
            per_network += combos
        return self.network_count * per_network

    @property
    def deployment_knobs(self) -> tuple[str, ...]:
        """The open knobs that only change how a trained network is deployed (never cost a training)."""
        return tuple(name for name in self.choices if is_deployment_knob(name))

    @property
    def network_knobs(self) -> tuple[str, ...]:
        """The open knobs that make a different network (each costs a training)."""
        return tuple(name for name in self.choices if not is_deployment_knob(name))

    @property
    def network_count(self) -> int:
        """Number of distinct networks (what trainings are counted in)."""
        total = 1
        for name in self.network_knobs:
            total *= len(self.choices[name])
        return total

    def baseline_params(self) -> dict[str, KnobValue]:
        """The Optuna params of the baseline candidate (the reference point, evaluated first)."""
        family = str(self.baseline.get("mode", self.modes[0]))
        return {name: self.baseline[name] for name in self.choices
                if not is_deployment_knob(name) or name == "mode" or name in family_knobs(family)}

    def network(self, params: Mapping[str, KnobValue], num_classes: int = 1) -> Network:
        """The network that Optuna ``params`` (values of the open knobs) describe."""
        values = {**self.baseline, **params}
        entry = get_model_entry(self.model)
        return Network.create(
            self.model, {k: values[k] for k in entry.knob_names if k in values}, values["resolution"],
            in_channels=int(values["in_channels"]), num_classes=num_classes,
        )

    def deployment(self, params: Mapping[str, KnobValue]) -> dict[str, KnobValue]:
        """The deployment knobs of ``params``: ``mode`` (the family) and that family's knobs (baseline values for
        the knobs not open)."""
        values = {**self.baseline, **params}
        family = str(values.get("mode", self.modes[0]))
        return {"mode": family, **{name: values[name] for name in family_knobs(family) if name in values}}

    def plan(self, params: Mapping[str, KnobValue], num_classes: int = 1) -> DeploymentPlan:
        """The deployment plan that Optuna ``params`` describe: its network, and the mode its deployment knobs select.

        Raises :class:`PlanNotApplicable` for deployment knobs this network does not have (a split cut after a
        module the network leaves out, e.g. ``pyramid_pooling`` with ``pp: 0``)."""
        from ..modes import mode_for

        knobs = self.deployment(params)
        network = self.network(params, num_classes)
        mode = mode_for(knobs)
        own = mode.knob_values(network)
        if own is None:
            raise PlanNotApplicable(f"{network.describe()} cannot be deployed by mode {mode.name} ({mode.description})")
        for name, value in knobs.items():
            if name != "mode" and own.get(name) and value not in own[name]:
                raise PlanNotApplicable(f"{network.describe()} has no {name} {value!r} ({name}: {', '.join(map(str, own[name]))})")
        return mode.plan(network, {k: v for k, v in knobs.items() if k != "mode"})

    def suggest(self, trial, num_classes: int = 1) -> DeploymentPlan:
        """Ask an Optuna trial for a value of every open network knob, then the mode, then that mode's knobs."""
        params = {name: trial.suggest_categorical(name, list(self.choices[name])) for name in self.network_knobs}
        family = trial.suggest_categorical("mode", list(self.choices["mode"])) if "mode" in self.choices else self.modes[0]
        params.update({"mode": family} if "mode" in self.choices else {})
        for name in self._open_knobs_of(family):
            params[name] = trial.suggest_categorical(name, list(self.choices[name]))
        return self.plan(params, num_classes)

    def _open_knobs_of(self, family: str) -> list[str]:
        """The deployment knobs of mode family ``family`` that this space opens."""
        return [name for name in family_knobs(family) if name in self.choices]

    def as_asked(self, params: Mapping[str, KnobValue]) -> tuple[dict[str, KnobValue], dict[str, Any]]:
        """``params`` (a value of every open knob) as :meth:`suggest` would have asked them (the network knobs, the
        mode, that mode's knobs) and their distributions: what a trial made elsewhere is stored with."""
        from optuna.distributions import CategoricalDistribution

        family = str(params.get("mode", self.baseline.get("mode", self.modes[0])))
        names = [*self.network_knobs, *(["mode"] if "mode" in self.choices else []), *self._open_knobs_of(family)]
        return ({name: params[name] for name in names},
                {name: CategoricalDistribution(list(self.choices[name])) for name in names})

    def deployment_params(self, network: Network) -> list[dict[str, KnobValue]]:
        """The deployment part of the params of every plan of ``network``, family by family (its own cuts only)."""
        from ..modes import modes_of_family

        combos = []
        for family in self.modes:
            names = [name for name in family_knobs(family) if name in self.choices]
            own: dict[str, set] = {}
            applicable = [m for m in modes_of_family(family) if m.knob_values(network) is not None]
            if not applicable:
                continue  # e.g. early exits for a network without exits
            for mode in applicable:
                for name, values in mode.knob_values(network).items():
                    own.setdefault(name, set()).update(values)
            choices = [tuple(v for v in self.choices[name] if v in own.get(name, ())) for name in names]
            for values in itertools.product(*choices):
                combos.append({**({"mode": family} if "mode" in self.choices else {}), **dict(zip(names, values))})
        return combos

    def sibling_params(self, params: Mapping[str, KnobValue]) -> list[dict[str, KnobValue]]:
        """The params of every other plan of the same network: each other combination of the deployment knobs."""
        network_part = {name: value for name, value in params.items() if not is_deployment_knob(name)}
        own = {name: value for name, value in params.items() if is_deployment_knob(name)}
        return [{**network_part, **combo} for combo in self.deployment_params(self.network(network_part)) if combo != own]

    def all_params(self):
        """The params of every plan of the space, the baseline first (what ``sampler: grid`` queues)."""
        baseline = self.baseline_params()
        yield baseline
        names = list(self.network_knobs)
        for values in itertools.product(*(self.choices[n] for n in names)):
            network_part = dict(zip(names, values))
            for combo in self.deployment_params(self.network(network_part)):
                params = {**network_part, **combo}
                if params != baseline:
                    yield params

    def fingerprint(self) -> str:
        payload = {"model": self.model, "choices": self.choices, "baseline": self.baseline}
        if self.modes != ("device",):  # studies made before modes existed keep their fingerprint
            payload["modes"] = self.modes
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "effort": self.effort,
            "choices": {k: list(v) for k, v in self.choices.items()},
            "baseline": self.baseline,
            "size": self.size,
            **({"modes": list(self.modes)} if self.modes != ("device",) else {}),
        }


class PlanNotApplicable(UsageError):
    """The sampler's deployment knobs name something this network does not have (e.g. a cut after a module it leaves out)."""


def is_deployment_knob(name: str) -> bool:
    """Whether a knob only changes how a trained network is deployed (``mode`` and every mode's knobs)."""
    from ..modes import list_modes, get_mode

    return name == "mode" or name in DEPLOYMENT_KNOBS or any(name in get_mode(m).knobs for m in list_modes())


def family_knobs(family: str) -> tuple[str, ...]:
    """The deployment knobs of a mode family (``device``: precision; ``split``: bits, cut)."""
    from ..modes import modes_of_family

    return tuple(dict.fromkeys(name for mode in modes_of_family(family) for name in mode.knobs))


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
    modes: tuple[str, ...] | list[str] = ("device",),
) -> SearchSpace:
    """The search space of ``model`` at ``effort``, with the config's overrides applied.

    ``resolution`` is the user's resolution, the baseline's input size; by
    default the largest resolution choice up to 512. ``modes`` are the study's
    mode families (``mode:``); each brings its deployment knobs (``split``: ``cut``,
    every cut point of the model's networks and ``server``; ``bits``, 32 16 8 4),
    which ``search_space:`` narrows like any knob. Errors name the
    ``search_space.<knob>`` key, the bad value and what is valid.
    """
    if effort not in EFFORTS:
        raise ConfigError(f"{source}: effort = {effort!r}: choose one of {', '.join(EFFORTS)}")
    definitions = load_knob_definitions(model)
    entry = get_model_entry(model)
    specs = {k.name: k for k in entry.knobs}
    open_tiers = set(EFFORTS[: EFFORTS.index(effort) + 1])
    overrides = dict(overrides or {})
    from ..modes import is_derived

    modes = tuple(m for m in modes if not is_derived(m))  # cascade plans are made after the search, never sampled
    mode_knobs = [name for family in modes for name in family_knobs(family) if name not in definitions]

    unknown = [name for name in overrides if name not in definitions and name not in mode_knobs]
    if unknown:
        name = unknown[0]
        knowable = [*definitions, *mode_knobs]
        from ..modes import placement_modes

        owner = next((f for f in placement_modes() if f not in modes and name in family_knobs(f)), None)
        hint = f" ({name} is a knob of mode {owner}: add `mode: [{', '.join(modes)}, {owner}]`)" if owner else ""
        raise ConfigError(
            f"{source}: unknown knob 'search_space.{name}' for {model}{did_you_mean(name, knowable)}{hint}; "
            f"searchable knobs: {', '.join(knowable)}"
        )
    if "device" not in modes and "precision" in overrides:
        raise ConfigError(f"{source}: search_space.precision applies to mode device, which `mode:` leaves out; "
                          "add device to `mode:` or remove precision")

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
    if "device" not in modes:
        choices.pop("precision", None)
        baseline.pop("precision", None)
    exit_modes = [m for m in modes if m in ("early_exit", "early_exit_split")]
    if exit_modes and not any(int(v) > 0 for v in (*choices.get("exits", ()), baseline.get("exits", 0))):
        raise ConfigError(f"{source}: mode {exit_modes[0]} needs networks with exits, but search_space.exits is not open",
                          hint="add e.g. `search_space: {exits: [0, 2]}` (0: networks without exits, deployed whole)")
    for name in mode_knobs:  # a deployment knob's baseline is its first choice: narrowing never widens it
        allowed = _mode_knob_values(name, model, baseline, choices)
        values = tuple(dict.fromkeys(overrides.get(name, allowed)))
        bad = [v for v in values if v not in allowed or isinstance(v, bool)]
        if not isinstance(overrides.get(name, []), list) or not values or bad:
            raise ConfigError(f"{source}: search_space.{name} = {overrides.get(name)!r}: choose from {', '.join(map(str, allowed))}")
        baseline[name] = values[0]
        if len(values) > 1:
            choices[name] = values
    for spec in entry.knobs:  # a neutral knob not searched (exits) is no part of the baseline: old studies keep their hash
        if spec.neutral and spec.name not in choices and baseline.get(spec.name) == spec.default:
            baseline.pop(spec.name, None)
    if len(modes) > 1:
        choices["mode"] = modes
    if modes != ("device",):  # a study made before modes existed keeps its baseline, hence its settings hash
        baseline["mode"] = modes[0]
    return SearchSpace(model=model, effort=effort, choices=choices, baseline=baseline, tiers=tiers, modes=modes)


def _mode_knob_values(name: str, model: str, baseline: Mapping[str, Any], choices: Mapping[str, tuple]) -> tuple:
    """Every value of a mode's knob in this space: the union over the space's networks of the values the mode
    gives each (split: ``bits`` 32, 16, 8, 4; ``cut`` ``server`` and every cut point, in the order of the stages)."""
    from ..modes import list_modes, get_mode

    owners = [get_mode(m) for m in list_modes() if name in get_mode(m).knobs]
    structural = {k: v for k, v in baseline.items() if k in {s.name for s in get_model_entry(model).knobs}}
    variants = [structural] + [{**structural, knob: value} for knob, values in choices.items()
                               if knob in structural for value in values]
    union: list[Any] = []
    for knobs in variants:
        network = Network.create(model, knobs, 64)
        for mode in owners:
            names = list((mode.knob_values(network) or {}).get(name, ()))
            for position, value in enumerate(names):
                if value not in union:  # kept in each network's own order
                    before = names[position - 1] if position else None
                    union.insert(union.index(before) + 1 if before in union else len(union), value)
    return tuple(union)

