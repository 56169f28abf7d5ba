from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.synthetic import cube_case, tiny_params
from worker.ml.inference import dice_per_class, predict_labels
from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.train import TrainingCancelled, TrainResult, train_model
from worker.ml.transforms import normalise

CASES = [cube_case(0), cube_case(1)]
IMAGES = [c[0] for c in CASES]
LABELS = [c[1] for c in CASES]


def _train(params: TrainParams, **kwargs: object) -> TrainResult:
    return train_model(IMAGES, LABELS, 2, "CT", params, device="cpu", **kwargs)  # type: ignore[arg-type]


def test_same_seed_same_losses_and_weights() -> None:
    a, b = _train(tiny_params()), _train(tiny_params())
    assert a.epoch_losses == b.epoch_losses and len(a.epoch_losses) == 2
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert all(v.device.type == "cpu" for v in a.state_dict.values())
    assert a.epoch_losses != _train(tiny_params(seed=1)).epoch_losses


@pytest.mark.slow
def test_learns_bright_cube() -> None:
    params = tiny_params(epochs=15)
    reported: list[tuple[int, float]] = []
    result = _train(params, progress=lambda epoch, loss: reported.append((epoch, loss)))
    assert [e for e, _ in reported] == list(range(1, 16))
    assert [loss for _, loss in reported] == result.epoch_losses
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    model = build_unet(2, params)
    model.load_state_dict(result.state_dict)
    image, label = cube_case(2)
    pred = predict_labels(model, normalise(image, "CT"), params, device="cpu")
    assert dice_per_class(pred, label, 2)[1] > 0.5  # type: ignore[operator]


def test_should_stop_cancels() -> None:
    with pytest.raises(TrainingCancelled):
        _train(tiny_params(), should_stop=lambda: True)

    polls = 0
    epochs_done: list[int] = []

    def stop_in_second_epoch() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2  # 2 cases x 2 patches / batch 2 = 2 steps per epoch

    with pytest.raises(TrainingCancelled, match="epoch 2"):
        _train(tiny_params(), should_stop=stop_in_second_epoch, progress=lambda e, _l: epochs_done.append(e))
    assert epochs_done == [1]


def test_init_state_is_used() -> None:
    init = {
        k: torch.full_like(v, 0.01) if v.is_floating_point() else v
        for k, v in _train(tiny_params()).state_dict.items()
    }
    result = _train(tiny_params(epochs=1, learning_rate=1e-12), init_state=init)
    for key, value in init.items():
        torch.testing.assert_close(result.state_dict[key], value, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        ([], [], "at least one labelled case"),
        (IMAGES, LABELS[:1], "got 2 images but 1 labels"),
        ([IMAGES[0]], [LABELS[0][:8]], "equal shapes"),
        ([IMAGES[0]], [LABELS[0] * 2], r"label values must be in \[0, 2\)"),
    ],
)
def test_bad_inputs(images: list[np.ndarray], labels: list[np.ndarray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_model(images, labels, 2, "CT", tiny_params(), device="cpu")
