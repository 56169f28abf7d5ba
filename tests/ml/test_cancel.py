"""A cancel acts within one sliding window, not after a whole validation, evaluation or scored case.

Each test counts the network's forward calls: a stop requested after the first window must leave
every later window unrun. Counting calls (no clocks) keeps the tests exact on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from torch import nn

from tests.ml.synthetic import cube_case, tiny_params
from worker.ml.cancel import Cancelled
from worker.ml.inference import evaluate
from worker.ml.network import build_unet
from worker.ml.scoring import score_case
from worker.ml.train import TrainingCancelled, train_model

BIG = (32, 32, 32)  # 27 windows of 16^3 at the default overlap: one forward each with sw_batch_size 1


def _forwards(model: nn.Module, training: bool | None = None) -> list[int]:
    """A list that grows by one at every forward call of ``model`` (in the given mode, or any)."""
    calls: list[int] = []

    def hook(module: nn.Module, _args: object) -> None:
        if training is None or module.training == training:
            calls.append(1)

    model.register_forward_pre_hook(hook)
    return calls


def _stop_after(calls: list[int], n: int) -> Callable[[], bool]:
    return lambda: len(calls) >= n


def test_scoring_stops_between_windows_of_one_mc_pass() -> None:
    params = tiny_params(mc_passes=3)
    model = build_unet(2, params)
    calls = _forwards(model)
    image = np.zeros(BIG, dtype=np.float32)
    with pytest.raises(Cancelled):
        score_case(model, image, "mc_dropout_variance", params, case_key=0, device="cpu",
                   should_stop=_stop_after(calls, 1))
    assert len(calls) == 1  # of 3 passes x 27 windows + 27 for the prediction


def test_scoring_stops_during_the_prediction_pass() -> None:
    params = tiny_params()
    model = build_unet(2, params)
    calls = _forwards(model)
    with pytest.raises(Cancelled):  # "random" runs no MC pass: only the deterministic prediction
        score_case(model, np.zeros(BIG, dtype=np.float32), "random", params, case_key=0, device="cpu",
                   should_stop=_stop_after(calls, 2))
    assert len(calls) == 2


def test_evaluation_stops_between_windows() -> None:
    params = tiny_params()
    model = build_unet(2, params)
    calls = _forwards(model)
    image, label = np.zeros(BIG, dtype=np.float32), np.zeros(BIG, dtype=np.int64)
    with pytest.raises(Cancelled):
        evaluate(model, [image, image], [label, label], "CT", params, device="cpu", should_stop=_stop_after(calls, 1))
    assert len(calls) == 1


def test_training_stops_inside_a_validation_run() -> None:
    """Validation used to run to the end before the next step's check: the bulk of a 25 s wait."""
    params = tiny_params(steps=4, val_every=2)
    model = build_unet(2, params)
    eval_calls = _forwards(model, training=False)
    image, label = cube_case(0)
    big_image = np.full(BIG, -500, dtype=np.int16)

    def build(*_args: object, **_kwargs: object) -> nn.Module:
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.ml.train.build_unet", build)
        with pytest.raises(TrainingCancelled, match="validation at step 2"):
            train_model([image], [label], 2, "CT", params, device="cpu", should_stop=_stop_after(eval_calls, 1),
                        val_images=[big_image], val_labels=[np.zeros(BIG, dtype=np.int64)])
    assert len(eval_calls) == 1  # of 27 windows
