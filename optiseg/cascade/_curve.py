"""The operating curve of a cascade: pure functions of per-image confusions, router scores and measured costs.

An image goes to the large model when its router score (the predicted IoU of
the small model) is below the threshold. For a set of sent images:

* ``iou``, ``miou``, ``pixel_accuracy``: the summed confusion matrices of the
  model that handled each image, scored as optiseg scores every plan
  (foreground IoU for binary data, mean IoU otherwise); ``mean_image_iou``:
  the mean of the per-image IoUs;
* ``latency_ms`` = device + share x (upload + server + download): the expected
  end-to-end latency per frame; ``device_latency_ms`` = device (the device
  runs the small model and its router on every frame); ``server_latency_ms``
  = share x server; ``link_bytes`` = share x (image up + mask down);
  ``macs`` = device MACs + share x server MACs.

References at equal share: the **oracle** knows every image's true result
under both models and sends the images where the large model gets the most
pixels right that the small one got wrong (no router can do better on the
pixel accuracy at that share, and the summed IoU follows the wrong pixels
closely); the **random** router sends as many images chosen at random
(figures averaged over seeded draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..plans import tail_latency_ms
from ._scores import PerImageScores, class_iou_of, headline_iou, mean_present


class CurveCosts(NamedTuple):
    """What one frame costs in each part: latencies measured on their runners, bytes and MACs counted."""

    device_ms: float  # the small network and its router, on the device, every frame
    server_ms: float  # the large network, on the server, per sent frame
    upload_ms: float  # one image up the link (bandwidth and half the round trip)
    download_ms: float  # one mask down the link
    upload_bytes: int  # the image, uint8, at the large network's input size
    download_bytes: int  # the mask, uint8 class map, at the large network's input size
    device_macs: int
    server_macs: int
    device_p90_ms: float | None = None  # the device part's 90th percentile over runs (None: a curve kept before these)
    server_p90_ms: float | None = None

    @property
    def remote_ms(self) -> float:
        """What one sent frame adds: upload, the large network on the server, download."""
        return self.upload_ms + self.server_ms + self.download_ms


class CurvePoint(NamedTuple):
    """One operating point: a threshold (None for references), the images it sends and what it scores and costs."""

    router: str
    threshold: float | None
    sent: int
    images: int
    iou: float | None
    miou: float | None
    pixel_accuracy: float
    mean_image_iou: float
    class_iou: Mapping[str, float | None]
    latency_ms: float
    device_latency_ms: float
    server_latency_ms: float
    link_bytes: float
    macs: float
    latency_p90_ms: float | None = None  # within which nine frames in ten are done (see cascade_point)

    @property
    def share_sent(self) -> float:
        return self.sent / self.images if self.images else 0.0

    def metrics(self) -> dict[str, float]:
        """The point's figures under the names of :data:`optiseg.plans.METRICS` (absent ones left out)."""
        figures = {"iou": self.iou, "miou": self.miou, "latency_ms": self.latency_ms, "latency_p90_ms": self.latency_p90_ms,
                   "device_latency_ms": self.device_latency_ms, "server_latency_ms": self.server_latency_ms,
                   "link_bytes": self.link_bytes, "macs": self.macs,
                   "fps": 1000.0 / self.latency_ms if self.latency_ms > 0 else None}
        return {name: float(value) for name, value in figures.items() if value is not None}

    def as_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "class_iou": dict(self.class_iou), "share_sent": self.share_sent}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurvePoint:
        point = cls(**{name: data[name] for name in cls._fields if name in data})
        if point.latency_p90_ms is None:  # a curve kept before p90s: from the medians (the sent frame's path, if over a tenth)
            share = point.share_sent
            sent_ms = point.device_latency_ms + (point.latency_ms - point.device_latency_ms) / share if share else point.latency_ms
            point = point._replace(latency_p90_ms=tail_latency_ms((point.device_latency_ms, sent_ms), (1.0 - share, share)))
        return point


def cascade_point(router: str, threshold: float | None, sent: np.ndarray, small: PerImageScores,
                  large: PerImageScores, costs: CurveCosts) -> CurvePoint:
    """The figures of a cascade that sends the images where ``sent`` is True to the large model."""
    sent = np.asarray(sent, bool)
    share = float(sent.mean()) if len(sent) else 0.0
    mixed = small.mixed_with(large, sent)
    pooled = small.pooled(mixed)
    image_iou = np.where(sent, large.iou, small.iou)
    return CurvePoint(
        router=router, threshold=threshold, sent=int(sent.sum()), images=len(sent),
        iou=pooled.primary_iou, miou=pooled.mean_iou, pixel_accuracy=_accuracy(mixed.sum(axis=0)),
        mean_image_iou=float(image_iou.mean()) if len(image_iou) else 0.0,
        class_iou=dict(zip(pooled.class_names, pooled.iou)),
        latency_ms=costs.device_ms + share * costs.remote_ms,
        device_latency_ms=costs.device_ms,
        server_latency_ms=share * costs.server_ms,
        link_bytes=share * (costs.upload_bytes + costs.download_bytes),
        macs=costs.device_macs + share * costs.server_macs,
        latency_p90_ms=_tail_ms(costs, share),
    )


