"""Build a cascade from two trained networks: per-image scores, routers, the device graph, measured costs, the curve.

:func:`build_cascade` writes everything below its ``folder`` and reuses what is
there, so calling it again (after an interruption, or for another threshold
count) redoes nothing finished::

    folder/
      .lock                            held while a process builds here (:func:`~optiseg.cascade.cascade_lock`)
      identity.json                    the networks, data set and router settings these files belong to
      scores/{small,large}-<split>.json per-image confusion matrices, IoU and per-class IoU (each model's ONNX)
      router/rows-val.npz              the router's training rows (rows-crossfit.npz, crossfit.json with cross-fitting)
      router/baseline.json             the ridge router on output statistics
      router/decision.pt               the decision network's head (state dict and what its fit chose)
      device-<router>.onnx             the small network with that router: image -> (logits, quality)
      latency/<part>.json              each part measured on its runner
      curve.json                       the result (:class:`CascadeResult`) of the folder's owner
      curves/<digest>.json             the result of any other curve (other points, router, runners or link)

``curve.json`` belongs to the folder's owner (``build_cascade(owner=True)``):
in a study's ``cascades/``, the study, whose cascade plans are made from it, so
deploying one of them later gives the figures it was stored with; outside a
study, the command that made the folder. It is written once, by the owner's first
curve; any other curve (a build that is not the owner, e.g. ``optiseg cascade
STUDY`` with other settings than the study's, or the owner's with other runners)
is kept in ``curves/`` under a digest of its settings.
The paths in these files are relative to the folder (the members' models too,
e.g. ``../../candidates/<key>/train/model.onnx``; ``"paths": "relative"``
says so), so a study folder can move.

Nothing here trains the small or the large network unless
``CascadeSettings.router_data`` is ``"crossfit"``, which trains the small
network ``folds`` times (into ``folder/crossfit/fold-k``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager as ContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_json_atomic
from ..devices import p90_of
from ..errors import UsageError
from ..network import Network
from ._curve import CurveCosts, CurvePoint, cascade_point, oracle_curve, random_curve, router_curve, spearman
from ._device_graph import export_device_graph, profile_macs, router_scores
from ._features import statistic_names
from ._lock import cascade_lock
from ._routers import (
    DecisionEnsemble,
    DecisionHead,
    DecisionNetwork,
    HeadTraining,
    LinearHead,
    RidgeRouter,
    RoutedModel,
    feature_tensor,
    fit_decision_heads,
    fit_ridge,
)
from ._rows import RouterRows, concat_rows, cross_fit_rows, rows_from_split
from ._scores import TARGETS, PerImageScores, file_sha256, sample_names, stored_per_image

ROUTERS = ("decision", "baseline")
ROUTER_DATA = ("val", "crossfit")
RESULT_FORMAT = "optiseg-cascade-1"
CURVE = "curve.json"  # the first curve built in a folder: what a study's cascade plans were made from, never overwritten
OTHER_CURVES = "curves"  # every other curve of the folder, as <digest of its settings>.json


@dataclass(frozen=True)
class CascadeMember:
    """A trained network of a cascade: what it is, its deployed ONNX file, and its weights (needed for the small one)."""

    network: Network
    onnx: Path
    checkpoint: Path | None = None
    label: str = ""

    @classmethod
    def from_run_folder(cls, folder: str | Path, label: str | None = None) -> CascadeMember:
        """The network trained in an ``optiseg train`` run folder (or a study's ``candidates/<key>/train``)."""
        folder = Path(folder)
        metrics_file, onnx, checkpoint = folder / "metrics.json", folder / "model.onnx", folder / "best.pt"
        for path, what in ((metrics_file, "metrics.json"), (onnx, "model.onnx"), (checkpoint, "best.pt")):
            if not path.is_file():
                raise UsageError(f"{folder} is not a finished training run: {what} is missing",
                                 hint="give the folder `optiseg train -o` wrote (run the same command again to finish it)")
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            network = Network.create(metrics["model"], metrics["knobs"], metrics["resolution"],
                                     in_channels=int(metrics["in_channels"]), num_classes=int(metrics["num_classes"]))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{metrics_file} cannot be read as a training run's metrics: {exc}") from None
        return cls(network=network, onnx=onnx, checkpoint=checkpoint, label=label or str(folder))

    def as_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """JSON-safe; with ``relative_to``, its files' paths relative to that folder (how a cascade's folder keeps them)."""
        return {"network": self.network.as_dict(), "key": self.network.key, "onnx": _stored_path(self.onnx, relative_to),
                "checkpoint": None if self.checkpoint is None else _stored_path(self.checkpoint, relative_to), "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], folder: Path | None = None, written_in: Path | None = None,
                  base: Path | None = None) -> CascadeMember:
        """Read what :meth:`as_dict` wrote; relative paths are below ``base`` (see :func:`_located`)."""
        checkpoint = data.get("checkpoint")
        return cls(network=Network.from_dict(data["network"]), onnx=_located(data["onnx"], folder, written_in, base),
                   checkpoint=None if checkpoint is None else _located(checkpoint, folder, written_in, base),
                   label=data.get("label", ""))


@dataclass(frozen=True)
class CascadeSettings:
    """How a cascade is built. The defaults cost no training of the small or the large network."""

    router: str = "decision"  # the router the cascade deploys: decision | baseline (both are trained and reported)
    target: str = "accuracy"  # what the routers predict of the small network per image: accuracy (pixel accuracy) | iou
    router_data: str = "val"  # val: the validation split; crossfit: also K-fold cross-fitting on train (costs `folds` trainings)
    flip: bool = False  # also each router-training image's mirror image
    folds: int = 3  # cross-fitting folds (router_data "crossfit" only)
    points: int = 21  # thresholds, spread over the quantiles of the router's test scores
    random_draws: int = 200  # draws averaged for the random router
    seed: int = 0
    threads: int = 0  # onnxruntime threads when scoring on this machine (0: onnxruntime decides)
    score_splits: tuple[str, ...] = ("train", "val", "test")  # splits each model's per-image scores are kept for
    head: HeadTraining = field(default_factory=HeadTraining)
    training: Any = None  # TrainingConfig for cross-fitting (default: TrainingConfig())

    def __post_init__(self) -> None:
        if self.router not in ROUTERS:
            raise UsageError(f"router {self.router!r} is unknown: use one of {', '.join(ROUTERS)}")
        if self.target not in TARGETS:
            raise UsageError(f"target {self.target!r} is unknown: use accuracy (the share of pixels right) or iou (the image's own IoU)")
        if self.router_data not in ROUTER_DATA:
            raise UsageError(f"router_data {self.router_data!r} is unknown: use val (no training) or crossfit (costs {self.folds} trainings)")
        if self.router_data == "crossfit" and self.folds < 2:
            raise UsageError(f"folds={self.folds!r} is invalid: cross-fitting needs at least 2 folds")
        if self.points < 2:
            raise UsageError(f"points={self.points!r} is invalid: an operating curve needs at least 2 thresholds")
        if "test" not in self.score_splits:
            raise UsageError("score_splits must include test: the curve is measured on the test split")

    def artifacts_identity(self) -> dict[str, Any]:
        """What the routers and their files depend on (a change means another folder)."""
        identity = {"target": self.target, "router_data": self.router_data, "flip": self.flip, "seed": self.seed, "head": asdict(self.head)}
        if self.router_data == "crossfit":
            identity["folds"] = self.folds
            identity["training"] = None if self.training is None else self.training.model_dump(mode="json")
        return identity

    def curve_identity(self) -> dict[str, Any]:
        """What only the curve depends on (a change remakes ``curve.json`` from the files already there)."""
        return {"router": self.router, "points": self.points, "random_draws": self.random_draws, "seed": self.seed}


@dataclass(frozen=True)
class CascadeResult:
    """A cascade's operating curve and everything it was measured with.

    ``curves`` holds every router's points (``decision``, ``baseline``) and the references at
    the deployed router's shares (``oracle``, ``random``); ``points`` is the deployed router's.
    ``target`` is what the routers predict of the small network (``accuracy`` or ``iou``).
    ``references``: ``small`` (every frame on the device, small network alone) and ``large``
    (every frame sent, no model on the device).
    """

    folder: Path
    small: CascadeMember
    large: CascadeMember
    router: str
    target: str
    curves: Mapping[str, tuple[CurvePoint, ...]]
    references: Mapping[str, CurvePoint]
    costs: Mapping[str, CurveCosts]
    rank_correlation: Mapping[str, float | None]  # each router's Spearman correlation with the true target, test split
    router_fit: Mapping[str, Any]
    per_image: Mapping[str, Mapping[str, Mapping[str, float]]]  # model -> split -> mean per-image iou and accuracy
    latencies: Mapping[str, Mapping[str, Any]]  # each measured part: LatencyResult.to_dict()
    measured_on: Mapping[str, str]  # device, server (labels) and the link
    device_models: Mapping[str, Path]  # each router's device graph
    class_names: tuple[str, ...] = ()
    curve_file: Path | None = None  # where the result is kept (``curve.json``, or one in ``curves/``)

    @property
    def points(self) -> tuple[CurvePoint, ...]:
        """The deployed router's operating points, by threshold."""
        return self.curves[self.router]

    @property
    def device_model(self) -> Path:
        return self.device_models[self.router]

    def as_dict(self, relative: bool = False) -> dict[str, Any]:
        """JSON-safe. ``relative``: as a curve file keeps it, every path relative to :attr:`folder` (which may move);
        ``folder`` itself is still written, absolute, where it was then (read only by older optiseg versions)."""
        base = Path(self.folder) if relative else None
        stored = {
            "format": RESULT_FORMAT,
            "folder": str(Path(self.folder).absolute()) if relative else str(self.folder),
            "small": self.small.as_dict(base),
            "large": self.large.as_dict(base),
            "router": self.router,
            "target": self.target,
            "curves": {name: [p.as_dict() for p in points] for name, points in self.curves.items()},
            "references": {name: p.as_dict() for name, p in self.references.items()},
            "costs": {name: c._asdict() for name, c in self.costs.items()},
            "rank_correlation": dict(self.rank_correlation),
            "router_fit": dict(self.router_fit),
            "per_image": {k: {split: dict(m) for split, m in v.items()} for k, v in self.per_image.items()},
            "latencies": {k: dict(v) for k, v in self.latencies.items()},
            "measured_on": dict(self.measured_on),
            "device_models": {k: _stored_path(v, base) for k, v in self.device_models.items()},
            "class_names": list(self.class_names),
        }
        if relative:
            stored["paths"] = "relative"  # to the folder the file is in (files before kept them as given)
        else:
            stored["curve_file"] = None if self.curve_file is None else str(self.curve_file)
        return stored

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], folder: str | Path | None = None, curve_file: Path | None = None) -> CascadeResult:
        """Read what :meth:`as_dict` wrote. ``folder``: where the file was found, which relative paths are below (default:
        the ``folder`` it names). Absolute paths (files written before paths were relative) are kept where they exist,
        else looked for at the same place relative to ``folder``, for a study folder moved since."""
        if data.get("format") != RESULT_FORMAT:
            raise ValueError(f"not a cascade result (format {data.get('format')!r})")
        written_in = Path(data["folder"])
        folder = written_in if folder is None else Path(folder)
        base = folder if data.get("paths") == "relative" else None  # older files: relative paths as they were given
        return cls(
            folder=folder, small=CascadeMember.from_dict(data["small"], folder, written_in, base),
            large=CascadeMember.from_dict(data["large"], folder, written_in, base),
            router=data["router"], target=data["target"],
            curves={name: tuple(CurvePoint.from_dict(p) for p in points) for name, points in data["curves"].items()},
            references={name: CurvePoint.from_dict(p) for name, p in data["references"].items()},
            costs={name: CurveCosts(**c) for name, c in data["costs"].items()},
            rank_correlation=dict(data["rank_correlation"]), router_fit=dict(data["router_fit"]),
            per_image={k: {split: dict(m) for split, m in v.items()} for k, v in data["per_image"].items()},
            latencies={k: dict(v) for k, v in data["latencies"].items()}, measured_on=dict(data["measured_on"]),
            device_models={k: _located(v, folder, written_in, base) for k, v in data["device_models"].items()},
            class_names=tuple(data.get("class_names", ())), curve_file=curve_file,
        )


