"""The ``latency:`` section: how far a measurement is trusted (the latency model, drift checks)."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from ._base import Section


class LatencyConfig(Section):
    """How optiseg checks each latency it measures (see README, "Latency you can trust").

    * ``repeat_on_disagreement``: a measurement outside the latency model's 99 % interval is
      measured twice more and the median of the three kept.
    * ``predict_too_slow``: record a plan as too slow from the model's prediction, without
      occupying the device, when even its optimistic bound is over ``max_latency_ms`` by
      ``predict_margin``; only once ``predict_after`` plans of its mode were measured. Off by
      default: the front never holds a predicted latency, but a plan wrongly predicted too slow
      is never trained.
    * ``drift_every``: after every N fresh measurements on a device, its reference (the
      baseline's untrained graph) is measured again; a change beyond ``drift_tolerance`` is a
      drift: optiseg warns, records it, waits up to ``drift_wait_s`` for the device to come
      back, and measures again everything measured since the last good check. 0 turns it off.
    """

    repeat_on_disagreement: bool = True
    predict_too_slow: bool = False
    predict_after: PositiveInt = 10
    predict_margin: float = Field(0.1, ge=0.0, le=2.0)
    drift_every: NonNegativeInt = 8
    drift_tolerance: float = Field(0.15, gt=0.0, lt=1.0)
    drift_wait_s: PositiveFloat = 300.0
