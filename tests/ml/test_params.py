from __future__ import annotations

import json
import re
from typing import Any

import pytest

from worker.ml.params import TrainParams

INVALID_CASES = [
    ({"dropout": 1.2}, "dropout must be in [0, 1), got 1.2"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"dropout": -0.1}, "dropout must be in [0, 1)"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"mc_passes": 0}, "mc_passes must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"dropout_position": "encoder"}, "dropout_position must be one of all, decoder"),
    ({"foreground_ratio": 1.5}, "foreground_ratio must be in [0, 1]"),
    ({"sw_overlap": 1.0}, "sw_overlap must be in [0, 1)"),
    ({"patch_size": (96, 96)}, "patch_size must have 3 entries"),
    ({"patch_size": (90, 96, 96)}, "patch_size must be divisible by 8"),
    ({"strides": (2, 2)}, "strides must have one entry fewer than channels"),
    ({"channels": (16,), "strides": ()}, "must be a non-empty tuple"),
    ({"num_res_units": -1}, "num_res_units must be an integer >= 0"),
]


@pytest.mark.parametrize(("overrides", "message"), INVALID_CASES)
def test_validate_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainParams(**overrides).validate()


def test_defaults_are_valid_and_match_spec() -> None:
    params = TrainParams()
    params.validate()
    assert (params.steps, params.mc_passes, params.dropout, params.patch_size) == (2000, 5, 0.5, (96, 96, 96))
    assert params.epochs is None and params.steps_for(7) == 2000
    assert TrainParams(epochs=3, samples_per_volume=2, batch_size=4).steps_for(7) == 3 * 4  # legacy: ceil(14/4)


def test_dict_round_trip_is_json_safe() -> None:
    params = TrainParams(patch_size=(32, 32, 16), channels=(4, 8), strides=(2,), dropout_position="decoder")
    data = json.loads(json.dumps(params.to_dict()))
    assert data["patch_size"] == [32, 32, 16]
    assert TrainParams.from_dict(data) == params


def test_from_dict_ignores_none_and_validates() -> None:
    params = TrainParams.from_dict({"steps": None, "dropout": 0.25})
    assert params.steps == 2000
    assert params.dropout == 0.25
    with pytest.raises(ValueError, match="dropout must be"):
        TrainParams.from_dict({"dropout": 2})


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown training parameter\(s\): bogus, lr"):
        TrainParams.from_dict({"lr": 1.0, "bogus": 2, "epochs": 3})
