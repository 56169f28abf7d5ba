from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.synthetic import cube_case, tiny_params
from worker.ml import train
from worker.ml.inference import dice_per_class, evaluate, predict_labels
from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.train import TrainingCancelled, TrainResult, _schedule, train_model
from worker.ml.transforms import make_augmentation, normalise

CASES = [cube_case(0), cube_case(1)]
IMAGES = [c[0] for c in CASES]
LABELS = [c[1] for c in CASES]


def _train(params: TrainParams, **kwargs: object) -> TrainResult:
    return train_model(IMAGES, LABELS, 2, "CT", params, device="cpu", **kwargs)  # type: ignore[arg-type]


def test_same_seed_same_losses_and_weights() -> None:
    a, b = _train(tiny_params()), _train(tiny_params())
    assert a.epoch_losses == b.epoch_losses and len(a.epoch_losses) == 1 and a.steps == 4
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert all(v.device.type == "cpu" for v in a.state_dict.values())
    assert a.epoch_losses != _train(tiny_params(seed=1)).epoch_losses


@pytest.mark.slow
def test_learns_bright_cube(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "PROGRESS_EVERY_S", float("inf"))  # only the logging intervals
    params = tiny_params(steps=150, learning_rate=3e-3)
    reported: list[tuple[int, float]] = []
    result = _train(params, progress=lambda step, loss: reported.append((step, loss)))
    assert [s for s, _ in reported] == [50, 100, 150]
    assert [loss for _, loss in reported] == result.epoch_losses
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    model = build_unet(2, params)
    model.load_state_dict(result.state_dict)
    image, label = cube_case(2)
    pred = predict_labels(model, normalise(image, "CT"), params, device="cpu")
    assert dice_per_class(pred, label, 2)[1] > 0.5  # type: ignore[operator]


def test_progress_is_reported_between_intervals_when_steps_are_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # as if every step took longer than the bound
    reported: list[int] = []
    _train(tiny_params(), progress=lambda step, loss: reported.append(step))
    assert reported == [1, 2, 3, 4]


def test_should_stop_cancels() -> None:
    with pytest.raises(TrainingCancelled):
        _train(tiny_params(), should_stop=lambda: True)

    polls = 0

    def stop_at_third_step() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2

    with pytest.raises(TrainingCancelled, match="step 3 of 4"):
        _train(tiny_params(), should_stop=stop_at_third_step)


def test_init_state_is_used() -> None:
    init = {
        k: torch.full_like(v, 0.01) if v.is_floating_point() else v
        for k, v in _train(tiny_params()).state_dict.items()
    }
    result = _train(tiny_params(steps=1, learning_rate=1e-12), init_state=init)
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


def test_budget_is_fixed_steps_whatever_the_number_of_cases() -> None:
    one = train_model(IMAGES[:1], LABELS[:1], 2, "CT", tiny_params(steps=6), device="cpu")
    two = _train(tiny_params(steps=6))
    assert one.steps == two.steps == 6
    assert _train(tiny_params(steps=None, epochs=3, samples_per_volume=2, batch_size=2)).steps == 3 * 2


def test_poly_schedule_warms_up_then_decays_to_zero() -> None:
    lr = _schedule("poly", 100)
    assert lr(0) == pytest.approx(0.2) and lr(4) == pytest.approx(1.0)  # 5 warm-up steps
    assert lr(50) == pytest.approx(0.5 ** 0.9) and lr(100) == 0.0
    assert all(lr(s) >= lr(s + 1) for s in range(5, 100))
    assert _schedule("constant", 100)(70) == 1.0


def test_checkpoint_is_the_best_on_validation() -> None:
    val_image, val_label = cube_case(5)
    params = tiny_params(steps=12, val_every=3, learning_rate=3e-2)
    result = _train(params, val_images=[val_image], val_labels=[val_label])
    assert [s for s, _ in result.validation] == [3, 6, 9, 12]
    best_step, best_dice = max(result.validation, key=lambda sd: (sd[1], -sd[0]))
    assert result.best_step == best_step
    model = build_unet(2, params)
    model.load_state_dict(result.state_dict)
    kept = evaluate(model, [val_image], [val_label], "CT", params, device="cpu")["mean_dice"]
    assert kept == pytest.approx(best_dice, abs=1e-4)


def test_augmented_training_is_seeded() -> None:
    a, b = _train(tiny_params(augment=True, flip_axes=[0])), _train(tiny_params(augment=True, flip_axes=[0]))
    assert a.epoch_losses == b.epoch_losses
    assert a.epoch_losses != _train(tiny_params(augment=False)).epoch_losses


def test_augmentation_keeps_image_and_label_aligned() -> None:
    image, label = cube_case(3)
    augment = make_augmentation(tiny_params(flip_axes=[0, 1, 2], seed=4))
    for _ in range(5):
        out = augment({"image": normalise(image, "CT")[None], "label": label[None].astype(np.int64)})
        bright = np.asarray(out["image"])[0] > 0.45
        inside = np.asarray(out["label"])[0] == 1
        assert (bright & inside).sum() > 0.6 * inside.sum()


def test_a_resumed_run_continues_from_its_checkpoint_and_ends_where_an_uninterrupted_run_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, labels = zip(*(cube_case(seed=s) for s in range(2)), strict=True)
    val_image, val_label = cube_case(seed=9)
    params = tiny_params(steps=12, val_every=4)
    common = {"val_images": [val_image], "val_labels": [val_label], "device": "cpu"}
    whole = train_model(images, labels, 2, "MR", params, **common)

    saved: list[train.TrainCheckpoint] = []
    with pytest.raises(TrainingCancelled):  # killed after step 7, with checkpoints every step before that
        train_model(images, labels, 2, "MR", params, checkpoint=saved.append, checkpoint_every_s=0.0,
                    should_stop=lambda: len(saved) == 7, **common)
    checkpoint = train.TrainCheckpoint.from_bytes(saved[-1].to_bytes())
    assert checkpoint.step == 7 and checkpoint.history == [(4, whole.validation[0][1])]

    steps_run: list[int] = []
    monkeypatch.setattr(train, "_train_step", _counting(train._train_step, steps_run))
    resumed = train_model(images, labels, 2, "MR", params, resume=checkpoint, **common)
    assert resumed.resumed_from == 7 and len(steps_run) == 12 - 7
    assert resumed.validation == whole.validation and resumed.best_step == whole.best_step
    for name, value in whole.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], value)


def _counting(step: object, calls: list[int]) -> object:
    def counted(*args: object) -> float:
        calls.append(1)
        return step(*args)  # type: ignore[operator,no-any-return]

    return counted
