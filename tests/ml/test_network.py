from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.ml.synthetic import tiny_params
from worker.ml.network import (
    ConsistentDropout,
    _encoder_decoder_parts,
    build_unet,
    consistent_dropout_modules,
    dropout_modules,
    mc_dropout_mode,
)


def test_unfrozen_behaves_like_dropout() -> None:
    layer = ConsistentDropout(0.5).train()
    x = torch.ones(2, 3, 8, 8, 8)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)  # fresh mask per call
    assert set(torch.unique(a).tolist()) <= {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert torch.equal(layer.eval()(x), x)


def test_frozen_mask_is_reused_and_broadcast_over_batch() -> None:
    layer = ConsistentDropout(0.5).train()
    layer.freeze(torch.Generator().manual_seed(0))
    x = torch.ones(2, 3, 8, 8, 8)
    a = layer(x)
    mask = layer.mask
    assert mask is not None and mask.shape == (1, 3, 8, 8, 8)
    assert torch.equal(a[0], a[1])  # one mask for every batch element (window)
    assert torch.equal(layer(x * 3), a * 3) and layer.mask is mask
    layer.resample()
    assert not torch.equal(layer(x), a)


def test_frozen_masks_follow_generator_seed() -> None:
    def draw(seed: int) -> torch.Tensor:
        layer = ConsistentDropout(0.3).train()
        layer.freeze(torch.Generator().manual_seed(seed))
        return layer(torch.ones(1, 2, 4, 4, 4))

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_frozen_shape_change_raises() -> None:
    layer = ConsistentDropout(0.5).train()
    layer.freeze()
    layer(torch.ones(1, 2, 4, 4, 4))
    with pytest.raises(RuntimeError, match="call resample"):
        layer(torch.ones(1, 2, 4, 4, 8))
    layer.resample()
    assert layer(torch.ones(1, 2, 4, 4, 8)).shape == (1, 2, 4, 4, 8)


def test_bad_p() -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        ConsistentDropout(1.0)


@pytest.mark.parametrize(("position", "encoder_p", "decoder_p"), [("all", 0.3, 0.3), ("decoder", 0.0, 0.3)])
def test_dropout_position(position: str, encoder_p: float, decoder_p: float) -> None:
    model = build_unet(3, tiny_params(dropout=0.3, dropout_position=position))
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())  # all replaced
    encoder, decoder = _encoder_decoder_parts(model)  # type: ignore[arg-type]
    enc = [m.p for part in encoder for m in consistent_dropout_modules(part)]
    dec = [m.p for part in decoder for m in consistent_dropout_modules(part)]
    assert enc and dec
    assert len(enc) + len(dec) == len(consistent_dropout_modules(model))  # the split covers every layer
    assert set(enc) == {encoder_p} and set(dec) == {decoder_p}


def test_output_shape() -> None:
    model = build_unet(4, tiny_params())
    assert model(torch.zeros(2, 1, 16, 16, 16)).shape == (2, 4, 16, 16, 16)


def test_mc_dropout_mode_switches_only_dropout_and_restores() -> None:
    model = build_unet(2, tiny_params(), norm="batch")
    model.train()
    first_bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    first_bn.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    drop = set(map(id, dropout_modules(model)))
    with mc_dropout_mode(model):
        for m in model.modules():
            assert m.training == (id(m) in drop)
    assert {name: m.training for name, m in model.named_modules()} == before
