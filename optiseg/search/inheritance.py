"""Which trained network of the study a new network starts from (``inherit_weights: true``).

A candidate is a source for a new network when it is of the same family, classes and input channels and
contains the new network (:func:`optiseg.training.inheritable`: as wide, as deep, as expanded or more; the
same shape at any resolution qualifies and is copied whole). Of those whose weights are on this machine, the
one trained for the most epochs is taken; ties go to the same shape, then the fewest parameters (the closest
network), then the nearest resolution, then the earliest trial. Its best weights are used when its training
is finished, its last epoch's when a multi-fidelity rung stopped it. Only a new training starts from them: a
network that has a checkpoint resumes from it. The compute a study counts for a network is its own epochs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import records
from ..checkpoint import load_checkpoint
from ..layout import StudyLayout
from ..network import Network
from ..training import BEST, CHECKPOINT, METRICS, InitialWeights, inheritable
from ..training.inherit import knob_mismatch, shapes_of, state_shapes

_shapes: dict[str, dict[str, tuple[int, ...]]] = {}


def _shapes_of(network: Network) -> dict[str, tuple[int, ...]]:
    if network.key not in _shapes:
        _shapes[network.key] = shapes_of(network.build())
    return _shapes[network.key]


def _epochs_trained(record: records.TrialRecord, train_dir: Path) -> tuple[int, Path] | None:
    # A partial network's epochs are those of its record; a promotion running elsewhere may be past them (the
    # checkpoint is written atomically, so what is read is one whole epoch's weights).
    """Epochs trained and the weights file to start from, or None when this machine has no weights of it."""
    if (train_dir / METRICS).is_file() and (train_dir / BEST).is_file():
        return int(json.loads((train_dir / METRICS).read_text(encoding="utf-8")).get("epochs_run", 0)), train_dir / BEST
    epochs = (record.evaluation.details.get("fidelity") or {}).get("epochs") if record.evaluation else None
    if record.status == records.PARTIAL and epochs and (train_dir / CHECKPOINT).is_file():
        return int(epochs), train_dir / CHECKPOINT
    return None


def choose_source(trial_records, layout: StudyLayout, target: Network, target_model=None
                  ) -> tuple[records.TrialRecord, int, Path] | None:
    """The record, epochs and weights file ``target`` starts from (see the module's text), or None.
    ``target_model``: ``target`` built (built here if omitted)."""
    target_model = target_model if target_model is not None else target.build()
    target_shapes = shapes_of(target_model)
    best, best_key = None, None
    seen: set[tuple[str, int]] = set()
    contains: dict[str, bool] = {}  # by network: its plans' records (FP32, INT8, split, ...) share one answer
    for record in trial_records:
        if (record.status not in (records.COMPLETE, records.PARTIAL) or record.plan is None or record.derived_from
                or record.duplicate_of is not None):
            continue
        network = record.plan.network
        if (network.key == target.key or network.model != target.model or network.num_classes != target.num_classes
                or network.in_channels != target.in_channels
                or knob_mismatch(target.model, network.knob_dict, target.knob_dict) is not None):
            continue
        found = _epochs_trained(record, layout.network(network.key).train)
        if found is None or (network.key, found[0]) in seen:
            continue
        if network.key not in contains:
            contains[network.key] = inheritable(_shapes_of(network), target_model)
        if not contains[network.key]:
            continue
        epochs, weights = found
        seen.add((network.key, epochs))
        shapes = _shapes_of(network)
        same_shape = shapes == target_shapes
        params = sum(math.prod(shape) for shape in shapes.values())
        distance = abs(math.log(network.resolution[0] * network.resolution[1] / (target.resolution[0] * target.resolution[1])))
        key = (-epochs, not same_shape, params, distance, record.number)
        if best_key is None or key < best_key:
            best, best_key = (record, epochs, weights), key
    return best


def initial_weights(trial_records, layout: StudyLayout, target: Network) -> InitialWeights | None:
    """The weights ``target`` starts from, described as ``trial N (network key, E epochs)``; None: from scratch."""
    target_model = target.build()
    chosen = choose_source(trial_records, layout, target, target_model)
    if chosen is None:
        return None
    record, epochs, weights = chosen
    state = load_checkpoint(weights)["state_dict"]
    if not inheritable(state_shapes(state), target_model):
        return None  # weights of another layout than the record's network (e.g. written by an older optiseg)
    return InitialWeights(state, f"trial {record.number} ({record.plan.network.key}, {epochs} epochs)")
