"""MC passes run together (``TrainParams.score_pass_batch``) give the statistics of passes run one at a time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.ml.synthetic import tiny_params
from worker.ml import scoring
from worker.ml.cached import encode_volume
from worker.ml.network import ConsistentDropout, WindowGrid, build_unet, unet_parts
from worker.ml.scoring import MCStatistics, mc_dropout_statistics, pass_group_size


def _model(position: str) -> tuple[nn.Module, Any]:
    params = tiny_params(dropout_position=position, mc_passes=5, sw_overlap=0.5, score_precision="float32")
    torch.manual_seed(0)
    model = build_unet(3, params)
    with torch.no_grad():  # weights far from init, so the decoder's output depends on its masks
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model, params


def _image() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(20, 28, 24)).astype(np.float32)


def _statistics(model: nn.Module, params: Any, group: int, cached: bool) -> MCStatistics:
    image = _image()
    grouped = replace(params, score_pass_batch=group)
    encoded = None
    if cached:
        with torch.inference_mode():
            model.eval()
            encoded = encode_volume(model, image, grouped)
    return mc_dropout_statistics(model, image, grouped, "cpu", with_entropy=True, encoded=encoded)


def _assert_same(got: MCStatistics, want: MCStatistics) -> None:
    assert float(want.moments.variance.sum()) > 1e-3  # the masks matter, so equality is not trivial
    torch.testing.assert_close(got.moments.mean, want.moments.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.moments.variance, want.moments.variance, rtol=0, atol=1e-6)
    assert got.entropy_sum is not None and want.entropy_sum is not None
    torch.testing.assert_close(got.entropy_sum, want.entropy_sum, rtol=0, atol=1e-5)


@pytest.mark.parametrize("group", [2, 5])  # 2: groups of 2, 2 and 1 for T = 5
def test_decoder_passes_run_together_equal_passes_run_one_at_a_time(group: int) -> None:
    model, params = _model("decoder")
    one = _statistics(model, params, 1, cached=True)
    decoder = unet_parts(model)[1]  # type: ignore[index]
    batches: list[int] = []
    handle = decoder[0].register_forward_hook(lambda _m, inputs, _o: batches.append(inputs[0].shape[0]))
    together = _statistics(model, params, group, cached=True)
    handle.remove()
    _assert_same(together, one)
    windows = len(batches) // -(-params.mc_passes // group)
    assert windows > 1  # sliding windows, so each call's batch is (passes x windows of one batch)
    assert sorted(set(batches)) == sorted({min(group, params.mc_passes - first) * params.sw_batch_size
                                          for first in range(0, params.mc_passes, group)})


def test_full_network_passes_run_together_equal_passes_run_one_at_a_time() -> None:
    model, params = _model("all")
    _assert_same(_statistics(model, params, 3, cached=False), _statistics(model, params, 1, cached=False))


def test_the_masks_follow_the_scoring_seed() -> None:
    model, params = _model("decoder")
    first = _statistics(model, params, 4, cached=True)
    other_seed = _statistics(model, replace(params, seed=params.seed + 1), 4, cached=True)
    assert not torch.allclose(first.moments.variance, other_seed.moments.variance)


def test_auto_runs_every_pass_together_on_cuda_and_one_at_a_time_on_the_cpu() -> None:
    params = tiny_params(mc_passes=5)
    assert pass_group_size(params, "cuda") == 5
    assert pass_group_size(params, "cuda:1") == 5
    assert pass_group_size(params, "cpu") == 1
    assert pass_group_size(replace(params, score_pass_batch=3), "cpu") == 3
    assert pass_group_size(replace(params, score_pass_batch=8), "cuda") == 5


def test_out_of_device_memory_halves_the_group_and_keeps_the_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    model, params = _model("decoder")
    want = _statistics(model, params, 1, cached=True)
    original = scoring.decode_passes
    tried: list[int] = []

    def tight(model: nn.Module, encoded: Any, passes: int, should_stop: Any = None) -> torch.Tensor:
        tried.append(passes)
        if passes > 2:
            raise torch.OutOfMemoryError("simulated: out of device memory")
        return original(model, encoded, passes, should_stop)

    monkeypatch.setattr(scoring, "decode_passes", tight)
    monkeypatch.setattr(scoring, "pass_group_size", lambda _params, _device: params.mc_passes)  # as auto on CUDA
    _assert_same(_statistics(model, params, 0, cached=True), want)
    assert tried == [5, 2, 2, 1]

    with pytest.raises(torch.OutOfMemoryError):  # a group the user set is not second-guessed
        _statistics(model, params, 4, cached=True)


def test_a_call_must_hold_every_pass_of_every_window() -> None:
    layer = ConsistentDropout(0.5)
    layer.train()
    layer.freeze()
    layer.resample([torch.Generator().manual_seed(s) for s in (1, 2)])
    layer.grid = WindowGrid((8, 8, 8), (8, 8, 8), [(0, 0, 0)])
    with torch.inference_mode():
        out = layer(torch.ones(2, 3, 8, 8, 8))
        assert not torch.equal(out[0], out[1])  # each pass its own mask
        with pytest.raises(RuntimeError, match="1 window\\(s\\) for 2 pass\\(es\\), but the batch holds 3"):
            layer(torch.ones(3, 3, 8, 8, 8))
    layer.grid = None
    with pytest.raises(RuntimeError, match="2 passes per call only on a WindowGrid"):
        layer(torch.ones(2, 3, 8, 8, 8))


def test_score_pass_batch_is_checked() -> None:
    with pytest.raises(ValueError, match="score_pass_batch"):
        tiny_params(score_pass_batch=-1).validate()
