"""Objectives and constraints by metric name, from the config's ``objectives:`` and ``constraints:``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..plans import get_metric

DEFAULT_OBJECTIVES = ("iou", "latency_ms")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"


@dataclass(frozen=True)
class Constraint:
    """``key`` as the config writes it (``max_latency_ms``): ``metric`` must stay at or below (max) / above (min) ``value``."""

    key: str
    metric: str
    bound: str  # "max" | "min"
    value: float

    @property
    def on_cost(self) -> bool:
        """Known before training (so it gates training)."""
        return get_metric(self.metric).cost

    def violation(self, measured: float) -> float:
        """> 0 when violated (Optuna's convention), by how much."""
        return measured - self.value if self.bound == "max" else self.value - measured

    def describe(self, measured: float) -> str:
        sign = ">" if self.bound == "max" else "<"
        return f"{self.metric} {measured:.4g} {sign} {self.key} {self.value:g}"


def objectives_from(names: Sequence[str] | None) -> tuple[Objective, ...]:
    names = tuple(names or DEFAULT_OBJECTIVES)
    return tuple(Objective(name, get_metric(name, "objectives").direction) for name in names)


def constraints_from(section) -> tuple[Constraint, ...]:
    """Every ``max_<metric>`` / ``min_<metric>`` of the config's ``constraints:`` that is set."""
    constraints = []
    for key, value in section.items():
        if value is None:
            continue
        bound, _, metric = key.partition("_")
        constraints.append(Constraint(key, metric, bound, float(value)))
    return tuple(constraints)