def read_cascade_result(path: str | Path, curve_key: Mapping[str, Any] | None = None) -> CascadeResult | None:
    """The result kept in a curve file (or in ``curve.json`` when ``path`` is a cascade's folder), if it is the curve
    of ``curve_key`` (any, without one); None when it is missing, another curve's or cannot be read (an older or torn
    file). Its paths are found below the folder the file is in now."""
    path = Path(path)
    if path.is_dir():
        path = path / CURVE
    folder = path.parent.parent if path.parent.name == OTHER_CURVES else path.parent
    stored = _read_json(path)
    if not isinstance(stored, dict) or (curve_key is not None and stored.get("key") != json.loads(json.dumps(curve_key))):
        return None
    try:
        return CascadeResult.from_dict(stored["result"], folder, curve_file=path)
    except (ValueError, KeyError, TypeError):
        return None


def find_cascade_result(folder: str | Path, threshold: float) -> CascadeResult | None:
    """The owner's result in ``folder`` (``curve.json``: what a study's cascade plans are made from) when it has a
    point at ``threshold`` (a stored plan's); None when it has none."""
    result = read_cascade_result(Path(folder) / CURVE)
    return result if result is not None and any(p.threshold == threshold for p in result.points) else None


def curve_path(folder: Path, curve_key: Mapping[str, Any], owner: bool) -> Path:
    """Where the curve of ``curve_key`` is kept: ``curve.json`` when it holds that curve, or when it is free (or torn)
    and this is the folder's owner; else ``curves/<digest>.json``. ``curve.json`` is never overwritten: the owner's
    first curve stays what its plans were made from (a worker on another host, whose runners have other keys, keeps
    its own beside it)."""
    key = json.loads(json.dumps(curve_key))
    stored = _read_json(folder / CURVE)
    same = isinstance(stored, dict) and stored.get("key") == key
    if same or (owner and not (isinstance(stored, dict) and "result" in stored)):
        return folder / CURVE
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return folder / OTHER_CURVES / f"{digest}.json"


