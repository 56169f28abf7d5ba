"""bfloat16 in the score phase keeps the ranking (``TrainParams.score_precision``).

The bfloat16 path is forced (as if the CPU had AVX512-BF16), so the same computation is checked on any machine;
elsewhere "auto" means float32.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from tests.ml.synthetic import cube_case, tiny_params
from worker.ml import inference
from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.scoring import score_case
from worker.ml.train import train_model
from worker.ml.transforms import normalise


def _trained() -> tuple[nn.Module, TrainParams]:
    params = tiny_params(steps=60, dropout_position="decoder", mc_passes=5, channels=(8, 16, 32))
    cases = [cube_case(seed, shape=(24, 24, 24)) for seed in range(6)]
    result = train_model([c[0] for c in cases], [c[1] for c in cases], 2, "CT", params, device="cpu")
    model = build_unet(2, params)
    model.load_state_dict(result.state_dict)
    return model, params


def _fixed_set() -> list[np.ndarray]:
    """Twelve cases whose cubes range from small to large, so the model is sure of some and unsure of others."""
    return [normalise(cube_case(100 + i, shape=(24, 32, 24), side=3 + i % 6)[0].astype(np.float32), "CT")
            for i in range(12)]


def _scores(model: nn.Module, params: TrainParams, images: list[np.ndarray]) -> list[float]:
    return [score_case(model, image, "mc_dropout_variance", params, case_key=i, device="cpu").score
            for i, image in enumerate(images)]


def _spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def test_bfloat16_scoring_keeps_the_ranking_of_a_fixed_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "_cpu_has_bfloat16", lambda: True)
    model, params = _trained()
    images = _fixed_set()
    full = _scores(model, replace(params, score_precision="float32", score_pass_batch=1), images)
    assert len(set(full)) == len(full)  # a ranking to keep: no ties
    # One pass per call (auto on a CPU), and every pass in one call (auto on a GPU): batched kernels round
    # differently in bfloat16, so each must keep the ranking on its own.
    for group in (1, params.mc_passes):
        mixed = _scores(model, replace(params, score_precision="auto", score_pass_batch=group), images)
        assert mixed != full  # bfloat16 really ran: the scores moved
        rho = _spearman(full, mixed)
        assert rho >= 0.99, (group, rho, full, mixed)


def test_auto_is_float32_where_the_device_has_no_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "_cpu_has_bfloat16", lambda: False)
    params = tiny_params(dropout_position="decoder", mc_passes=3)
    torch.manual_seed(0)
    model = build_unet(2, params)
    image = normalise(cube_case(7, shape=(24, 24, 24))[0].astype(np.float32), "CT")
    auto = score_case(model, image, "mc_dropout_variance", params, case_key=0, device="cpu")
    full = score_case(model, image, "mc_dropout_variance", replace(params, score_precision="float32"), case_key=0,
                      device="cpu")
    assert auto.score == full.score and np.array_equal(auto.prediction, full.prediction)  # type: ignore[arg-type]


def test_score_precision_is_checked() -> None:
    with pytest.raises(ValueError, match="score_precision must be one of auto, float32"):
        TrainParams.from_dict({"score_precision": "float16"})
