from __future__ import annotations

import numpy as np
import pytest

from worker.ml.transforms import normalise, sample_patches


def test_ct_window_maps_hu_to_unit_interval() -> None:
    hu = np.array([-2000, -1000, 0, 500, 1000, 3000], dtype=np.int16).reshape(1, 2, 3)
    out = normalise(hu, "CT")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


def test_mr_zscore_over_nonzero_voxels() -> None:
    image = np.zeros((4, 4, 4), dtype=np.float32)
    image[1:3, 1:3, 1:3] = np.arange(8, dtype=np.float32).reshape(2, 2, 2) + 10
    out = normalise(image, "mr")
    inside = out[image != 0]
    assert abs(float(inside.mean())) < 1e-6
    assert abs(float(inside.std()) - 1.0) < 1e-5
    assert np.all(out[image == 0] == 0)


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_mr_degenerate_images_give_zeros(value: float) -> None:
    out = normalise(np.full((3, 3, 3), value, dtype=np.float32), "MR")
    assert np.all(out == 0) and np.isfinite(out).all()


def test_unknown_modality() -> None:
    with pytest.raises(ValueError, match="modality must be one of CT, MR"):
        normalise(np.zeros((2, 2, 2)), "PET")


def test_patches_pad_small_volumes() -> None:
    image = np.linspace(0.2, 1.0, 10 * 12 * 20, dtype=np.float32).reshape(10, 12, 20)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[4:6, 4:6, 8:10] = 2
    patches = sample_patches(image, label, (16, 16, 16), 4, 0.5, np.random.default_rng(0))
    assert len(patches) == 4
    for img, lbl in patches:
        assert img.shape == lbl.shape == (16, 16, 16)
        assert img.dtype == np.float32 and lbl.dtype == np.uint8
        assert img.min() == pytest.approx(0.2)  # padded with the image minimum
        assert set(np.unique(lbl)) <= {0, 2}


def test_foreground_ratio_one_always_hits_foreground() -> None:
    image = np.zeros((40, 40, 40), dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[30:33, 5:8, 20:22] = 1
    patches = sample_patches(image, label, (8, 8, 8), 20, 1.0, np.random.default_rng(1))
    assert all(lbl.any() for _, lbl in patches)


def test_sampling_is_reproducible() -> None:
    image = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    label = (image > 0.9).astype(np.uint8)
    a = sample_patches(image, label, (8, 8, 8), 5, 0.5, np.random.default_rng(3))
    b = sample_patches(image, label, (8, 8, 8), 5, 0.5, np.random.default_rng(3))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
