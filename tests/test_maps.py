"""Uncertainty maps are stored quantised, within the stated precision, and read back as floats."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

import worker.data as data
from app.cases.imaging import read_nifti


@pytest.fixture
def geometry(monkeypatch: pytest.MonkeyPatch) -> None:
    geo = SimpleNamespace(spacing=(1.0, 2.0, 3.0), origin=(4.0, 5.0, 6.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    monkeypatch.setattr(data, "case_geometry", lambda _case: geo)


@pytest.mark.usefixtures("geometry")
@pytest.mark.parametrize("top", [0.25, 3e-4])
def test_map_round_trips_within_half_a_step(top: float) -> None:
    values = (np.random.default_rng(0).random((9, 10, 11)) * top).astype(np.float32)
    values[0, 0, 0] = top
    image = read_nifti(data.encode_map_on_case_grid(values, None))  # type: ignore[arg-type]
    back = sitk.GetArrayFromImage(image)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert (image.GetSpacing(), image.GetOrigin()) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert float(np.abs(back - values).max()) <= top / (2 * data.MAP_LEVELS) * 1.001
    assert float(np.abs(back - values).max()) > 0  # it is quantised: the bound is what the check is about


@pytest.mark.usefixtures("geometry")
def test_an_all_zero_map_stays_zero() -> None:
    image = read_nifti(data.encode_map_on_case_grid(np.zeros((4, 4, 4), np.float32), None))  # type: ignore[arg-type]
    assert not sitk.GetArrayFromImage(image).any()