def _tail_ms(costs: CurveCosts, share: float) -> float:
    """The time within which nine frames in ten are done: the device part's alone while at most a tenth are sent, else
    a sent frame's whole path (each measured part at its 90th percentile over runs, summed as split plans do)."""
    device = costs.device_ms if costs.device_p90_ms is None else costs.device_p90_ms
    server = costs.server_ms if costs.server_p90_ms is None else costs.server_p90_ms
    return tail_latency_ms((device, device + costs.upload_ms + server + costs.download_ms), (1.0 - share, share))


def thresholds_for(scores: np.ndarray, points: int) -> list[float]:
    """Thresholds spread over the quantiles of ``scores``: each sends a share of about j / (points - 1) of them, j = 0..points-1.

    A threshold lies halfway between two neighbouring scores; the first sends none, the last every image.
    """
    if points < 2:
        raise ValueError(f"an operating curve needs at least 2 points, not {points}")
    ordered = np.sort(np.asarray(scores, np.float64))
    n = len(ordered)
    if n == 0:
        return []
    thresholds = []
    for k in sorted({int(round(j * n / (points - 1))) for j in range(points)}):
        if k == 0:
            thresholds.append(float(ordered[0]))
        elif k == n:
            thresholds.append(float(np.nextafter(ordered[-1], np.inf)))
        else:
            thresholds.append(float((ordered[k - 1] + ordered[k]) / 2))
    return sorted(set(thresholds))


def router_curve(router: str, scores: np.ndarray, small: PerImageScores, large: PerImageScores, costs: CurveCosts,
                 points: int = 21) -> tuple[CurvePoint, ...]:
    """The router's points: one per threshold of :func:`thresholds_for` (an image is sent when its score is below it)."""
    scores = np.asarray(scores, np.float64)
    if len(scores) != len(small):
        raise ValueError(f"{len(scores)} router scores for {len(small)} images")
    curve, seen = [], set()
    for threshold in thresholds_for(scores, points):
        sent = scores < threshold
        if sent.tobytes() in seen:
            continue
        seen.add(sent.tobytes())
        curve.append(cascade_point(router, threshold, sent, small, large, costs))
    return tuple(curve)


def oracle_curve(small: PerImageScores, large: PerImageScores, costs: CurveCosts, counts: Sequence[int]) -> tuple[CurvePoint, ...]:
    """The oracle at each count of sent images: the images where the large model gets the most more pixels right go first."""
    gain = large.correct - small.correct
    order = np.lexsort((small.iou, -gain))  # largest gain first; among equal gains the worst small IoU first
    return tuple(cascade_point("oracle", None, _first(order, count), small, large, costs) for count in counts)


def random_curve(small: PerImageScores, large: PerImageScores, costs: CurveCosts, counts: Sequence[int], *,
                 draws: int = 200, seed: int = 0) -> tuple[CurvePoint, ...]:
    """A random router at each count of sent images: every figure averaged over ``draws`` seeded random choices.

    Each draw's IoU is taken from its own summed confusion matrix, as :func:`cascade_point` does.
    """
    rng = np.random.default_rng(seed)
    n, classes = len(small), len(small.class_names)
    ranks = np.argsort(np.stack([rng.permutation(n) for _ in range(draws)]), axis=1)  # (draws, images): each image's place
    base = small.confusions.sum(axis=0).reshape(-1).astype(np.float64)
    gain = (large.confusions - small.confusions).reshape(n, -1).astype(np.float64)
    points = []
    for count in counts:
        sent = ranks < count  # (draws, images)
        class_iou = class_iou_of((base + sent @ gain).reshape(draws, classes, classes))
        primary = headline_iou(class_iou, small.binary)
        image_iou = np.where(sent, large.iou, small.iou).mean(axis=1)
        correct = small.correct.sum() + sent @ (large.correct - small.correct)
        counted = small.confusions.sum() + sent @ (large.confusions.sum(axis=(1, 2)) - small.confusions.sum(axis=(1, 2)))
        point = cascade_point("random", None, np.arange(n) < count, small, large, costs)
        points.append(point._replace(
            iou=_mean_or_none(primary), miou=_mean_or_none(mean_present(class_iou)),
            pixel_accuracy=float((correct / np.maximum(counted, 1)).mean()), mean_image_iou=float(image_iou.mean()),
            class_iou={name: _mean_or_none(class_iou[:, c]) for c, name in enumerate(small.class_names)},
        ))
    return tuple(points)


def _first(order: np.ndarray, count: int) -> np.ndarray:
    sent = np.zeros(len(order), bool)
    sent[order[:count]] = True
    return sent


def _accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 1.0


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean over draws of the draws where the figure exists."""
    known = values[~np.isnan(values)]
    return float(known.mean()) if len(known) else None


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None when either side is constant or empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} values cannot be correlated")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def best_within(points: Sequence[CurvePoint], reference_iou: float, max_loss: float, key: str = "macs") -> CurvePoint | None:
    """The point with the lowest ``key`` among those whose IoU is at most ``max_loss`` below ``reference_iou`` (None if none)."""
    eligible = [p for p in points if p.iou is not None and p.iou >= reference_iou - max_loss - 1e-12]
    return min(eligible, key=lambda p: (getattr(p, key), -(p.iou or 0.0))) if eligible else None
