"""Training and scoring one candidate network.

>>> from optiseg.training import train_network
>>> network = Network.create("fastscnn", {"a": 0.5}, (192, 192), num_classes=dataset.num_classes)
>>> result = train_network(network, dataset=dataset, training=config.training, run_dir="runs/a0.5")
>>> result.metrics["test_iou"]
"""

from .inherit import InitialWeights, inheritable, inherit, knob_mismatch
from .evaluate import SplitEvaluation, evaluate, evaluate_onnx, predict_classes, to_model_input
from .losses import SegmentationLoss, soft_dice_loss
from .metrics import SegmentationScores, confusion_matrix, scores_from_confusion
from ._run_folder import BEST, CHECKPOINT, LOG, METRICS, ONNX, TrainResult
from .trainer import Reporter, pick_device, score_best_so_far, train_network

__all__ = [
    "BEST",
    "CHECKPOINT",
    "LOG",
    "METRICS",
    "ONNX",
    "InitialWeights",
    "inherit",
    "inheritable",
    "knob_mismatch",
    "SplitEvaluation",
    "evaluate_onnx",
    "Reporter",
    "SegmentationLoss",
    "SegmentationScores",
    "TrainResult",
    "confusion_matrix",
    "evaluate",
    "pick_device",
    "predict_classes",
    "score_best_so_far",
    "scores_from_confusion",
    "soft_dice_loss",
    "to_model_input",
    "train_network",
]