def _stored_path(path: str | Path, relative_to: Path | None) -> str:
    return str(path) if relative_to is None else os.path.relpath(path, relative_to)


def _located(stored: str, folder: Path | None, written_in: Path | None, base: Path | None) -> Path:
    """A path a result keeps: a relative one is below ``base`` (None, an older file: below ``folder`` if it is there,
    else as given); an absolute one (older files) as written where it exists, else at the same place relative to
    ``folder`` as it was to ``written_in`` (the folder has moved)."""
    path = Path(stored)
    if not path.is_absolute():
        if base is None:
            below = None if folder is None else Path(os.path.normpath(folder / path))
            return below if below is not None and below.exists() else path
        return Path(os.path.normpath(base / path))
    if folder is None:
        return path
    if path.exists() or written_in is None or not written_in.is_absolute():
        return path
    moved = Path(os.path.normpath(folder / os.path.relpath(path, written_in)))
    return moved if moved.exists() else path


def build_cascade(small: CascadeMember, large: CascadeMember, *, cache, runners: Callable[[], ContextManager[tuple]],
                  link, folder: str | Path, settings: CascadeSettings = CascadeSettings(),
                  stage: Callable[[str], None] = lambda text: None, owner: bool = True) -> CascadeResult:
    """Build (or read back) the cascade of ``small`` on the device and ``large`` on the server.

    ``cache`` is the data set's :class:`~optiseg.data.DatasetCache`; ``runners()`` opens the device's runner, which
    times the small network with its router, and the server's, which times the large network (any
    :class:`~optiseg.devices.Runner`; e.g. ``lambda: cascade_runners(device_config, server_config)``); ``link``
    (:class:`~optiseg.config.LinkConfig`) gives the transfer times. ``stage`` is told what is being done. See the
    module docstring for the files.

    ``owner``: the curve is the folder's own (``curve.json``; see the module docstring), else it is kept in
    ``curves/``. One process builds in ``folder`` at a time (:func:`~optiseg.cascade.cascade_lock`); one that finds
    another building there waits for it, then reuses what it made, holding no runner while it waits (a device
    pool's machines stay free for the study's other workers). A curve built already is read without the lock (a
    read-only folder serves it).
    """
    folder = Path(folder)
    _check_members(small, large, cache.dataset)
    identity = _identity(small, large, cache.dataset, settings)
    if _read_json(folder / "identity.json") == json.loads(json.dumps(identity)):
        with runners() as (device_runner, server_runner):
            curve_key = _curve_key(settings, device_runner, server_runner, link)
            done = read_cascade_result(curve_path(folder, curve_key, owner), curve_key)
        if done is not None:
            return done
    with cascade_lock(folder, waiting=stage), runners() as (device_runner, server_runner):
        _claim(folder, identity)
        curve_key = _curve_key(settings, device_runner, server_runner, link)  # a pool may lend another machine now
        path = curve_path(folder, curve_key, owner)
        done = read_cascade_result(path, curve_key)
        if done is not None:
            return done
        result = _build(small, large, cache, device_runner, server_runner, link, folder, settings, stage)
        write_json_atomic(path, {"key": curve_key, "result": result.as_dict(relative=True)})
        return replace(result, curve_file=path)


