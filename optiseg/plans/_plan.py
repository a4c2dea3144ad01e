"""A deployment plan: how trained network(s) are deployed, with one key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..models import format_knob_value
from ..network import Network

# Knobs that change only how a trained network is deployed, never its weights: a plan
# of a trained network with other values of these costs no training. name -> every value.
DEPLOYMENT_KNOBS: dict[str, tuple[str, ...]] = {"precision": ("fp32", "int8")}
DEFAULT_DEPLOYMENT = {"precision": "fp32"}


@dataclass(frozen=True)
class DeploymentPlan:
    """``mode`` deploying ``networks`` with deployment ``knobs``; ``placement`` says where each part runs (device / server)."""

    mode: str
    networks: tuple[Network, ...]
    knobs: tuple[tuple[str, Any], ...] = ()
    placement: tuple[tuple[str, str], ...] = (("network", "device"),)

    @property
    def network(self) -> Network:
        """The (first) network: the one a single-network mode deploys."""
        return self.networks[0]

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    @property
    def precision(self) -> str:
        return str(self.knob_dict.get("precision", "fp32"))

    @property
    def key(self) -> str:
        """``<network key>[+<network key>...]@<mode>[-<knob><value>...]``: unique within a study, filesystem-safe.

        The precision is implied by the mode and left out.
        """
        extra = "_".join(f"{name}{format_knob_value(value)}" for name, value in self.knobs if name != "precision")
        return "+".join(n.key for n in self.networks) + f"@{self.mode}" + (f"-{extra}" if extra else "")

    @property
    def label(self) -> str:
        """The mode and its knobs, short: ``device``, ``int8``, ``split cut=bottlenecks1 bits=8``."""
        knobs = " ".join(f"{k}={format_knob_value(v)}" for k, v in self.knobs if k != "precision")
        return f"{self.mode}{' ' + knobs if knobs else ''}"

    def describe(self) -> str:
        knobs = " ".join(f"{k}={format_knob_value(v)}" for k, v in self.knobs)
        return f"{' + '.join(n.describe() for n in self.networks)} [{self.mode}{' ' + knobs if knobs else ''}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "networks": [n.as_dict() for n in self.networks],
            "knobs": dict(self.knobs),
            "placement": dict(self.placement),
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentPlan:
        return cls(
            mode=data["mode"],
            networks=tuple(Network.from_dict(n) for n in data["networks"]),
            knobs=tuple(sorted((data.get("knobs") or {}).items())),
            placement=tuple((data.get("placement") or {"network": "device"}).items()),
        )
