"""What a network is: architecture, every knob value, input size, channels and classes, with one key.

A :class:`Network` is made once, at the edge (the search space, a command
line, a checkpoint), checked there, and then passed whole to everything that
builds, profiles, trains, exports, checkpoints or deploys it:

>>> from optiseg.network import Network
>>> network = Network.create("fastscnn", {"a": 0.5}, "192", num_classes=1)
>>> network.key
'fastscnn-192x192-rgb-c1-a0.5_t6_r3_pp1'
>>> model = network.build()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .models import check_resolution, format_knob_value, format_resolution, get_model_entry, parse_resolution

KnobValue = int | float | bool | str


@dataclass(frozen=True)
class Network:
    """One network: ``model`` with ``knobs``, input ``(in_channels, *resolution)``, ``num_classes`` logits.

    ``knobs`` holds every knob, resolved, except the neutral ones that leave the
    network as it is (``exits=0``; see :class:`~optiseg.models.KnobSpec`): a
    network without exits is described, keyed and stored as before exits
    existed. :meth:`knob` reads any knob, defaults included.
    """

    model: str
    knobs: tuple[tuple[str, KnobValue], ...]
    resolution: tuple[int, int]
    in_channels: int = 3
    num_classes: int = 1

    @classmethod
    def create(
        cls,
        model: str,
        knobs: Mapping[str, Any] | None = None,
        resolution: Any = 512,
        *,
        in_channels: int = 3,
        num_classes: int = 1,
    ) -> Network:
        """Check every part (knob names and ranges, resolution, channels, classes) and fill in default knobs."""
        entry = get_model_entry(model)
        resolved = entry.resolve_knobs(knobs)
        size = parse_resolution(resolution) if not isinstance(resolution, tuple) else check_resolution(resolution)
        if isinstance(in_channels, bool) or in_channels not in (1, 3):
            raise UsageError(f"in_channels={in_channels!r} is invalid: use 3 (RGB) or 1 (luma Y of YCbCr)")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes={num_classes!r} is invalid: it must be an integer >= 1 (1 = binary)")
        knobs = entry.identity_knobs(resolved)
        return cls(model=model, knobs=tuple(knobs.items()), resolution=size, in_channels=int(in_channels), num_classes=num_classes)

    @property
    def knob_dict(self) -> dict[str, KnobValue]:
        return dict(self.knobs)

    def knob(self, name: str) -> KnobValue:
        """The value of knob ``name``, its default when the network leaves it out (e.g. ``exits`` -> 0)."""
        values = self.knob_dict
        if name in values:
            return values[name]
        defaults = get_model_entry(self.model).defaults()
        if name not in defaults:
            raise UsageError(f"model {self.model!r} has no knob {name!r}; knobs: {', '.join(defaults)}")
        return defaults[name]

    @property
    def resolution_text(self) -> str:
        return format_resolution(self.resolution)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, *self.resolution)

    @property
    def key(self) -> str:
        """A readable, filesystem-safe identity, e.g. ``fastscnn-192x192-rgb-c1-a0.5_t6_r3_pp1``."""
        knobs = "_".join(f"{name}{format_knob_value(value)}" for name, value in self.knobs)
        channels = "rgb" if self.in_channels == 3 else "luma"
        return f"{self.model}-{self.resolution_text}-{channels}-c{self.num_classes}-{knobs}"

    def describe(self) -> str:
        knobs = ",".join(f"{name}={format_knob_value(value)}" for name, value in self.knobs)
        channels = "" if self.in_channels == 3 else " luma"
        return f"{self.model} {self.resolution_text}{channels} {knobs}"

    def build(self):
        """The untrained PyTorch module."""
        from .models import build_model

        return build_model(self.model, self.knob_dict, self.num_classes, self.in_channels)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form; :meth:`from_dict` reads it back."""
        return {
            "model": self.model,
            "knobs": {name: value for name, value in self.knobs},
            "resolution": self.resolution_text,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Network:
        return cls.create(
            data["model"], data.get("knobs") or {}, data["resolution"],
            in_channels=int(data.get("in_channels", 3)), num_classes=int(data.get("num_classes", 1)),
        )
