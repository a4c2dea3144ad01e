"""Every output of an exit chain on every image of a split, run by onnxruntime: what the policy's arithmetic needs."""

from __future__ import annotations

from .._runners.early_exit import CONFIDENCES, ExitChainRunner, confidence
from ..data import OriginalMasks, ResizedSplit
from ..training.evaluate import logits_confusion, onnx_input
from .chain import ExitChain
from .policy import ImageExits


def exit_outputs(
    chain: ExitChain,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    num_classes: int,
    in_channels: int,
    pixel_probability: float = 0.9,
    threads: int = 0,
) -> list[ImageExits]:
    """Per image: each exit's confidence (every kind; see ``runners/early_exit.py``) and each output's confusion matrix.

    The chain's stage graphs run in onnxruntime exactly as the device script
    runs them (:class:`ExitChainRunner`), on inputs preprocessed and scored
    exactly as :func:`optiseg.training.evaluate_onnx` does: each output's
    logits resized back to the image's original size, decided, compared with
    its mask. ``num_classes`` is the number of classes of the masks
    (``len(dataset.class_names)``: 2 for binary data).
    """
    runner = ExitChainRunner(chain.folder, threads)
    result = []
    for index in range(len(images)):
        outputs = runner.run_all(onnx_input(images[index][0], in_channels))
        truth = original_masks[index]
        result.append(ImageExits(
            confidences={kind: tuple(confidence(logits, kind, pixel_probability) for logits in outputs[:-1]) for kind in CONFIDENCES},
            confusions=tuple(logits_confusion(logits, truth, num_classes) for logits in outputs),
        ))
    return result
