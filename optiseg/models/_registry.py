"""The model registry: one dict from a model name to its class and knob schema."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import KnobError, UsageError, did_you_mean

KnobValue = float | int | bool


@dataclass(frozen=True)
class KnobSpec:
    """One architecture knob: its type, valid range and meaning.

    ``kind`` is ``float``, ``int`` or ``bool``. ``minimum`` is exclusive for
    floats when ``exclusive_minimum`` is set (a width multiplier of 0 is not a
    network); ``maximum`` is always inclusive.

    A ``neutral`` knob adds something to the network that its default leaves
    out (``exits=0``: no side exits), so a network at that default is the
    network as it was before the knob existed: the knob is left out of its
    identity (:meth:`ModelEntry.identity_knobs`, hence ``Network.key``,
    checkpoints and run folders). ``only_with`` names the knob it refines
    (``exit_width`` only matters with ``exits`` >= 1); while that knob is at its
    default, this one is left out of the identity too, whatever its value.
    """

    name: str
    kind: type
    default: KnobValue
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    neutral: bool = False
    only_with: str | None = None

    def range_text(self) -> str:
        """The valid values, e.g. ``0 < a <= 1``, ``integer 1 <= r <= 8`` or ``0 or 1``."""
        if self.kind is bool:
            return "0 or 1"
        low = ""
        if self.minimum is not None:
            low = f"{_fmt(self.minimum)} {'<' if self.exclusive_minimum else '<='} "
        high = f" <= {_fmt(self.maximum)}" if self.maximum is not None else ""
        return f"{'integer ' if self.kind is int else ''}{low}{self.name}{high}"

    def describe_range(self) -> str:
        if self.kind is bool:
            return f"{self.name} must be 0 or 1"
        kind = "an integer" if self.kind is int else "a number"
        return f"{self.name} must be {kind}, {self.range_text().removeprefix('integer ')}"

    def coerce(self, value: Any) -> KnobValue:
        """Return ``value`` as this knob's type, or raise :class:`KnobError`."""
        shown = value if isinstance(value, str) else repr(value)
        bad = KnobError(f"knob {self.name}={shown} is invalid: {self.describe_range()} ({self.help})")
        if isinstance(value, str):
            value = _parse_scalar(value)
        if self.kind is bool:
            if value in (0, 1, True, False):
                return bool(value)
            raise bad
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind is int:
            if float(value) != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        if self.minimum is not None:
            if value < self.minimum or (self.exclusive_minimum and value == self.minimum):
                raise bad
        if self.maximum is not None and value > self.maximum:
            raise bad
        return value


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture."""

    name: str
    cls: Callable[..., nn.Module]
    knobs: tuple[KnobSpec, ...]
    summary: str

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def defaults(self) -> dict[str, KnobValue]:
        return {k.name: k.default for k in self.knobs}

    def identity_knobs(self, resolved: Mapping[str, KnobValue]) -> dict[str, KnobValue]:
        """``resolved`` without the neutral knobs that leave the network as it is (see :class:`KnobSpec`).

        ``fastscnn`` with ``exits=0`` keeps ``{a, t, r, pp}``, the knobs it had
        before exits existed, so its key, checkpoints and run folders are unchanged.
        """
        specs = {k.name: k for k in self.knobs}

        def at_default(name: str) -> bool:
            return name in specs and resolved.get(name, specs[name].default) == specs[name].default

        return {
            name: value for name, value in resolved.items()
            if not (specs[name].neutral and (at_default(name) or (specs[name].only_with and at_default(specs[name].only_with))))
        }

    def resolve_knobs(self, knobs: Mapping[str, Any] | None) -> dict[str, KnobValue]:
        """Merge ``knobs`` over the defaults, checking names, types and ranges."""
        specs = {k.name: k for k in self.knobs}
        resolved = self.defaults()
        for name, value in (knobs or {}).items():
            if name not in specs:
                raise KnobError(
                    f"unknown knob {name!r} for model {self.name!r}{did_you_mean(name, specs)}; "
                    f"valid knobs: {', '.join(specs)}"
                )
            resolved[name] = specs[name].coerce(value)
        return resolved


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, knobs: tuple[KnobSpec, ...], summary: str):
    """Class decorator adding an architecture to the registry.

    The knob specs must name exactly the keyword arguments of the class besides
    ``num_classes`` and ``in_channels``, with the same defaults: the signature
    is the schema, and this is checked here. The class must also have a
    ``stages()`` method (its forward pass as :class:`~optiseg.models.Stage`
    objects, which split computing and early exits cut and tap).
    """

    def decorator(cls):
        params = inspect.signature(cls).parameters
        arch_params = {p: v.default for p, v in params.items() if p not in ("num_classes", "in_channels")}
        spec_defaults = {k.name: k.default for k in knobs}
        if arch_params != spec_defaults:
            raise TypeError(f"{cls.__name__}: knob specs {spec_defaults} do not match signature {arch_params}")
        if name in _REGISTRY:
            raise TypeError(f"model {name!r} is registered twice")
        for knob in knobs:
            if knob.only_with is not None and not (knob.neutral and knob.only_with in spec_defaults):
                raise TypeError(f"{cls.__name__}: knob {knob.name!r} refines {knob.only_with!r}: it must be neutral, of a knob of the model")
        if not callable(getattr(cls, "stages", None)):
            raise TypeError(f"{cls.__name__}: a registered model declares its stages (a `stages()` method, see models/_stages.py)")
        _REGISTRY[name] = ModelEntry(name=name, cls=cls, knobs=knobs, summary=summary)
        return cls

    return decorator


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names list what exists."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown model {name!r}{did_you_mean(name, _REGISTRY)}; available models: {', '.join(list_models())}"
        ) from None


def build_model(
    name: str,
    knobs: Mapping[str, Any] | None = None,
    num_classes: int = 1,
    in_channels: int = 3,
) -> nn.Module:
    """Build architecture ``name`` with ``knobs`` (missing ones take their defaults).

    ``num_classes`` is the number of output logits: 1 for binary segmentation
    (one sigmoid logit), C >= 2 for C-class segmentation (softmax over C logits).
    ``in_channels`` is 3 for RGB or 1 for the luma channel.
    """
    entry = get_model_entry(name)
    resolved = entry.resolve_knobs(knobs)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes={num_classes!r} is invalid: it must be an integer >= 1 (1 = binary)")
    if in_channels not in (1, 3):
        raise UsageError(f"in_channels={in_channels!r} is invalid: use 3 (RGB) or 1 (luma Y of YCbCr)")
    return entry.cls(num_classes=num_classes, in_channels=in_channels, **resolved)


def format_knob_value(value: Any) -> str:
    """A knob value as people write it: ``0.5`` (not 0.5000), ``1`` for True, strings as they are."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse_scalar(text: str) -> Any:
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _fmt(x: float) -> str:
    return format_knob_value(float(x))
