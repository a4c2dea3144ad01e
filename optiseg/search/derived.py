"""Plans made from networks the study already trained, once its trials are done: a cascade's operating points.

None costs a training. Each is stored as a trial of its own (:func:`optiseg.records.add_derived_trial`), so the
front, the report, ``--json`` and ``optiseg deploy --trial N`` treat it as any other plan.
"""

from __future__ import annotations

from typing import Any

from .. import records
from ..errors import OptisegError
from ..plans import Evaluation


def add_cascade_plans(study, env, *, small: int | None = None, large: int | None = None) -> list[int]:
    """Build the cascade of the study's pair (the fastest trained front member, the best IoU; or trials ``small``,
    ``large``) and store every threshold of its curve as a derived trial; the new trials' numbers.

    A pair whose plans are stored already adds nothing (the cascade's files are reused, so a resumed search redoes
    nothing). Workers that finish the study at once take turns (the cascade folder's lock): the first builds and stores,
    the others find the files and the plans there. Fewer than two trained networks: nothing, and the log says why.
    """
    from ..cascade import CascadeSettings, add_cascade_trials, build_cascade, cascade_runners, pick_pair, study_member
    from ..modes import get_mode

    progress, layout, config = env.progress, env.layout, env.config
    trial_records = records.load_records(study)
    try:
        small_record, large_record = pick_pair(trial_records, layout.folder, study.study_name, small=small, large=large)
    except OptisegError as exc:
        progress.log(f"cascade: no plans ({exc.message})")
        return []
    mode = get_mode("cascade")
    folder = layout.folder / "cascades" / f"{small_record.network.key}+{large_record.network.key}"
    progress.log(f"cascade: trial {small_record.number} on the device, trial {large_record.number} on the server, in {folder}")
    result = build_cascade(study_member(layout.folder, small_record), study_member(layout.folder, large_record),
                           cache=env.cache, runners=lambda: cascade_runners(config.device, config.server), link=config.link,
                           folder=folder, settings=CascadeSettings(training=config.training), stage=progress.log)
    relative = layout.relative(folder)
    evaluations = [cascade_evaluation(point, result, small_record.number, large_record.number, folder=relative)
                   for point in result.points]
    missing = [c.key for c in env.constraints if c.metric not in evaluations[0].metrics]
    if missing:
        progress.log(f"cascade: no plans: a cascade records no figure for {', '.join(missing)} (remove the constraint, "
                     "or cascade from `mode:`)")
        return []
    plans = [(mode.pair_plan(small_record.network, large_record.network, point.threshold), evaluation,
              {c.key: c.violation(evaluation.get(c.metric)) for c in env.constraints if evaluation.get(c.metric) is not None})
             for point, evaluation in zip(result.points, evaluations)]
    added = add_cascade_trials(study, folder, plans, artifacts=relative, worker=env.worker,
                               derived_from=(small_record.number, large_record.number))  # skips what is stored, under the lock
    progress.log(f"cascade: {len(added)} plan(s) added to the front's candidates"
                 + (f" (trials {added[0]} to {added[-1]})" if added else " (all stored before)"))
    return added


def cascade_evaluation(point, result, small_trial: int, large_trial: int, *, folder: str) -> Evaluation:
    """One operating point as a plan's metrics: the expected figures per frame over the test split.

    ``folder`` is the cascade's folder relative to the study folder (as the trial's ``artifacts``).
    """
    metrics = point.metrics()
    costs = result.costs[result.router]
    share = point.share_sent
    metrics["link_ms"] = share * (costs.upload_ms + costs.download_ms)
    metrics["link_bytes"] = share * costs.upload_bytes  # device to server, as every plan counts it (the mask comes back)
    if metrics.get("fps"):
        metrics["uplink_mbps"] = metrics["link_bytes"] * 8 * metrics["fps"] / 1e6
    index = {p.sent: p for p in result.curves.get("oracle", ())}
    random = {p.sent: p for p in result.curves.get("random", ())}
    details: dict[str, Any] = {
        "folder": folder, "router": result.router, "target": result.target, "threshold": point.threshold,
        "share_sent": share, "sent": point.sent, "images": point.images, "small_trial": small_trial, "large_trial": large_trial,
        "oracle_iou": getattr(index.get(point.sent), "iou", None), "random_iou": getattr(random.get(point.sent), "iou", None),
        "small_alone_iou": result.references["small"].iou, "large_alone_iou": result.references["large"].iou,
        "rank_correlation": result.rank_correlation.get(result.router),
        "costs": costs._asdict(),
        "latency_is": "expected per frame over the test split: device graph + share sent x (upload + large network + download)",
        "placement": dict(result.measured_on),
    }
    return Evaluation(metrics={k: v for k, v in metrics.items() if v is not None},
                      per_class_iou={k: v for k, v in point.class_iou.items() if v is not None},
                      details={"cascade": details, "latency": result.latencies.get(f"device-{result.router}", {}),
                               "iou_source": "each test image scored by the model that handled it (ONNX, onnxruntime)"})
