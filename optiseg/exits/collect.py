"""Every output of an exit chain on every image of a split, run by onnxruntime: what the policy's arithmetic needs."""

from __future__ import annotations

import numpy as np

from .._runners.early_exit import CONFIDENCES, ExitChainRunner
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
    threads: int = 0,
) -> list[ImageExits]:
    """Per image: each exit's confidences (every kind, as its stage graph computes them) and each output's confusion matrix.

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
        outputs, confidences = runner.run_all(onnx_input(images[index][0], in_channels))
        truth = original_masks[index]
        result.append(ImageExits(
            confidences={kind: tuple(sure[kind] for sure in confidences) for kind in CONFIDENCES},
            confusions=tuple(logits_confusion(logits, truth, num_classes) for logits in outputs),
        ))
    return result


def remote_final_confusions(
    chain: ExitChain,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    bits: int,
    num_classes: int,
    in_channels: int,
    threads: int = 0,
) -> list[np.ndarray]:
    """Per image, the confusion matrix of the final output when the last stage runs on a server: what it reads is
    encoded and decoded at ``bits`` (:mod:`optiseg._runners.tensor_codec`, the bytes the device sends) in between."""
    from .._runners import tensor_codec

    runner = ExitChainRunner(chain.folder, threads)
    result = []
    for index in range(len(images)):
        env = runner.run_to_last(onnx_input(images[index][0], in_channels))
        received = tensor_codec.decode_frame(tensor_codec.encode_frame(runner.crossing(env), bits))
        result.append(logits_confusion(runner.run_last(received), original_masks[index], num_classes))
    return result