def _curve_key(settings: CascadeSettings, device_runner, server_runner, link) -> dict[str, Any]:
    return {**settings.curve_identity(), "device": device_runner.device_key, "server": server_runner.device_key,
            "link": link.model_dump(mode="json")}


def _build(small: CascadeMember, large: CascadeMember, cache, device_runner, server_runner, link, folder: Path,
           settings: CascadeSettings, stage) -> CascadeResult:
    """Every part of the cascade (each made once and kept in ``folder``), then its curves."""
    scores = _per_image_scores(small, large, cache, folder, settings, stage)
    model = _small_model(small)
    tapped = feature_tensor(model.stages())
    rows, fit_notes = _router_rows(small, model, tapped, cache, folder, settings, stage)
    routers = _fit_routers(rows, cache.dataset, folder, settings, stage)
    device_models, device_macs_of = _device_graphs(routers, model, tapped, small, large, cache, folder, settings, stage)
    test = cache.resized("test", small.network.resolution)
    router_test_scores = {name: router_scores(path, test, in_channels=small.network.in_channels, threads=settings.threads)
                          for name, path in device_models.items()}

    latencies = {f"device-{name}": _measured(folder, f"device-{name}", path, device_runner, stage)
                 for name, path in device_models.items()}
    latencies["small"] = _measured(folder, "small", small.onnx, device_runner, stage)
    latencies["large"] = _measured(folder, "large", large.onnx, server_runner, stage)
    costs = {name: _costs(latencies[f"device-{name}"], device_macs_of[name], latencies["large"], large, link) for name in ROUTERS}

    small_test, large_test = scores["small", "test"], scores["large", "test"]
    curves = {name: router_curve(name, router_test_scores[name], small_test, large_test, costs[name], settings.points)
              for name in ROUTERS}
    counts = [p.sent for p in curves[settings.router]]
    curves["oracle"] = oracle_curve(small_test, large_test, costs[settings.router], counts)
    curves["random"] = random_curve(small_test, large_test, costs[settings.router], counts,
                                    draws=settings.random_draws, seed=settings.seed)
    alone = _costs(latencies["small"], profile_macs(model, small.network), latencies["large"], large, link)
    references = {
        "small": cascade_point("small", None, np.zeros(len(small_test), bool), small_test, large_test, alone),
        "large": cascade_point("large", None, np.ones(len(small_test), bool), small_test, large_test,
                               alone._replace(device_ms=0.0, device_p90_ms=0.0, device_macs=0)),
    }
    return CascadeResult(
        folder=folder, small=small, large=large, router=settings.router, target=settings.target, curves=curves,
        references=references, costs=costs,
        rank_correlation={name: spearman(router_test_scores[name], small_test.target(settings.target)) for name in ROUTERS},
        router_fit={**fit_notes, **_fit_summary(folder), "tapped": tapped},
        per_image={role: {split: {"iou": float(scores[role, split].iou.mean()), "accuracy": float(scores[role, split].accuracy.mean())}
                          for split in settings.score_splits} for role in ("small", "large")},
        latencies=latencies,
        measured_on={"device": device_runner.label, "server": server_runner.label, "link": link.describe()},
        device_models=device_models, class_names=tuple(cache.dataset.class_names),
    )


