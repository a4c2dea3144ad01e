"""Metrics against hand-computed confusion matrices, losses honouring ignored pixels, scoring at original size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optiseg.data import IGNORE
from optiseg.data._cache import OriginalMasks, ResizedSplit
from optiseg.training import SegmentationLoss, confusion_matrix, evaluate, predict_classes, scores_from_confusion


def test_confusion_matrix_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 1, IGNORE]])
    guess = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    # rows = truth, columns = prediction; the ignored pixel is not counted
    expected = [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert confusion_matrix(truth, guess, 3).tolist() == expected


def test_scores_by_hand_multi_class():
    confusion = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    scores = scores_from_confusion(confusion, ("a", "b", "c"), binary=False)
    # class a: TP 1, FP 1 (c->a), FN 1 (a->b): IoU 1/3, Dice 2/4
    # class b: TP 2, FP 1, FN 1: IoU 2/4, Dice 4/6;  class c: TP 1, FP 1, FN 1: IoU 1/3, Dice 2/4
    assert scores.iou == pytest.approx((1 / 3, 2 / 4, 1 / 3))
    assert scores.dice == pytest.approx((2 / 4, 4 / 6, 2 / 4))
    assert scores.mean_iou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert scores.primary_iou == scores.mean_iou
    assert scores.pixels == 7


def test_binary_iou_is_the_foreground_class():
    truth = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    guess = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    confusion = confusion_matrix(truth, guess, 2)
    assert confusion.tolist() == [[3, 1], [1, 3]]
    scores = scores_from_confusion(confusion, ("background", "package"), binary=True)
    assert scores.primary_iou == pytest.approx(3 / 5)  # TP 3 / (TP 3 + FP 1 + FN 1)
    assert scores.primary_dice == pytest.approx(6 / 8)
    assert scores.mean_iou == pytest.approx((3 / 5 + 3 / 5) / 2)
    assert scores.to_dict("test_")["test_class_iou"] == {"background": pytest.approx(0.6), "package": pytest.approx(0.6)}


def test_absent_class_has_no_score_and_is_left_out_of_the_mean():
    confusion = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 2]])
    scores = scores_from_confusion(confusion, ("a", "b", "c"), binary=False)
    assert scores.iou[1] is None
    assert scores.mean_iou == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)


@pytest.mark.parametrize("num_logits", [1, 3])
@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_losses_ignore_ignored_pixels(num_logits, dice_weight):
    torch.manual_seed(0)
    loss_fn = SegmentationLoss(num_logits, dice_weight)
    target = torch.randint(0, max(num_logits, 2), (2, 8, 8))
    target[:, :3] = IGNORE
    logits = torch.randn(2, num_logits, 8, 8)
    changed = logits.clone()
    changed[:, :, :3] = 50 * torch.randn_like(changed[:, :, :3])  # whatever is predicted on ignored pixels
    assert float(loss_fn(logits, target)) == pytest.approx(float(loss_fn(changed, target)), rel=1e-6)
    assert float(loss_fn(logits, torch.full_like(target, IGNORE))) == 0.0


@pytest.mark.parametrize("dice_weight", [0.0, 1.0, 2.5])
def test_the_binary_loss_is_bce_over_the_valid_pixels_plus_soft_dice_in_value_and_gradient(dice_weight):
    """The loss weighs ignored pixels out instead of gathering the valid ones, its gradient written out: the
    same figure, the same gradient."""
    import torch.nn.functional as F

    from optiseg.training.losses import soft_dice_loss

    torch.manual_seed(0)
    target = torch.randint(0, 2, (3, 16, 16))
    target[:, :5] = IGNORE
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)  # upsampled to the finer masks, as in training
    loss = SegmentationLoss(1, dice_weight)(logits, target)
    loss.backward()
    ours = logits.grad.clone()
    logits.grad = None
    upsampled = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    valid, truth = target != IGNORE, (target == 1).float()
    by_the_book = F.binary_cross_entropy_with_logits(upsampled, truth, reduction="none")[valid].mean() + dice_weight * soft_dice_loss(
        torch.sigmoid(upsampled)[:, None], truth[:, None], valid[:, None].float())
    by_the_book.backward()
    assert float(loss.detach()) == pytest.approx(float(by_the_book.detach()), rel=1e-6)
    assert torch.allclose(ours, logits.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_the_class_loss_is_cross_entropy_plus_soft_dice_over_one_hot_masks_in_value_and_gradient(dice_weight):
    """Several classes: the Dice sums are taken without building one-hot masks; the same figure, the same gradient."""
    import torch.nn.functional as F

    from optiseg.training.losses import soft_dice_loss

    torch.manual_seed(0)
    target = torch.randint(0, 4, (3, 16, 16))
    target[:, :5] = IGNORE
    target[:, :, -1] = 3  # every class present
    logits = torch.randn(3, 4, 8, 8, requires_grad=True)
    loss = SegmentationLoss(4, dice_weight)(logits, target)
    loss.backward()
    ours = logits.grad.clone()
    logits.grad = None
    upsampled = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    valid = target != IGNORE
    one_hot = F.one_hot(torch.where(valid, target, 0), 4).permute(0, 3, 1, 2).float()
    by_the_book = F.cross_entropy(upsampled, target, ignore_index=IGNORE) + dice_weight * soft_dice_loss(
        torch.softmax(upsampled, dim=1), one_hot, valid[:, None].float())
    by_the_book.backward()
    assert float(loss.detach()) == pytest.approx(float(by_the_book.detach()), rel=1e-6)
    assert torch.allclose(ours, logits.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dice_weight", [0.0, 1.0, 2.5])
def test_the_written_out_binary_gradient_matches_finite_differences(dice_weight):
    torch.manual_seed(1)
    target = torch.randint(0, 2, (2, 6, 6), dtype=torch.uint8)
    target[:, :2] = IGNORE
    logits = (2 * torch.randn(2, 1, 6, 6, dtype=torch.float64)).requires_grad_()
    loss_fn = SegmentationLoss(1, dice_weight)
    assert torch.autograd.gradcheck(lambda x: loss_fn._binary(x[:, 0], target), (logits,))


def test_the_binary_loss_keeps_its_precision_when_the_network_is_sure_and_leaves_the_target_alone():
    """A confident network's BCE is tiny: the sum must not come from cancelling large ones (val_loss picks the epoch)."""
    import torch.nn.functional as F

    torch.manual_seed(2)
    target = torch.randint(0, 2, (4, 96, 96)).float()
    target[:, :10] = IGNORE
    logits = (torch.where(target == 1, 10.0, -10.0) + torch.randn(4, 96, 96))[:, None]
    kept = target.clone()
    ours = float(SegmentationLoss(1, 0.0)(logits, target))
    assert torch.equal(target, kept)
    valid = target != IGNORE
    exact = float(F.binary_cross_entropy_with_logits(logits[:, 0].double()[valid], (target == 1).double()[valid]))
    assert ours == pytest.approx(exact, rel=1e-5)


