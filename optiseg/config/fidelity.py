"""The ``fidelity:`` section: train many candidates briefly and only the promising ones fully (successive halving)."""

from __future__ import annotations

from pydantic import Field

from ._base import Section


class FidelityConfig(Section):
    """Successive halving over epochs (README, "Multi-fidelity search").

    Each new network is first trained for the lowest rung's epochs; the best ``1/eta`` of the networks that
    reached a rung (by non-dominated rank on validation IoU and latency) go on to the next rung, resuming from
    their checkpoint, up to ``training.epochs``. Rungs: ``training.epochs / eta^k`` epochs, the lowest at least
    ``min_epochs``.
    """

    eta: int = Field(3, ge=2, le=10, description="one network in eta goes on to the next rung")
    min_epochs: int = Field(4, ge=1, description="epochs of the lowest rung, at least")

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """Epochs at each rung, lowest first, the last one ``epochs`` (just ``(epochs,)`` when too few for two)."""
        found = [int(epochs)]
        while round(found[0] / self.eta) >= self.min_epochs and round(found[0] / self.eta) < found[0]:
            found.insert(0, int(round(found[0] / self.eta)))
        return tuple(found)
