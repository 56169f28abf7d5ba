from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.ml.synthetic import tiny_params
from worker.ml import scoring
from worker.ml.network import ConsistentDropout, build_unet, consistent_dropout_modules, dropout_modules
from worker.ml.params import TrainParams
from worker.ml.scoring import (
    STRATEGIES,
    RunningMoments,
    ScoreResult,
    get_strategy,
    register_strategy,
    score_case,
    variance_score_from_probs,
)

# T=2 passes, C=2 classes, 2 voxels; probs[t, c, v].
#   voxel a: pass 1 (0.9, 0.1), pass 2 (0.7, 0.3) -> each class: mean 0.8 / 0.2, population variance
#            ((0.1)^2 + (0.1)^2) / 2 = 0.01; mean over classes 0.01.
#   voxel b: pass 1 (0.2, 0.8), pass 2 (0.6, 0.4) -> each class: ((0.2)^2 + (0.2)^2) / 2 = 0.04; mean 0.04.
#   score = 0.01 + 0.04 = 0.05 (dividing by T - 1 instead would give 0.10).
HAND_PROBS = torch.tensor(
    [
        [[0.9, 0.2], [0.1, 0.8]],
        [[0.7, 0.6], [0.3, 0.4]],
    ],
    dtype=torch.float64,
)
HAND_SCORE = 0.05


