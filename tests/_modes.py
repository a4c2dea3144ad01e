"""An example plan of every registered deployment mode, for the tests parametrized over the registry."""

from __future__ import annotations

from optiseg.modes import get_mode, list_modes
from optiseg.network import Network
from optiseg.plans import DeploymentPlan

NETWORK = Network.create("fastscnn", {"a": 0.25, "t": 2}, "64x96", num_classes=1)
WITH_EXITS = Network.create("fastscnn", {"a": 0.25, "t": 2, "exits": 1}, "64x96", num_classes=1)
SAMPLED_MODES = [name for name in list_modes() if not getattr(get_mode(name), "derived", False)]


def deployable(mode, networks=(NETWORK, WITH_EXITS)) -> Network:
    """The first of ``networks`` the mode can deploy (early exits need a network with exits)."""
    return next(n for n in networks if mode.knob_values(n) is not None)


def example_plan(mode, network: Network | None = None) -> DeploymentPlan:
    """The mode's plan with the last value of each knob; a derived mode (cascade) pairs the two test networks."""
    if getattr(mode, "derived", False):
        return mode.pair_plan(NETWORK, WITH_EXITS, 0.5)
    network = network if network is not None and mode.knob_values(network) is not None else deployable(mode)
    return mode.plan(network, {k: v[-1] for k, v in mode.knob_values(network).items()})
