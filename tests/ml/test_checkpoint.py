from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.ml.synthetic import tiny_params
from worker.ml.checkpoint import load_model, save_model
from worker.ml.inference import predict_probabilities
from worker.ml.network import NormSpec, build_unet


@pytest.mark.parametrize("norm", ["instance", ("batch", {"momentum": 0.2})])
def test_round_trip_gives_identical_predictions(tmp_path: Path, norm: NormSpec) -> None:
    params = tiny_params(dropout_position="decoder", dropout=0.2)
    torch.manual_seed(3)
    model = build_unet(3, params, norm=norm)
    if norm != "instance":  # make running statistics non-trivial so they must be saved too
        model.train()
        model(torch.randn(2, 1, 16, 16, 16))
    path = tmp_path / "model.pt"
    save_model(path, model.state_dict(), 3, "MR", params, norm=norm)
    loaded, meta = load_model(path, device="cpu")
    assert (meta.num_classes, meta.modality, meta.params, meta.norm) == (3, "MR", params, norm)
    assert not loaded.training
    image = np.random.default_rng(0).random((20, 16, 24)).astype(np.float32)
    expected = predict_probabilities(model, image, params, device="cpu")
    assert torch.equal(predict_probabilities(loaded, image, params, device="cpu"), expected)


def test_rejects_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format_version": 99}, path)
    with pytest.raises(ValueError, match="unsupported model file format version 99"):
        load_model(path, device="cpu")
