from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.ml.synthetic import tiny_params
from worker.ml.inference import (
    dice_per_class,
    evaluate,
    mean_foreground_dice,
    predict_labels,
    predict_probabilities,
)
from worker.ml.network import build_unet


def _sign_model() -> nn.Module:
    """A 1x1x1 conv giving logits (-x, x): label 1 exactly where the input is positive."""
    conv = nn.Conv3d(1, 2, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
    return conv


@pytest.mark.parametrize("shape", [(10, 12, 14), (16, 16, 16), (20, 24, 40)])
def test_output_grid_equals_input_grid(shape: tuple[int, int, int]) -> None:
    # Smaller than, equal to and larger than the 16^3 patch; a voxel-wise model shows any shift or crop error.
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    labels = predict_labels(_sign_model(), image, tiny_params(), device="cpu")
    assert labels.shape == shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (image > 0).astype(np.uint8))


@pytest.mark.parametrize("shape", [(10, 12, 14), (20, 24, 40)])
def test_unet_probabilities_shape(shape: tuple[int, int, int]) -> None:
    model = build_unet(3, tiny_params())
    model.train()
    probs = predict_probabilities(model, np.zeros(shape, dtype=np.float32), tiny_params(), device="cpu")
    assert probs.shape == (3, *shape)
    torch.testing.assert_close(probs.sum(dim=0), torch.ones(shape))
    assert model.training  # mode restored


def test_dice_hand_made() -> None:
    pred = np.array([0, 1, 1, 2]).reshape(1, 1, 4)
    truth = np.array([0, 1, 2, 2]).reshape(1, 1, 4)
    # class 0: 2*1/(1+1) = 1; class 1: 2*1/(2+1) = 2/3; class 2: 2*1/(1+2) = 2/3; class 3 absent in both.
    scores = dice_per_class(pred, truth, 4)
    assert scores == pytest.approx([1.0, 2 / 3, 2 / 3, None])
    assert scores[3] is None
    assert mean_foreground_dice(scores) == pytest.approx(2 / 3)


def test_dice_disjoint_and_empty() -> None:
    pred = np.zeros((2, 2, 2), dtype=np.uint8)
    truth = np.zeros((2, 2, 2), dtype=np.uint8)
    truth[0, 0, 0] = 1
    assert dice_per_class(pred, truth, 2) == [2 * 7 / 15, 0.0]
    assert dice_per_class(pred, pred, 3) == [1.0, None, None]
    assert mean_foreground_dice([1.0, None, None]) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_class(pred, truth[:1], 2)


def test_evaluate_structure() -> None:
    image = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    label = (image > 0).astype(np.uint8)
    result = evaluate(_sign_model(), [image, image], [label, label], "MR", tiny_params(), device="cpu")
    # MR z-scoring over nonzero voxels keeps the sign up to a shift, so allow a little disagreement.
    assert len(result["per_case"]) == 2
    assert len(result["per_class"]) == 2
    assert 0.8 < result["mean_dice"] <= 1.0
    assert result["mean_dice"] == result["per_class"][1]
