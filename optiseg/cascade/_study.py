"""A cascade's operating points as trials of a study: stored once, however many workers finish the study at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ._lock import cascade_lock

if TYPE_CHECKING:
    from ..plans import DeploymentPlan, Evaluation


def add_cascade_trials(study, folder: str | Path, plans: Iterable[tuple[DeploymentPlan, Evaluation, Mapping[str, float]]], *,
                       artifacts: str, worker: str, derived_from: tuple[int, int]) -> list[int]:
    """Store each ``(plan, evaluation, constraints)`` as a derived trial of ``study`` unless it holds that plan already;
    the new trials' numbers (none when another worker stored them first).

    ``folder`` is the cascade's folder: its lock is held while the study's plans are read and the new ones added, so
    two workers never both find a plan missing. ``artifacts`` is that folder relative to the study folder.
    """
    from .. import records

    with cascade_lock(folder):
        stored = {r.plan_key for r in records.load_records(study)}  # read under the lock: what workers before us stored
        added = []
        for plan, evaluation, constraints in plans:
            if plan.key in stored:
                continue
            added.append(records.add_derived_trial(study, plan, evaluation, artifacts=artifacts, worker=worker,
                                                   derived_from=derived_from, constraints=constraints))
            stored.add(plan.key)
    return added
