"""The training budget (``budget.train_compute``): what may still be trained, and where the rest of it goes.

Training compute is counted as epochs x training images x forward MACs per image
(:func:`optiseg.results.training_totals`). A study without a network trained whole
trains its best one on whatever it costs, so that it ends with a front
(:func:`finish_best`). Once it has one:

* a promotion whose next rung would take the training past the budget is skipped
  (:func:`promotion_over_budget`);
* in a study in rungs (``fidelity:``), a new network whose whole training would not fit in
  what is left is not trained (:func:`new_network_over_budget`): near the end of a budget, training new networks
  to a low rung buys partial networks that can never be trained whole; instead the
  rest goes to the furthest, best partial network whose next rung fits
  (:func:`promote_within_budget`).
"""

from __future__ import annotations

import optuna

from .. import records
from ..records import COMPLETE, TrialRecord, load_records
from ..results import training_totals
from .fidelity import rank


def has_own_front(trial_records) -> bool:
    """Some network this study trained whole meets the constraints (imports and derived plans do not count)."""
    return any(r.status == COMPLETE and r.feasible and r.imported_from is None and not r.derived_from for r in trial_records)


def promotion_over_budget(study: optuna.Study, env, trial) -> str | None:
    """Why a promotion must not run (it would take the study's training past ``budget.train_compute`` while some
    network is already trained whole, so the study has a front without it), or None to run it."""
    budget = env.config.budget.train_compute
    source = records.promotion_of(trial)
    if budget is None or source is None or env.config.fidelity is None:
        return None
    trial_records = load_records(study)
    if not has_own_front(trial_records):
        return None  # the study's first whole training: it gives the study its front
    partial = next((r for r in trial_records if r.number == source), None)
    rung = records.rung_of(trial)
    rungs = env.config.fidelity.rungs(env.config.training.epochs)
    added = _cost_to(partial, rungs[min(rung, len(rungs) - 1)]) if partial is not None and rung is not None else None
    if added is None:
        return None
    spent = training_totals(trial_records)["compute_macs"]
    if spent + added <= budget:
        return None
    return (f"promotion of trial {source} skipped: its {added:.3g} MACs would take the training to {spent + added:.3g} "
            f"of budget.train_compute {budget:.3g}")


def new_network_over_budget(study: optuna.Study, env, network, macs: float | None) -> str | None:
    """Why a new network (forward ``macs`` per image) must not be trained in a study in rungs: its whole training
    would take the study's training past ``budget.train_compute`` while the study already has a front; or None to
    train it (also when another worker has trained it already)."""
    budget = env.config.budget.train_compute
    if budget is None or env.config.fidelity is None or not macs:
        return None
    trial_records = load_records(study)
    if not has_own_front(trial_records) or any(_trained(r) and r.candidate == network.key for r in trial_records):
        return None
    whole = _whole_epochs(env.config.training, network) * len(env.dataset.split("train")) * float(macs)
    spent = training_totals(trial_records)["compute_macs"]
    if spent + whole <= budget:
        return None
    return (f"not trained: its whole training ({whole:.3g} MACs) would take the training to {spent + whole:.3g} of "
            f"budget.train_compute {budget:.3g}")


def promote_within_budget(study: optuna.Study, env) -> bool:
    """Queue the next rung of the furthest, best partial network (ranked within its rung) that fits in what is left
    of the budget and has not gone on yet. True if one was queued."""
    budget, fidelity = env.config.budget.train_compute, env.config.fidelity
    if budget is None or fidelity is None:
        return False
    trial_records = load_records(study)
    spent = training_totals(trial_records)["compute_macs"]
    rungs = fidelity.rungs(env.config.training.epochs)
    promoted = records.promoted_trials(study)
    gone_on = {(r.candidate, r.rung) for r in trial_records if r.number in promoted}  # any plan of it at that rung
    furthest: dict[str, TrialRecord] = {}  # each network once, as far as it got
    for record in trial_records:
        if _trained(record) and record.rung is not None and record.candidate is not None:
            if record.candidate not in furthest or _further(record, furthest[record.candidate]):
                furthest[record.candidate] = record
    partial = [r for r in furthest.values() if r.status == records.PARTIAL and (r.candidate, r.rung) not in gone_on
               and r.rung + 1 < len(rungs)]
    objectives = [(o.metric, o.direction) for o in env.objectives]
    for rung in sorted({r.rung for r in partial}, reverse=True):
        for record in rank([r for r in partial if r.rung == rung], objectives):
            cost = _cost_to(record, rungs[rung + 1])
            if cost is not None and spent + cost <= budget:  # as promotion_over_budget judges it
                records.enqueue_promotion(study, record.number, rung + 1)
                env.progress.log(f"the budget's last {budget - spent:.3g} MACs: trial {record.number} ({record.plan_key}) "
                                 f"goes on to rung {rung + 2} of {len(rungs)} for {cost:.3g}")
                return True
    return False


def finish_best(study: optuna.Study, env) -> bool:
    """With no network trained to its last rung yet, queue the furthest, best partial one's next rung (True if queued)."""
    trial_records = load_records(study)
    if env.config.fidelity is None or has_own_front(trial_records):
        return False
    partial = [r for r in trial_records if r.status == records.PARTIAL and _trained(r)]
    if not partial:
        return False
    top = max(r.rung or 0 for r in partial)
    promoted = records.promoted_trials(study)
    candidates = [r for r in rank([r for r in partial if (r.rung or 0) == top], [(o.metric, o.direction) for o in env.objectives])
                  if r.number not in promoted]
    if not candidates:
        return False
    best = candidates[0]
    records.enqueue_promotion(study, best.number, top + 1)
    env.progress.log(f"training budget reached with no network trained whole: trial {best.number} ({best.plan_key}) goes on")
    return True


def _trained(record: TrialRecord) -> bool:
    """A training this study did (whole or to a rung): not an import, a re-proposal or a plan derived from others."""
    return (record.status in (COMPLETE, records.PARTIAL) and record.imported_from is None and record.duplicate_of is None
            and not record.derived_from)


def _further(a: TrialRecord, b: TrialRecord) -> bool:
    """``a`` stands for its network rather than ``b``: whole before partial, then the higher rung."""
    return (a.status == COMPLETE, a.rung or 0) > (b.status == COMPLETE, b.rung or 0)


def _whole_epochs(training, network) -> int:
    """The epochs of a network's whole training (both stages of ``two_stage`` for a network with exits)."""
    exits = int(network.knob_dict.get("exits", 0) or 0)
    if not exits:
        return int(training.epochs)
    from ..training._phases import plan_phases

    return sum(phase.epochs for phase in plan_phases(training, exits))


def _cost_to(partial: TrialRecord, epochs: int) -> float | None:
    """What training ``partial``'s network on to ``epochs`` adds (its compute so far scales with its epochs)."""
    done = partial.metric("train_compute")
    trained = (partial.evaluation.details.get("fidelity") or {}).get("epochs")
    if done is None or not trained:
        return None
    return float(done) * (epochs / float(trained) - 1.0)
