"""Deployment modes: plug-ins that say how trained networks are deployed, what that costs and how well it does.

>>> from optiseg.modes import get_mode, list_modes, mode_for
>>> mode = mode_for({"precision": "int8"})   # the mode that deploys a network in INT8
>>> plan = mode.plan(network, {"precision": "int8"})

Register a new mode with :func:`register_mode`; :class:`DeploymentMode`
documents the life cycle the search drives it through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError, did_you_mean
from ._base import Artifact, DeploymentMode, ModeContext

_REGISTRY: dict[str, DeploymentMode] = {}


def register_mode(mode: DeploymentMode) -> DeploymentMode:
    if mode.name in _REGISTRY:
        raise TypeError(f"deployment mode {mode.name!r} is registered twice")
    _REGISTRY[mode.name] = mode
    return mode


def list_modes() -> list[str]:
    return list(_REGISTRY)


def get_mode(name: str) -> DeploymentMode:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown deployment mode {name!r}{did_you_mean(name, _REGISTRY)}; modes: {', '.join(_REGISTRY)}") from None


def placement_modes() -> list[str]:
    """The names a study's ``mode:`` takes: one per family (``device`` covers FP32 and INT8, chosen by ``precision``)."""
    return list(dict.fromkeys(getattr(mode, "family", mode.name) for mode in _REGISTRY.values()))


def is_derived(family: str) -> bool:
    """Whether a family's plans are made from networks other trials trained (a cascade), never sampled."""
    return any(getattr(mode, "derived", False) for mode in modes_of_family(family))


def modes_of_family(family: str) -> list[DeploymentMode]:
    return [mode for mode in _REGISTRY.values() if getattr(mode, "family", mode.name) == family]


def mode_for(knobs: Mapping[str, Any]) -> DeploymentMode:
    """The mode that deploys a plan with these deployment knobs.

    ``mode`` names the family (default ``device``); within it, the mode whose knobs take the
    other values (``precision: int8`` -> the INT8 mode). A knob whose values are an empty
    tuple takes any value (split's ``cut``: the network's own cut points).
    """
    family = str(knobs.get("mode", "device"))
    rest = {name: value for name, value in knobs.items() if name != "mode"}
    candidates = modes_of_family(family)
    if not candidates:
        raise UsageError(f"unknown deployment mode {family!r}{did_you_mean(family, placement_modes())}; "
                         f"modes: {', '.join(placement_modes())}")
    for mode in candidates:
        if all(name in mode.knobs for name in rest) and all(
            not values or rest.get(name, values[0]) in values for name, values in mode.knobs.items()
        ):
            return mode
    def takes(mode) -> str:
        return ", ".join(f"{k} in {list(v) or 'the values of the network'}" for k, v in mode.knobs.items()) or "no knobs"

    raise UsageError(f"no {family} mode takes {rest}; " + "; ".join(f"{m.name}: {takes(m)}" for m in candidates))


from . import device, int8, split, early_exit, cascade  # noqa: E402,F401,I001  (registers the modes, in this order)

__all__ = ["Artifact", "DeploymentMode", "ModeContext", "get_mode", "is_derived", "list_modes", "mode_for", "modes_of_family",
           "placement_modes", "register_mode"]
