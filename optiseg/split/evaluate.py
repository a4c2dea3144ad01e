"""IoU of a split network with the link's quantization in the loop, run by onnxruntime as it would be deployed."""

from __future__ import annotations

import os

import numpy as np

from .._runners import tensor_codec
from ..data import OriginalMasks, ResizedSplit
from ..training.evaluate import score_onnx_predictions
from ..training.metrics import SegmentationScores


def iou_with_codec(
    head_path: str | os.PathLike,
    tail_path: str | os.PathLike,
    images: ResizedSplit,
    original_masks: OriginalMasks,
    *,
    bits: int,
    per_channel: bool = False,
    class_names: tuple[str, ...],
    binary: bool,
    in_channels: int,
    threads: int = 0,
) -> SegmentationScores:
    """Scores of head -> :func:`~optiseg._runners.tensor_codec.encode_frame` at ``bits`` -> decode -> tail on one split.

    Each image goes through the same bytes a device would send (one frame of
    every crossing tensor), and is scored exactly as
    :func:`optiseg.training.evaluate_onnx` scores a whole network.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    head = ort.InferenceSession(str(head_path), options, providers=["CPUExecutionProvider"])
    tail = ort.InferenceSession(str(tail_path), options, providers=["CPUExecutionProvider"])
    head_in = head.get_inputs()[0].name
    names = [o.name for o in head.get_outputs()]
    tail_inputs = {i.name for i in tail.get_inputs()}
    if tail_inputs != set(names):
        raise ValueError(f"{tail_path} takes {sorted(tail_inputs)} but {head_path} sends {names}: not parts of one cut")

    def predict(batch: np.ndarray) -> np.ndarray:
        sent = dict(zip(names, head.run(names, {head_in: batch})))
        received = tensor_codec.decode_frame(tensor_codec.encode_frame(sent, bits, per_channel))
        return tail.run(None, received)[0]

    return score_onnx_predictions(predict, images, original_masks, class_names=class_names, binary=binary, in_channels=in_channels)