# ---------------------------------------------------------------- the parts


def _check_members(small: CascadeMember, large: CascadeMember, dataset) -> None:
    for role, member in (("small", small), ("large", large)):
        if not Path(member.onnx).is_file():
            raise UsageError(f"the {role} network's model file {member.onnx} does not exist",
                             hint="give a trained network (its train/model.onnx)")
        if member.network.num_classes != dataset.num_classes:
            raise UsageError(f"the {role} network ({member.network.describe()}) has {member.network.num_classes} logits; "
                             f"the data set needs {dataset.num_classes}", hint="pair networks trained on this data set")
    if small.checkpoint is None or not Path(small.checkpoint).is_file():
        raise UsageError(f"the small network's weights (best.pt) are missing{f' at {small.checkpoint}' if small.checkpoint else ''}",
                         hint="the router reads the small network's features: give its training run folder")


def _identity(small: CascadeMember, large: CascadeMember, dataset, settings: CascadeSettings) -> dict[str, Any]:
    return {
        "small": {"key": small.network.key, "onnx_sha256": file_sha256(small.onnx), "checkpoint_sha256": file_sha256(small.checkpoint)},
        "large": {"key": large.network.key, "onnx_sha256": file_sha256(large.onnx)},
        "data": dataset.fingerprint(),
        "settings": settings.artifacts_identity(),
    }


