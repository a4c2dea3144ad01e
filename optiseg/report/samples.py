"""Look at the output: the front's models on a few test images, ground truth and prediction overlaid.

Each model runs from its best checkpoint at its own resolution, exactly as
training scored it (resize the whole image in, resize the prediction back to
the image's size); the images are then shrunk to fit 320 pixels and embedded as
small JPEG data URIs, so a big study still gives a small page.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..layout import StudyLayout
from ..results import TrialRecord
from .data import knobs_text

# Class colours (class 0, the background, is left unpainted); the ground truth and every prediction use the same.
CLASS_COLORS = (
    (255, 59, 48), (52, 199, 89), (0, 122, 255), (255, 204, 0), (175, 82, 222),
    (255, 149, 0), (90, 200, 250), (255, 45, 85), (162, 132, 94), (88, 86, 214),
)
IGNORE_COLOR = (60, 60, 60)
IGNORE_INDEX = 255
ALPHA = 0.5


class SampleCell(NamedTuple):
    uri: str  # data:image/jpeg;base64,...
    caption: str


class SampleRow(NamedTuple):
    image: str  # the test image's file name
    cells: tuple[SampleCell | None, ...]  # ground truth, then one per model (None: that model could not run)


class SampleGrid(NamedTuple):
    columns: tuple[str, ...]  # "ground truth", then one label per model
    rows: tuple[SampleRow, ...]
    legend: tuple[tuple[str, str], ...]  # (class name, CSS colour)
    notes: tuple[str, ...]  # what could not be shown, and why


def spread(items: Sequence[Any], limit: int) -> list[Any]:
    """At most ``limit`` items evenly spread over ``items``, always keeping the first and the last."""
    if limit <= 0:
        return []
    if len(items) <= limit:
        return list(items)
    if limit == 1:
        return [items[0]]
    indices = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in indices]


def class_color(index: int) -> tuple[int, int, int]:
    """The overlay colour of class ``index`` (>= 1)."""
    return CLASS_COLORS[(index - 1) % len(CLASS_COLORS)]


def overlay(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with every class but 0 filled at 50 % and outlined in its colour; ignored pixels grey."""
    import cv2

    out = image.astype(np.float32)
    outlines = []
    for index in np.unique(classes):
        if index == 0:
            continue
        color = np.asarray(IGNORE_COLOR if index == IGNORE_INDEX else class_color(int(index)), np.float32)
        where = classes == index
        out[where] = (1 - ALPHA) * out[where] + ALPHA * color
        if index != IGNORE_INDEX:  # a solid outline keeps the region visible on objects of a similar colour
            inner = cv2.erode(where.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            outlines.append((where & ~inner.astype(bool), color))
    for edge, color in outlines:
        out[edge] = color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def jpeg_uri(image: np.ndarray, quality: int = 80) -> str:
    """An RGB uint8 image as a ``data:image/jpeg;base64,`` URI."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def display_size(shape: tuple[int, ...], max_side: int) -> tuple[int, int]:
    """(height, width) to show an image of ``shape`` within a ``max_side`` square, never enlarged."""
    height, width = shape[:2]
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class _Model(NamedTuple):
    network: Any
    resolution: tuple[int, int]
    in_channels: int


def _load_model(record: TrialRecord, study_folder: Path, num_classes: int) -> tuple[_Model | None, str | None]:
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..errors import OptisegError
    from ..models import parse_resolution

    if not record.artifacts:
        return None, f"trial {record.number}: no artifacts folder recorded"
    path = StudyLayout(study_folder).network_at(record.artifacts).best_checkpoint
    if not path.is_file():
        return None, f"trial {record.number}: no checkpoint at {path}"
    try:
        payload = load_checkpoint(path)
        network = model_from_checkpoint(payload).eval()
    except (OptisegError, KeyError, RuntimeError) as exc:
        return None, f"trial {record.number}: the checkpoint {path} cannot be used: {exc}"
    if int(payload["num_classes"]) != num_classes:
        return None, (f"trial {record.number}: the checkpoint predicts {payload['num_classes']} class logits, "
                      f"the data set needs {num_classes}")
    resolution = payload.get("resolution") or record.resolution
    try:
        size = parse_resolution(list(resolution) if isinstance(resolution, (list, tuple)) else resolution)
    except (OptisegError, TypeError):
        return None, f"trial {record.number}: unknown input resolution {resolution!r}"
    return _Model(network, size, int(payload["in_channels"])), None


def _predict(model: _Model, image: np.ndarray) -> np.ndarray:
    import torch

    from ..data import resize_image
    from ..training import predict_classes, to_model_input

    with torch.no_grad():
        batch = to_model_input(resize_image(image, model.resolution)[None], model.in_channels, torch.device("cpu"))
        logits = model.network(batch)[0]
        return predict_classes(logits, image.shape[:2]).numpy()


def _image_iou(truth: np.ndarray, prediction: np.ndarray, class_names: Sequence[str], binary: bool) -> float | None:
    from ..training import confusion_matrix, scores_from_confusion

    confusion = confusion_matrix(truth, prediction, len(class_names), IGNORE_INDEX)
    return scores_from_confusion(confusion, class_names, binary).primary_iou


def model_label(record: TrialRecord) -> str:
    latency = f" · {record.latency_ms:.2f} ms" if record.latency_ms is not None else ""
    return f"trial {record.number} · {record.resolution or ''} {knobs_text(record)}{latency}".replace("  ", " ")


def sample_grid(
    dataset: Any,
    front: Sequence[TrialRecord],
    study_folder: Path,
    *,
    images: int = 3,
    models: int = 6,
    max_side: int = 320,
) -> SampleGrid:
    """Ground truth and each chosen front model's prediction on ``images`` test images.

    ``dataset`` is an :class:`optiseg.data.Dataset` (``test``, ``class_names``,
    ``binary``, ``num_classes``, ``read_image``, ``read_mask``). At most
    ``models`` front models are shown, spread from the fastest to the most accurate.
    """
    import torch

    class_names = tuple(dataset.class_names)
    legend = tuple((name, "#%02x%02x%02x" % class_color(i)) for i, name in enumerate(class_names) if i > 0)
    notes: list[str] = []
    chosen = spread(list(front), models)
    if len(front) > len(chosen):
        notes.append(f"{len(chosen)} of the {len(front)} front models are shown, spread from the fastest to the most accurate")
    loaded = []
    for record in chosen:
        model, problem = _load_model(record, study_folder, dataset.num_classes)
        if problem:
            notes.append(problem)
        loaded.append(model)
    tests = spread(list(dataset.test), images)
    if not tests:
        notes.append("the data set has no test images")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few small images: threads only add contention, 100x slower on a busy machine
    try:
        rows = [_sample_row(sample, dataset, loaded, class_names, max_side, notes) for sample in tests]
    finally:
        torch.set_num_threads(threads)
    columns = ("ground truth", *(model_label(r) for r in chosen))
    return SampleGrid(columns, tuple(row for row in rows if row is not None), legend, tuple(notes))


def _sample_row(sample, dataset, loaded, class_names, max_side: int, notes: list[str]) -> SampleRow | None:
    """The ground truth and every model's prediction on one test image; None (and a note) if it cannot be read."""
    from ..data import resize_image, resize_mask

    try:
        image = dataset.read_image(sample)
        truth = dataset.read_mask(sample)
    except Exception as exc:  # a file that went missing or bad since the search: show the others
        notes.append(f"{Path(sample.image).name}: cannot be read: {exc}")
        return None
    shown = display_size(image.shape, max_side)
    small = resize_image(image, shown)
    cells: list[SampleCell | None] = [SampleCell(jpeg_uri(overlay(small, resize_mask(truth, shown))), "ground truth")]
    for model in loaded:
        if model is None:
            cells.append(None)
            continue
        prediction = _predict(model, image)
        iou = _image_iou(truth, prediction, class_names, dataset.binary)
        caption = f"IoU {iou:.3f}" if iou is not None and math.isfinite(iou) else "IoU n/a (no labelled pixels)"
        cells.append(SampleCell(jpeg_uri(overlay(small, resize_mask(prediction, shown))), caption))
    return SampleRow(Path(sample.image).name, tuple(cells))
