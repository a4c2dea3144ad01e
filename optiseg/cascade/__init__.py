"""Cascades: a small network on the device, a large one on a server, and a router that sends only the hard images.

>>> from optiseg.cascade import CascadeMember, build_cascade, cascade_runners, write_cascade_deployment
>>> small = CascadeMember.from_run_folder("runs/train/small")     # or CascadeMember(network, onnx, checkpoint)
>>> large = CascadeMember.from_run_folder("runs/train/large")
>>> result = build_cascade(small, large, cache=cache, runners=lambda: cascade_runners(device_config, server_config),
...                        link=link, folder="runs/cascade/small+large")
>>> [(p.threshold, p.share_sent, p.iou, p.latency_ms) for p in result.points]
>>> write_cascade_deployment(result, "deploy/", threshold=result.points[5].threshold)

* :mod:`._scores` -- per-image confusion matrices and IoU of one model on one split;
* :mod:`._features`, :mod:`._routers` -- the small model's output statistics, the ridge baseline, the decision network;
* :mod:`._rows` -- the routers' training rows from images the small model did not train on (validation split, cross-fitting);
* :mod:`._curve` -- the operating curve, the oracle and random references (pure functions);
* :mod:`._build` -- :func:`build_cascade`, which makes and keeps all of it below one folder, and
  :func:`read_cascade_result` / :func:`find_cascade_result`, which read a kept curve back (wherever the folder is now);
* :mod:`._lock` -- :func:`cascade_lock`: one process at a time builds in a cascade's folder;
* :mod:`._study` -- :func:`add_cascade_trials`: a cascade's points as a study's trials, stored once;
* :mod:`._deploy` -- :func:`write_cascade_deployment`: the device and server scripts, models, threshold table and README.
"""

from ._build import (
    CURVE,
    ROUTERS,
    CascadeMember,
    CascadeResult,
    CascadeSettings,
    build_cascade,
    find_cascade_result,
    read_cascade_result,
)
from ._curve import (
    CurveCosts,
    CurvePoint,
    best_within,
    cascade_point,
    oracle_curve,
    random_curve,
    router_curve,
    spearman,
    thresholds_for,
)
from ._deploy import default_threshold, write_cascade_deployment, write_cascade_files
from ._lock import cascade_lock
from ._pair import cascade_runners, pick_pair, same_machine, study_member
from ._routers import HeadTraining, RidgeRouter, fit_ridge
from ._rows import CrossFit, RouterRows, cross_fit_rows, fold_assignment, rows_from_split
from ._scores import TARGETS, PerImageScores, score_per_image, stored_per_image
from ._study import add_cascade_trials

__all__ = [
    "CURVE",
    "ROUTERS",
    "TARGETS",
    "CascadeMember",
    "CascadeResult",
    "CascadeSettings",
    "CrossFit",
    "CurveCosts",
    "CurvePoint",
    "HeadTraining",
    "PerImageScores",
    "RidgeRouter",
    "RouterRows",
    "add_cascade_trials",
    "best_within",
    "build_cascade",
    "cascade_lock",
    "cascade_runners",
    "cascade_point",
    "cross_fit_rows",
    "default_threshold",
    "find_cascade_result",
    "fit_ridge",
    "fold_assignment",
    "oracle_curve",
    "pick_pair",
    "random_curve",
    "read_cascade_result",
    "router_curve",
    "rows_from_split",
    "same_machine",
    "score_per_image",
    "spearman",
    "stored_per_image",
    "study_member",
    "thresholds_for",
    "write_cascade_deployment",
    "write_cascade_files",
]