def _claim(folder: Path, identity: dict[str, Any]) -> None:
    """Write ``identity.json``, or refuse a folder that holds another cascade's files."""
    from ..training._run_folder import differences

    path = folder / "identity.json"
    stored = _read_json(path)
    if stored is not None and stored != json.loads(json.dumps(identity)):
        changes = differences(stored, identity)
        raise UsageError(f"{folder} holds another cascade ({'; '.join(changes[:3])}{'; ...' if len(changes) > 3 else ''})",
                         hint="give another folder, or delete this one to build the cascade again")
    if stored is None:
        write_json_atomic(path, identity)


def _per_image_scores(small: CascadeMember, large: CascadeMember, cache, folder: Path, settings: CascadeSettings,
                      stage) -> dict[tuple[str, str], PerImageScores]:
    """Each network's per-image scores on each split of ``settings.score_splits``, with its deployed ONNX model."""
    scores = {}
    for role, member in (("small", small), ("large", large)):
        for split in settings.score_splits:
            stage(f"scoring the {role} network on the {split} split, image by image")
            scores[role, split] = stored_per_image(
                folder / "scores" / f"{role}-{split}.json", member.onnx, split=split, cache=cache,
                in_channels=member.network.in_channels, resolution=member.network.resolution, threads=settings.threads,
            )
    return scores


def _device_graphs(routers, model, tapped: str, small: CascadeMember, large: CascadeMember, cache, folder: Path,
                   settings: CascadeSettings, stage) -> tuple[dict[str, Path], dict[str, int]]:
    """Each router's device graph (exported once) and its MACs."""
    paths, macs = {}, {}
    for name, router in routers.items():
        path = folder / f"device-{name}.onnx"
        routed = RoutedModel(model, router, num_logits=small.network.num_classes, tapped=tapped if name == "decision" else None).eval()
        if not path.is_file():
            stage(f"exporting the device graph: the small network with its {name} router")
            export_device_graph(routed, path, small=small.network, large=large.network, router=name, target=settings.target,
                                class_names=cache.dataset.class_names, example=cache.resized("val", small.network.resolution)[0][0])
        paths[name], macs[name] = path, profile_macs(routed, small.network)
    return paths, macs


def _costs(device: Mapping[str, Any], device_macs: int, server: Mapping[str, Any], large: CascadeMember, link) -> CurveCosts:
    """A frame's costs: the device part and the large network as measured; the image up and the mask down the link."""
    height, width = large.network.resolution
    up_bytes, down_bytes = height * width * 3, height * width  # the image as uint8 RGB, the mask as a uint8 class map
    return CurveCosts(device_ms=float(device["median_ms"]), server_ms=float(server["median_ms"]),
                      device_p90_ms=p90_of(device), server_p90_ms=p90_of(server),
                      upload_ms=link.upload_ms(up_bytes), download_ms=link.download_ms(down_bytes),
                      upload_bytes=up_bytes, download_bytes=down_bytes, device_macs=device_macs,
                      server_macs=profile_macs(large.network.build(), large.network))


def _small_model(small: CascadeMember) -> torch.nn.Module:
    from ..checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(small.checkpoint))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _router_rows(small: CascadeMember, model, tapped: str, cache, folder: Path, settings: CascadeSettings,
                 stage) -> tuple[RouterRows, dict[str, Any]]:
    """The router's training rows: the validation split (and its mirror images), plus cross-fitted training images if asked."""
    dataset = cache.dataset
    network = small.network
    path = folder / "router" / "rows-val.npz"
    if path.is_file():
        val = RouterRows.load(path)
    else:
        stage("the router's training rows: the validation split" + (" and its mirror images" if settings.flip else ""))
        val = rows_from_split(
            model, images=cache.resized("val", network.resolution), masks=cache.original_masks("val"),
            names=sample_names(dataset.val), split="val", class_names=dataset.class_names, binary=dataset.binary,
            in_channels=network.in_channels, num_logits=network.num_classes, tapped=tapped, flip=settings.flip,
        )
        val.save(path)
    parts = [val]
    if settings.router_data == "crossfit":
        crossfit_path = folder / "router" / "rows-crossfit.npz"
        if crossfit_path.is_file():
            parts.append(RouterRows.load(crossfit_path))
        else:
            from ..config import TrainingConfig

            stage(f"cross-fitting: training the small network {settings.folds} times, each without one fold of the training split")
            crossfit = cross_fit_rows(
                network, dataset=dataset, training=settings.training or TrainingConfig(), folds=settings.folds,
                folder=folder / "crossfit", deployed=model, tapped=tapped, flip=settings.flip, seed=settings.seed,
            )
            write_json_atomic(folder / "router" / "crossfit.json",
                              {"held_out": [list(f) for f in crossfit.held_out], "trained_on": [list(f) for f in crossfit.trained_on]})
            crossfit.rows.save(crossfit_path)
            parts.append(crossfit.rows)
    rows = concat_rows(parts)
    return rows, {"rows": len(rows), "source_images": int(len(np.unique(rows.groups))),
                  "sources": sorted({s.split("/")[0] for s in rows.sources}), "scored_by": sorted(set(rows.scored_by))}


