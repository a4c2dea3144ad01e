"""Multi-fidelity search: successive halving over epochs, for two or more objectives.

A new network is trained to the lowest rung's epochs (:meth:`FidelityConfig.rungs`: ``epochs / eta^k``),
with the learning-rate schedule of the whole training, and judged on its best validation IoU so far. Each
time a trial finishes a rung, the networks that reached that rung are ranked (:func:`rank`: non-dominated
sorting on the study's objectives, the validation IoU standing for the test IoU; within a front layer, the
larger hypervolume contribution first, measured from a reference point just beyond the worst of the ranked
networks, so that an extreme network counts for the area it adds, not infinitely) and the best ``n // eta`` that have not gone on yet get a trial of the
next rung, queued with the same params: it resumes training from the network's checkpoint, so no epoch is
trained twice (asynchronous successive halving, ASHA, adapted to several objectives). Latency is exact at
every rung: it is measured before any training. The lower rungs' trials are ``partial``: scored on the test
split as they stand (for the front that takes them in, marked: :func:`optiseg.results.with_partial`), judged by
the sampler and the promotions on validation only; the front proper holds whole trainings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import OptisegError
from ..records import PARTIAL, TrialRecord


class RungReached(Exception):
    """Raised by :class:`StopAtEpoch` once the rung's epochs are trained and checkpointed."""


class StopAtEpoch:
    """A training reporter that passes every event on to ``inner`` and stops training after epoch ``epochs``."""

    def __init__(self, inner: Any, epochs: int):
        self.inner, self.epochs = inner, epochs

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def on_epoch_end(self, epoch: int, epochs: int, metrics) -> None:
        handler = getattr(self.inner, "on_epoch_end", None)
        if handler is not None:
            handler(epoch, epochs, metrics)
        if epoch >= self.epochs:
            raise RungReached(epoch)

    def on_train_start(self, info) -> None:
        handler = getattr(self.inner, "on_train_start", None)
        if handler is not None:
            handler(info)
        if int(info.get("start_epoch", 1)) > self.epochs:  # already trained past this rung (an earlier, longer call)
            raise RungReached(int(info["start_epoch"]) - 1)


def partial_scores(run_dir) -> dict[str, Any]:
    """What a training stopped at a rung has: epochs run and the best validation IoU so far (from its checkpoint)."""
    from ..checkpoint import load_checkpoint
    from ..training._run_folder import CHECKPOINT

    state = load_checkpoint(run_dir / CHECKPOINT)
    history = list(state.get("history") or ())
    if not history:
        raise OptisegError(f"{run_dir / CHECKPOINT} holds no finished epoch")
    best = max(history, key=lambda h: -1.0 if h.get("val_iou") is None else h["val_iou"])
    return {"epochs_run": len(history), "val_iou": best.get("val_iou"), "val_miou": best.get("val_miou"),
            "best_epoch": best["epoch"], "train_seconds": sum(h.get("seconds", 0.0) for h in history),
            "initialized_from": state.get("initialized_from")}


def low_fidelity_value(metric: str, record: TrialRecord) -> float | None:
    """The value a partial trial gives an objective: cost metrics as measured, ``iou``/``miou`` by their
    validation counterpart (the training's best validation IoU so far)."""
    if metric in ("iou", "miou"):
        return record.metric("val_iou" if metric == "iou" else "val_miou") or record.metric("val_iou")
    return record.metric(metric)


def rank(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> list[TrialRecord]:
    """Best first: by non-dominated layer on the objectives (low-fidelity values for partial trials), then by
    each one's hypervolume contribution within its layer (two objectives; reference point: the worst value of
    each objective among ``records`` less a tenth of its range) or crowding (more), then by number."""
    points = []
    for record in records:
        values = [low_fidelity_value(name, record) if record.status == PARTIAL else record.metric(name) for name, _ in objectives]
        if all(v is not None for v in values):
            signed = tuple((1.0 if d == "maximize" else -1.0) * float(v) for v, (_, d) in zip(values, objectives))
            points.append((record, signed))
    ordered: list[TrialRecord] = []
    remaining = points
    reference = _reference([p for _, p in points])
    while remaining:
        layer = [(r, p) for r, p in remaining if not any(_dominates(q, p) for _, q in remaining if q is not p)]
        contribution = _contributions([p for _, p in layer], reference)
        layer_sorted = sorted(zip(layer, contribution), key=lambda item: (-item[1], item[0][0].number))
        ordered.extend(r for (r, _), _ in layer_sorted)
        taken = {id(p) for _, p in layer}
        remaining = [(r, p) for r, p in remaining if id(p) not in taken]
    return ordered


def to_promote(reached: Sequence[TrialRecord], promoted: set[int], eta: int,
               objectives: Sequence[tuple[str, str]]) -> list[TrialRecord]:
    """Of the trials that reached one rung, those in the best ``len // eta`` not promoted yet (ASHA's rule)."""
    quota = len(reached) // eta
    return [r for r in rank(reached, objectives)[:quota] if r.number not in promoted]


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _reference(points: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Beyond the worst of ``points`` on every (signed, larger-is-better) axis by a tenth of the axis's range."""
    if not points:
        return ()
    reference = []
    for axis in zip(*points):
        low, high = min(axis), max(axis)
        reference.append(low - 0.1 * ((high - low) or abs(low) or 1.0))
    return tuple(reference)


def _contributions(layer: list[tuple[float, ...]], reference: tuple[float, ...]) -> list[float]:
    """Exclusive hypervolume contribution of each point of a non-dominated layer (two objectives) with respect to
    ``reference``, larger is better; with more objectives, the crowding distance."""
    if not layer:
        return []
    if len(layer[0]) != 2:
        return _crowding(layer)
    order = sorted(range(len(layer)), key=lambda i: layer[i][0])  # first objective ascending: second descending
    result = [0.0] * len(layer)
    for position, index in enumerate(order):
        x, y = layer[index]
        left = layer[order[position - 1]][0] if position > 0 else reference[0]
        up = layer[order[position + 1]][1] if position + 1 < len(order) else reference[1]
        result[index] = (x - left) * (y - up)
    return result


def _crowding(layer: list[tuple[float, ...]]) -> list[float]:
    result = [0.0] * len(layer)
    for axis in range(len(layer[0])):
        order = sorted(range(len(layer)), key=lambda i: layer[i][axis])
        span = layer[order[-1]][axis] - layer[order[0]][axis] or 1.0
        result[order[0]] = result[order[-1]] = float("inf")
        for position in range(1, len(order) - 1):
            result[order[position]] += (layer[order[position + 1]][axis] - layer[order[position - 1]][axis]) / span
    return result
