"""Which Optuna sampler proposes the candidates.

``auto`` (the default) enumerates the whole space when the budget covers it
(``grid``: every candidate is put in the trial queue, baseline first, so
parallel workers share them out without duplicates). Otherwise it uses
multivariate TPE when the study has a latency constraint or several workers,
and GP for one worker without a latency constraint. TPE is the one sampler
that learns from too-slow candidates (they end PRUNED with a violated latency
constraint and no IoU; GP and NSGA-II only learn from completed trials) and
it has a constant liar for parallel workers; with neither concern, GP found
the front fastest. benchmarks/search_samplers.py holds the measurement
behind the choice (README, "Choosing the sampler").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna

from .space import SearchSpace

SAMPLERS = ("auto", "tpe", "gp", "nsga2", "random", "grid")


def tpe_startup_trials(n_trials: int | None) -> int:
    """Random trials before TPE models the space: a quarter of the budget, 3 to 10."""
    if n_trials is None:
        return 10
    return max(3, min(10, n_trials // 4))


def make_sampler(
    name: str,
    space: SearchSpace,
    seed: int,
    n_trials: int | None,
    latency_constrained: bool,
    multi_worker: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` for ``space`` (``auto`` resolves to ``grid``, ``tpe`` or ``gp``)."""
    name = resolve_sampler_name(name, space, n_trials, latency_constrained, multi_worker)
    if name == "grid":
        return optuna.samplers.RandomSampler(seed=seed)  # only asked if the queue ran dry; see grid_queue
    if name == "tpe":
        return optuna.samplers.TPESampler(
            multivariate=True,
            n_startup_trials=tpe_startup_trials(n_trials),
            constant_liar=multi_worker,
            seed=seed,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=tpe_startup_trials(n_trials))
    if name == "nsga2":
        population = max(4, min(20, (n_trials or 40) // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def resolve_sampler_name(
    name: str, space: SearchSpace, n_trials: int | None, latency_constrained: bool, multi_worker: bool = False
) -> str:
    """The sampler ``name`` stands for: itself, or what ``auto`` picks for this study."""
    if name != "auto":
        return name
    if n_trials is not None and space.size <= n_trials:
        return "grid"
    if latency_constrained or multi_worker:
        return "tpe"
    return "gp"


def grid_queue(space: SearchSpace) -> Iterator[dict[str, Any]]:
    """Every plan's params, the baseline first: what ``grid`` puts in the trial queue."""
    yield from space.all_params()