"""Leases: how a worker shows that its running trial is alive, and how dead trials are retried.

Optuna's own heartbeat covers database storages only and runs inside
``study.optimize``; optiseg drives trials with ask/tell and also supports
journal files, so it keeps one mechanism for every storage: while a trial
runs, a thread renews the user attribute ``optiseg_lease_until`` (a Unix
time). A RUNNING trial whose lease has expired belongs to a worker that was
killed, lost power or lost its network; any worker may then mark it failed
(``study.tell`` is atomic, so exactly one worker wins) and enqueue its
parameters again, tagged as a retry. The retried trial finds the
candidate's artifacts and resumes training from its last epoch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from .. import records


@dataclass(frozen=True)
class LeaseSettings:
    renew_every_s: float = 15.0
    valid_for_s: float = 90.0


class TrialLease:
    """Context manager renewing a running trial's lease from a daemon thread."""

    def __init__(self, trial: optuna.Trial, settings: LeaseSettings):
        self.trial = trial
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{trial.number}", daemon=True)

    def __enter__(self) -> TrialLease:
        self._renew()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _renew(self) -> None:
        records.renew_lease(self.trial, time.time() + self.settings.valid_for_s)

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.settings.renew_every_s):
            try:
                self._renew()
            except Exception:  # a storage hiccup: the next renewal tries again; expiry is generous
                pass


def recover_stale_trials(
    study: optuna.Study,
    *,
    all_running_are_dead: bool = False,
    settings: LeaseSettings = LeaseSettings(),
    now: float | None = None,
) -> list[int]:
    """Fail every RUNNING trial whose lease expired (or all, when this process holds the study alone) and enqueue it again.

    Returns the numbers of the trials this call failed. A trial that another
    worker recovered first is skipped.
    """
    now = time.time() if now is None else now
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lease_until = records.lease_until(trial)
        if lease_until is None and trial.datetime_start is not None:  # died before its first renewal
            lease_until = trial.datetime_start.timestamp() + settings.valid_for_s
        dead = all_running_are_dead or (lease_until is not None and lease_until < now)
        if not dead:
            continue
        try:
            records.mark_stale(study, trial)
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        study.enqueue_trial(trial.params, user_attrs=records.retry_attrs(trial), skip_if_exists=False)
        recovered.append(trial.number)
    return recovered
