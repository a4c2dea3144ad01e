"""Scoring a network on a split the way the thesis did: resize the whole image in, resize the prediction back out."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import IGNORE, OriginalMasks, ResizedSplit
from ..preprocessing import LUMA_WEIGHTS, input_spec
from .metrics import SegmentationScores, confusion_matrix, scores_from_confusion


def to_model_input(images: np.ndarray, in_channels: int, device: torch.device) -> torch.Tensor:
    """uint8 RGB images (B, H, W, 3) -> the normalized float32 input (B, C, H, W) of :func:`input_spec`.

    One input channel is the luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601).
    The result is channels-last in memory, which convolutions run faster on.
    """
    spec = input_spec(in_channels)
    batch = torch.from_numpy(images).to(device, torch.float32, non_blocking=True, copy=True).div_(255.0)  # (B, H, W, 3): ours
    if in_channels == 1:
        batch = (batch * torch.tensor(LUMA_WEIGHTS, device=device)).sum(dim=-1, keepdim=True)
    batch.sub_(torch.tensor(spec.mean, device=device)).div_(torch.tensor(spec.std, device=device))
    return batch.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One image's logits (C, h, w) resized bilinearly to ``size`` = (H, W), in float32."""
    return F.interpolate(logits[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


def decide(logits: torch.Tensor) -> torch.Tensor:
    """Class indices (H, W) from logits (C, H, W): sigmoid > 0.5 for one logit, argmax for several."""
    if logits.shape[0] == 1:
        return (logits[0] > 0).to(torch.uint8)
    return logits.argmax(dim=0).to(torch.uint8)


def predict_classes(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class indices (H, W) at ``size`` from one image's logits (C, h, w), upsampled bilinearly before deciding."""
    return decide(upsample_logits(logits, size))


@dataclass(frozen=True)
class SplitEvaluation:
    """Loss and scores of a split, both at each image's original size."""

    loss: float
    confusion: np.ndarray
    scores: SegmentationScores


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    loss_fn: nn.Module,
    class_names: tuple[str, ...],
    binary: bool,
    in_channels: int,
    device: torch.device,
    amp: bool = False,
    batch_size: int = 16,
) -> SplitEvaluation:
    """Loss and IoU/Dice of ``model`` on one split; the model is left in eval mode.

    Each image is resized whole to the input size; its logits are resized back
    (bilinear) to the image's original size, where loss and confusion are taken.
    """
    return _evaluate(lambda batch: [model(batch)], model, images, original_masks, 1, loss_fn=loss_fn, class_names=class_names,
                     binary=binary, in_channels=in_channels, device=device, amp=amp, batch_size=batch_size)[0]


@torch.no_grad()
def evaluate_outputs(
    model: nn.Module,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    loss_fn: nn.Module,
    class_names: tuple[str, ...],
    binary: bool,
    in_channels: int,
    device: torch.device,
    amp: bool = False,
    batch_size: int = 16,
) -> list[SplitEvaluation]:
    """:func:`evaluate` of every output of a network with side exits, in order: each exit, then the final logits."""
    from ..models import forward_exits, output_names

    count = len(output_names(model.stages()))
    return _evaluate(lambda batch: forward_exits(model, batch), model, images, original_masks, count, loss_fn=loss_fn,
                     class_names=class_names, binary=binary, in_channels=in_channels, device=device, amp=amp, batch_size=batch_size)


def _evaluate(forward, model, images, original_masks, count: int, *, loss_fn, class_names, binary, in_channels, device, amp,
              batch_size) -> list[SplitEvaluation]:
    model.eval()
    num_classes = len(class_names)
    confusions = [np.zeros((num_classes, num_classes), np.int64) for _ in range(count)]
    loss_sums, loss_pixels = [0.0] * count, 0
    autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()
    for start in range(0, len(images), batch_size):
        indices = range(start, min(start + batch_size, len(images)))
        batch = to_model_input(np.stack([images[i][0] for i in indices]), in_channels, device)
        with autocast:
            outputs = forward(batch)
        for row, index in enumerate(indices):
            truth = original_masks[index]
            target = torch.from_numpy(truth).to(device)
            pixels = int((target != IGNORE).sum())
            loss_pixels += pixels
            for k, logits in enumerate(outputs):
                upsampled = upsample_logits(logits[row], truth.shape[:2])
                if pixels:
                    loss_sums[k] += float(loss_fn(upsampled[None], target[None])) * pixels
                confusions[k] += confusion_matrix(truth, decide(upsampled).cpu().numpy(), num_classes, IGNORE)
    return [
        SplitEvaluation(loss_sum / loss_pixels if loss_pixels else float("nan"), confusion,
                        scores_from_confusion(confusion, class_names, binary))
        for loss_sum, confusion in zip(loss_sums, confusions)
    ]


def onnx_predictor(path, threads: int = 0, output: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function: a float32 input batch of one image -> an output (default: the first, the logits) of the ONNX model at ``path``.

    The model is run by onnxruntime on the CPU with ``threads`` intra-op threads (0: onnxruntime decides).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = output or session.get_outputs()[0].name
    return lambda batch: session.run([output_name], {input_name: batch})[0]


def evaluate_onnx(
    path,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    class_names: tuple[str, ...],
    binary: bool,
    in_channels: int,
    threads: int = 0,
) -> SegmentationScores:
    """IoU/Dice of the ONNX model at ``path`` on one split, run by onnxruntime (CPU), scored exactly as :func:`evaluate`.

    This is how a deployed model (e.g. INT8) is scored: its own outputs, not the
    PyTorch network it came from. The model takes a batch of one image.
    """
    return score_onnx_predictions(
        onnx_predictor(path, threads), images, original_masks, class_names=class_names, binary=binary, in_channels=in_channels,
    )


def score_onnx_predictions(
    predict: Callable[[np.ndarray], np.ndarray],
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    class_names: tuple[str, ...],
    binary: bool,
    in_channels: int,
) -> SegmentationScores:
    """Scores of ``predict`` (a float32 input batch of one image -> its logits, e.g. an onnxruntime run) on one split.

    Each image is preprocessed by :func:`to_model_input`; its logits are resized
    back to the original size and scored exactly as :func:`evaluate` does.
    """
    confusions = per_image_confusions(predict, images, original_masks, num_classes=len(class_names), in_channels=in_channels)
    return scores_from_confusion(confusions.sum(axis=0), class_names, binary)


def per_image_confusions(
    predict: Callable[[np.ndarray], np.ndarray],
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    num_classes: int,
    in_channels: int,
) -> np.ndarray:
    """Each image's confusion matrix, ``(images, num_classes, num_classes)`` int64, for ``predict`` on one split.

    ``num_classes`` counts classes, not logits (2 for binary data). Every image is
    scored as :func:`score_onnx_predictions` scores the split, whose confusion is
    the sum of these; :func:`scores_from_confusion` of one of them gives that
    image's IoU and Dice per class.
    """
    confusions = np.zeros((len(images), num_classes, num_classes), np.int64)
    for index in range(len(images)):
        logits = np.asarray(predict(onnx_input(images[index][0], in_channels)))[0]
        confusions[index] = logits_confusion(logits, original_masks[index], num_classes)
    return confusions


def onnx_input(image: np.ndarray, in_channels: int) -> np.ndarray:
    """One uint8 RGB image (H, W, 3) at the network's size -> the float32 batch of one (1, C, H, W) an ONNX model takes."""
    return to_model_input(image[None], in_channels, torch.device("cpu")).contiguous().numpy()


def logits_confusion(logits: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """The confusion matrix of one image's logits (C, h, w), upsampled to its mask ``truth`` (original size) and decided."""
    predicted = predict_classes(torch.from_numpy(np.asarray(logits)), truth.shape[:2]).numpy()
    return confusion_matrix(truth, predicted, num_classes, IGNORE)
