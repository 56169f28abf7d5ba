"""Decoder-only MC dropout on a cached encoder equals the full network, pass for pass."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.ml.synthetic import tiny_params
from worker.ml.cached import decode_probabilities, encode_volume
from worker.ml.network import build_unet, decoder_only_dropout, unet_parts
from worker.ml.scoring import mc_dropout_statistics, score_case


def _model(position: str = "decoder", seed: int = 0) -> tuple[nn.Module, Any]:
    # float32: these tests compare the cached decoder with full passes to float tolerance (bfloat16 scoring is
    # tests/ml/test_precision.py's subject).
    params = tiny_params(dropout_position=position, mc_passes=4, sw_overlap=0.5, score_precision="float32")
    torch.manual_seed(seed)
    model = build_unet(3, params)
    # Non-trivial running weights: perturb every parameter so the decoder's output depends on its masks.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model, params


def _image(shape: tuple[int, int, int] = (20, 28, 24)) -> np.ndarray:
    return np.random.default_rng(3).normal(size=shape).astype(np.float32)


def _encoded(model: nn.Module, image: np.ndarray, params: Any) -> Any:
    with torch.inference_mode():
        model.eval()
        return encode_volume(model, image, params)


def test_only_decoder_dropout_is_cacheable() -> None:
    assert decoder_only_dropout(_model("decoder")[0])
    assert not decoder_only_dropout(_model("all")[0])
    assert not decoder_only_dropout(nn.Sequential(nn.Conv3d(1, 2, 1)))


def test_cached_statistics_equal_full_passes_for_the_same_masks() -> None:
    model, params = _model()
    image = _image()
    full = mc_dropout_statistics(model, image, params, "cpu", with_entropy=True)
    cached = mc_dropout_statistics(model, image, params, "cpu", with_entropy=True,
                                   encoded=_encoded(model, image, params))
    assert float(full.moments.variance.sum()) > 1e-3  # the masks matter, so equality is not trivial
    torch.testing.assert_close(cached.moments.mean, full.moments.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(cached.moments.variance, full.moments.variance, rtol=0, atol=1e-6)
    assert cached.entropy_sum is not None and full.entropy_sum is not None
    torch.testing.assert_close(cached.entropy_sum, full.entropy_sum, rtol=0, atol=1e-5)


def test_cached_prediction_equals_the_eval_pass() -> None:
    model, params = _model()
    image = _image()
    encoded = _encoded(model, image, params)
    with torch.inference_mode():
        model.eval()
        cached = decode_probabilities(model, encoded)
        full = model_probabilities(model, image, params)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-6)


def model_probabilities(model: nn.Module, image: np.ndarray, params: Any) -> torch.Tensor:
    from worker.ml.inference import sliding_window_probabilities

    return sliding_window_probabilities(model, image, params)


def test_score_case_runs_the_encoder_once_and_the_decoder_once_per_pass() -> None:
    model, params = _model()
    image = _image()
    encoder, decoder = unet_parts(model)  # type: ignore[misc]
    calls = {"encoder": 0, "decoder": 0}
    encoder[0].register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
    decoder[0].register_forward_hook(lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1))
    result = score_case(model, image, "mc_dropout_variance", params, case_key=0, device="cpu")
    windows = len(encode_volume(model, image, params).volume.windows)
    calls["encoder"] -= windows  # the line above ran the encoder once more
    assert windows > 1
    assert calls == {"encoder": windows, "decoder": windows * (params.mc_passes + 1)}
    assert result.prediction is not None and result.embedding is not None

    reference = mc_dropout_statistics(model, image, params, "cpu")  # no cache: T full passes
    assert result.score == pytest.approx(float(reference.moments.variance.mean(dim=0).sum()), rel=1e-5)


def test_whole_volume_scoring_is_one_window_and_equals_a_full_pass_over_the_volume() -> None:
    model, params = _model()
    image = _image()  # (20, 28, 24): already a multiple of the down-sampling, so no padding
    whole = replace(params, score_whole_volume_voxels=20 * 28 * 24)
    encoded = _encoded(model, image, whole)
    assert encoded.volume.windows == [(0, 0, 0)] and encoded.volume.grid.roi == (20, 28, 24)
    cached = mc_dropout_statistics(model, image, whole, "cpu", encoded=encoded)
    reference = mc_dropout_statistics(model, image, replace(params, patch_size=(20, 28, 24)), "cpu")
    torch.testing.assert_close(cached.moments.variance, reference.moments.variance, rtol=0, atol=1e-6)
    assert _encoded(model, image, replace(whole, score_whole_volume_voxels=20 * 28 * 24 - 1)).volume.windows != [
        (0, 0, 0)]