def _fit_routers(rows: RouterRows, dataset, folder: Path, settings: CascadeSettings, stage) -> dict[str, torch.nn.Module]:
    """The baseline (ridge) and the decision network's head, fitted once and kept in ``folder/router``."""
    names = statistic_names(dataset.class_names)
    baseline_path = folder / "router" / "baseline.json"
    stored = _read_json(baseline_path)
    if stored is None:
        stage("fitting the baseline router (ridge on the small network's output statistics)")
        target = rows.target(settings.target)
        ridge = fit_ridge(rows.statistics, target, rows.groups, feature_names=names, seed=settings.seed)
        write_json_atomic(baseline_path, {"router": ridge.as_dict(),
                                          "train_rank_correlation": spearman(ridge.predict(rows.statistics), target)})
    else:
        ridge = RidgeRouter.from_dict(stored["router"])

    decision_path = folder / "router" / "decision.pt"
    if decision_path.is_file():
        saved = torch.load(decision_path, map_location="cpu", weights_only=True)
        head = DecisionEnsemble([DecisionHead(saved["inputs"], saved["classes"], hidden=saved["hidden"], dropout=saved["dropout"])
                                 for _ in range(saved["members"])])
        head.load_state_dict(saved["state_dict"])
    else:
        stage(f"training the decision network's heads ({settings.head.members}; frozen small-network features, "
              "spatial pyramid pooling, fully connected layers)")
        head, notes = fit_decision_heads(rows.vectors, rows.target(settings.target), rows.class_iou, rows.groups, settings.head)
        with torch.no_grad():
            fitted = head(torch.tensor(rows.vectors, dtype=torch.float32))[0].numpy()
        notes["train_rank_correlation"] = spearman(fitted, rows.target(settings.target))
        buffer_path = decision_path.with_name(".decision.pt.tmp")
        torch.save({"inputs": rows.vectors.shape[1], "classes": rows.class_iou.shape[1], "hidden": settings.head.hidden,
                    "members": settings.head.members,
                    "dropout": settings.head.dropout, "state_dict": head.state_dict(), "notes": notes}, buffer_path)
        buffer_path.replace(decision_path)
    head.eval()
    return {"decision": DecisionNetwork(head), "baseline": LinearHead(ridge)}


def _fit_summary(folder: Path) -> dict[str, Any]:
    baseline = _read_json(folder / "router" / "baseline.json") or {}
    decision = torch.load(folder / "router" / "decision.pt", map_location="cpu", weights_only=True)
    return {"baseline_alpha": baseline.get("router", {}).get("alpha"),
            "baseline_train_rank_correlation": baseline.get("train_rank_correlation"),
            "decision_epochs": decision["notes"].get("epochs"),
            "decision_train_rank_correlation": decision["notes"].get("train_rank_correlation")}


def _measured(folder: Path, name: str, model: Path, runner, stage) -> dict[str, Any]:
    """``model`` timed on ``runner``, or the figures kept in ``folder/latency/<name>.json`` for this file and device."""
    path = folder / "latency" / f"{name}.json"
    stored = _read_json(path)
    sha = file_sha256(model)
    if stored is not None and stored.get("model_sha256") == sha and stored.get("device_key") == runner.device_key:
        return stored
    stage(f"timing {name} on {runner.label}")
    result = runner.measure(model).to_dict()
    write_json_atomic(path, result)
    return result


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