def test_bce_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    target = torch.tensor([[[1, 0]]])
    expected = (np.log(2) + np.log(1 + np.exp(2))) / 2
    assert float(SegmentationLoss(1)(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_predictions_are_resized_back_to_the_original_size():
    logits = torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]])  # left half background, right half foreground
    prediction = predict_classes(logits, (3, 8))
    assert prediction.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] * 3
    multi = torch.zeros(3, 2, 2)
    multi[0, :, 0], multi[2, :, 1] = 5, 5
    assert predict_classes(multi, (2, 4)).tolist() == [[0, 0, 2, 2]] * 2


class HalfAndHalf(nn.Module):
    """Predicts foreground on the right half of any input."""

    def forward(self, x):
        logits = torch.full((x.shape[0], 1, *x.shape[2:]), -4.0)
        logits[..., x.shape[-1] // 2 :] = 4.0
        return logits


def test_evaluate_scores_each_image_at_its_original_size():
    # Two images of different original sizes, both given to the model at 4x4.
    truths = [np.zeros((6, 10), np.uint8), np.zeros((3, 4), np.uint8)]
    truths[0][:, 7:] = 1  # 18 foreground pixels; the model marks columns 5..9 (30 pixels)
    truths[1][:, 2:] = 1
    truths[1][0, 0] = IGNORE
    images = ResizedSplit((4, 4), None, 2, (np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.uint8)))
    originals = OriginalMasks(None, 2, truths)
    result = evaluate(
        HalfAndHalf(), images, originals, loss_fn=SegmentationLoss(1), class_names=("bg", "fg"), binary=True,
        in_channels=3, device=torch.device("cpu"),
    )
    # image 1: TP 18, FP 12, TN 30; image 2: TP 6, TN 5 (one pixel ignored)
    assert result.confusion.tolist() == [[35, 12], [0, 24]]
    assert result.scores.primary_iou == pytest.approx(24 / 36)


def test_the_model_input_is_normalized_channels_last_and_leaves_the_callers_images_alone():
    from optiseg.preprocessing import input_spec
    from optiseg.training.evaluate import to_model_input

    images = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    for batch in (images, images.astype(np.float32)):  # a float array must not be normalized in the caller's buffer
        before = batch.copy()
        for channels in (3, 1):
            out = to_model_input(batch, channels, torch.device("cpu"))
            spec = input_spec(channels)
            rgb = before.astype(np.float32) / 255.0
            plain = rgb if channels == 3 else (rgb * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1, keepdims=True)
            expected = (plain - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
            assert out.shape == (2, channels, 4, 5) and out.is_contiguous(memory_format=torch.channels_last)
            assert np.allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
        assert np.array_equal(batch, before)