def _image(shape: tuple[int, int, int] = (24, 24, 24), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_hand_computed_variance_reference() -> None:
    assert variance_score_from_probs(HAND_PROBS) == pytest.approx(HAND_SCORE, abs=1e-12)


def test_hand_computed_variance_running_moments() -> None:
    moments = RunningMoments()
    for probs in HAND_PROBS:
        moments.update(probs)
    score = float(moments.variance.mean(dim=0).sum())
    assert score == pytest.approx(HAND_SCORE, abs=1e-12)
    torch.testing.assert_close(moments.mean, HAND_PROBS.double().mean(dim=0))


def test_running_moments_match_stacked_on_random_data() -> None:
    stream = torch.rand(7, 3, 5, 4, 6)
    moments = RunningMoments()
    for x in stream:
        moments.update(x)
    torch.testing.assert_close(moments.variance, stream.double().var(dim=0, unbiased=False))


@pytest.mark.parametrize("passes", [2, 20])
def test_running_moments_size_independent_of_passes(passes: int) -> None:
    moments = RunningMoments()
    for _ in range(passes):
        moments.update(torch.rand(3, 8, 8, 8))
    assert moments.count == passes
    assert moments.nbytes == 2 * 3 * 8**3 * 8  # mean + M2, float64, whatever T is


def _live_tensor_bytes() -> int:
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_mc_memory_does_not_grow_with_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measure every live tensor at the start of pass 3 and of pass 20: if passes were kept (a list of
    # probability maps), the second reading would be 17 probability maps larger.
    passes, shape = 20, (32, 32, 32)
    original = scoring.sliding_window_passes
    readings: dict[int, int] = {}
    calls = 0

    def measured(*args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls in (3, passes):
            gc.collect()
            readings[calls] = _live_tensor_bytes()
        return original(*args, **kwargs)

    monkeypatch.setattr(scoring, "sliding_window_passes", measured)
    model = build_unet(2, tiny_params())
    score_case(model, _image(shape), "bald", tiny_params(mc_passes=passes), case_key=0, device="cpu",
               with_prediction=False)
    one_pass_bytes = 2 * int(np.prod(shape)) * 4
    assert calls == passes
    assert readings[passes] - readings[3] < one_pass_bytes


def _record_passes(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Make the scoring loop also keep every pass's probabilities, for reference computations."""
    original = scoring.sliding_window_passes
    kept: list[torch.Tensor] = []

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        probs = original(*args, **kwargs)
        kept.extend(one.clone() for one in probs)
        return probs

    monkeypatch.setattr(scoring, "sliding_window_passes", recording)
    return kept


def test_variance_strategy_equals_stacked_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _record_passes(monkeypatch)
    params = tiny_params(mc_passes=4)
    result = score_case(
        build_unet(3, params), _image(), "mc_dropout_variance", params, case_key=0, device="cpu", with_prediction=False
    )
    stacked = torch.stack(kept).double()
    assert len(kept) == 4
    assert result.score == pytest.approx(variance_score_from_probs(stacked), rel=1e-9)
    assert result.score > 0
    voxel_var = stacked.var(dim=0, unbiased=False).mean(dim=0)
    assert result.voxel_map is not None and result.voxel_map.dtype == np.float32
    np.testing.assert_allclose(result.voxel_map, voxel_var.numpy(), rtol=1e-5, atol=1e-9)
    assert result.extras["variance_mean"] == pytest.approx(float(voxel_var.mean()), rel=1e-9)
    fg = stacked.mean(dim=0)[0] < 0.5
    fg_var = stacked.var(dim=0, unbiased=False)[1:].mean(dim=0)
    expected_fg = float(fg_var[fg].mean()) if fg.any() else 0.25
    assert result.extras["variance_fg_mean"] == pytest.approx(expected_fg, rel=1e-9)


def test_entropy_and_bald_equal_stacked_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _record_passes(monkeypatch)
    params = tiny_params(mc_passes=3)
    model = build_unet(3, params)
    entropy = score_case(model, _image(), "entropy", params, case_key=0, device="cpu", with_prediction=False)
    bald = score_case(model, _image(), "bald", params, case_key=0, device="cpu", with_prediction=False)
    first = torch.stack(kept[:3]).double()
    assert torch.equal(first, torch.stack(kept[3:]).double())  # same seed -> same passes

    def h(p: torch.Tensor) -> torch.Tensor:
        return -torch.special.xlogy(p, p).sum(dim=-4)

    predictive = h(first.mean(dim=0))
    assert entropy.score == pytest.approx(float(predictive.sum()), rel=1e-9)
    expected_mi = (predictive - h(first).mean(dim=0)).clamp_min(0)
    assert bald.score == pytest.approx(float(expected_mi.sum()), rel=1e-6)
    assert bald.score > 0


def test_fg_variant_ranks_by_foreground_mean() -> None:
    params = tiny_params()
    model = build_unet(2, params)
    plain = score_case(model, _image(), "mc_dropout_variance", params, case_key=0, device="cpu", with_prediction=False)
    fg = score_case(model, _image(), "mc_dropout_variance_fg", params, case_key=0, device="cpu", with_prediction=False)
    assert fg.extras == plain.extras
    assert fg.score == plain.extras["variance_fg_mean"]


def test_only_dropout_in_train_mode_during_passes() -> None:
    params = tiny_params()
    model = build_unet(2, params, norm="batch")
    model.train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    assert any("running_mean" in k for k in buffers)
    modes_before = {name: m.training for name, m in model.named_modules()}
    seen: dict[str, set[bool]] = {}
    handles = [
        m.register_forward_hook(lambda mod, _i, _o, name=name: seen.setdefault(name, set()).add(mod.training))
        for name, m in model.named_modules()
    ]
    score_case(model, _image(), "mc_dropout_variance", params, case_key=0, device="cpu", with_prediction=False)
    for handle in handles:
        handle.remove()
    dropout_names = {name for name, m in model.named_modules() if m in dropout_modules(model)}
    assert dropout_names
    for name, modes in seen.items():
        assert modes == ({True} if name in dropout_names else {False}), name
    for key, value in model.named_buffers():
        assert torch.equal(value, buffers[key]), key
    assert {name: m.training for name, m in model.named_modules()} == modes_before
    assert not any(m.frozen for m in consistent_dropout_modules(model))


def test_one_mask_per_pass_across_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    params = tiny_params(mc_passes=3, dropout_position="decoder")
    model = build_unet(2, params)
    layer = next(m for m in consistent_dropout_modules(model) if m.p > 0)
    events: list[Any] = []
    original_resample = layer.resample

    def resample(*args: Any) -> None:
        events.append("resample")
        original_resample(*args)

    monkeypatch.setattr(layer, "resample", resample)

    def hook(mod: nn.Module, _inputs: Any, _output: Any) -> None:
        assert isinstance(mod, ConsistentDropout) and mod.mask is not None
        events.append(mod.mask.clone())

    layer.register_forward_hook(hook)
    score_case(model, _image((24, 40, 32)), "mc_dropout_variance", params, case_key=0, device="cpu",
               with_prediction=False)

    passes: list[list[torch.Tensor]] = []
    for event in events:
        if isinstance(event, str):
            passes.append([])
        else:
            passes[-1].append(event)
    assert len(passes) == 3
    windows = len(passes[0])
    assert windows > 1 and all(len(p) == windows for p in passes)
    for masks in passes:
        assert all(torch.equal(m, masks[0]) for m in masks)  # one mask for every window of the pass
    assert not torch.equal(passes[0][0], passes[1][0])  # resample() draws a new one
    assert not torch.equal(passes[1][0], passes[2][0])


def _trained_like_model(params: TrainParams) -> nn.Module:
    torch.manual_seed(0)
    return build_unet(2, params)


@pytest.mark.parametrize("strategy", ["mc_dropout_variance", "bald", "random"])
def test_scores_are_seeded(strategy: str) -> None:
    params = tiny_params()
    model = _trained_like_model(params)
    run: Callable[[TrainParams], ScoreResult] = lambda p: score_case(  # noqa: E731
        model, _image(), strategy, p, case_key=7, device="cpu", with_prediction=False
    )
    first, again = run(params), run(params)
    other = run(tiny_params(seed=1))
    assert first.score == again.score
    assert first.score != other.score


def test_random_strategy_depends_on_case_key() -> None:
    params = tiny_params()
    a = score_case(nn.Identity(), _image(), "random", params, case_key=1, with_prediction=False)
    b = score_case(nn.Identity(), _image(), "random", params, case_key=2, with_prediction=False)
    assert 0 <= a.score < 1 and a.score != b.score and a.voxel_map is None


def test_registry() -> None:
    assert {"mc_dropout_variance", "mc_dropout_variance_fg", "entropy", "bald", "random"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="unknown scoring strategy 'nope'; known: bald, coreset, entropy"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("random")(STRATEGIES["random"])
