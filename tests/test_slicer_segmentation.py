"""Slicer .seg.nrrd labels: a crop on the image's lattice goes onto the full grid; the rest is a clear 422."""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from app.cases.imaging import Geometry, UploadedFile, read_nifti
from app.cases.slicer_segmentation import OverlappingSegments, read_slicer_segmentation
from app.core.errors import GeometryMismatch, InvalidLabelValues

LABELS = ["background", "liver", "tumour"]
# A case with anisotropic voxels and flipped x and y axes: the lattice arithmetic must use both.
CASE = Geometry(shape=(10, 12, 6), spacing=(0.8, 0.9, 2.5), origin=(-10.0, 20.0, 5.0),
                direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def seg_nrrd(values: np.ndarray, offset: Sequence[float], segments: Sequence[tuple[str, int, int]] = (("liver", 1, 0),),
             *, case: Geometry = CASE, spacing: Sequence[float] | None = None, space: str = "left-posterior-superior",
             ) -> bytes:
    """A .seg.nrrd as Slicer writes it: ``values`` (z, y, x), or (z, y, x, layer) for overlapping segments,
    cropped so that its first voxel is at case voxel index ``offset`` (x, y, z; may be fractional)."""
    spacing = case.spacing if spacing is None else spacing
    axes = np.asarray(case.direction).reshape(3, 3) * np.asarray(spacing)
    origin = np.asarray(case.origin) + (np.asarray(case.direction).reshape(3, 3) * np.asarray(case.spacing)) @ offset
    if space == "right-anterior-superior":  # same points, RAS coordinates
        axes, origin = axes * np.array([[-1.0], [-1.0], [1.0]]), origin * np.array([-1.0, -1.0, 1.0])
    layered = values.ndim == 4
    sizes = [values.shape[2], values.shape[1], values.shape[0]]
    vectors = " ".join("(" + ",".join(f"{c:.17g}" for c in axes[:, i]) + ")" for i in range(3))
    lines = ["NRRD0004", "type: unsigned char", f"dimension: {4 if layered else 3}", f"space: {space}",
             "sizes: " + " ".join(str(v) for v in ([values.shape[3]] if layered else []) + sizes),
             "space directions: " + ("none " if layered else "") + vectors,
             "kinds: " + ("list " if layered else "") + "domain domain domain", "encoding: gzip",
             "space origin: (" + ",".join(f"{c:.17g}" for c in origin) + ")",
             "Segmentation_MasterRepresentation:=Binary labelmap"]
    for i, (name, value, layer) in enumerate(segments):
        lines += [f"Segment{i}_ID:=Segment_{i + 1}", f"Segment{i}_Name:={name}", f"Segment{i}_LabelValue:={value}",
                  f"Segment{i}_Layer:={layer}"]
    return ("\n".join(lines) + "\n\n").encode() + gzip.compress(np.ascontiguousarray(values, np.uint8).tobytes())


def _read(data: bytes, labels: Sequence[str] = LABELS) -> np.ndarray:
    mask = read_nifti(read_slicer_segmentation(UploadedFile("label.seg.nrrd", data), CASE, labels))
    assert Geometry.of(mask).shape == CASE.shape
    assert np.allclose(mask.GetOrigin(), CASE.origin) and np.allclose(mask.GetSpacing(), CASE.spacing)
    return sitk.GetArrayFromImage(mask)


def _crop() -> np.ndarray:
    crop = np.zeros((2, 3, 4), dtype=np.uint8)  # z, y, x
    crop[0, 1, 2] = 1
    crop[1, 2, 3] = 2
    return crop


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_crop_on_the_lattice_is_placed_on_the_full_grid(space: str) -> None:
    full = _read(seg_nrrd(_crop(), (3, 4, 2), (("liver", 1, 0), ("tumour", 2, 0)), space=space))
    expected = np.zeros(CASE.shape[::-1], dtype=np.uint8)
    expected[2:4, 4:7, 3:7] = _crop()
    assert np.array_equal(full, expected)


def test_one_layer_stored_as_a_list_axis_is_read_as_that_layer() -> None:
    full = _read(seg_nrrd(_crop()[..., None], (3, 4, 2), (("liver", 1, 0), ("tumour", 2, 0))))
    assert np.array_equal(full[2:4, 4:7, 3:7], _crop()) and np.count_nonzero(full) == 2


def test_crop_reaching_past_the_image_keeps_its_inside_when_the_outside_is_empty() -> None:
    crop = np.zeros((2, 3, 4), dtype=np.uint8)
    crop[0, 0, 0] = 1  # case voxel (x, y, z) = (8, 10, 5); columns 10 and 11 lie outside x < 10
    full = _read(seg_nrrd(crop, (8, 10, 5)))
    assert np.count_nonzero(full) == 1 and full[5, 10, 8] == 1
    crop[1, 2, 3] = 1
    with pytest.raises(GeometryMismatch, match="1 segmented voxels lie outside the image"):
        _read(seg_nrrd(crop, (8, 10, 5)))


def test_off_lattice_crops_are_refused_naming_the_problem() -> None:
    with pytest.raises(GeometryMismatch, match=r"origin lies 0.50 voxels off the image's voxel grid"):
        _read(seg_nrrd(_crop(), (3, 4.5, 2)))
    with pytest.raises(GeometryMismatch, match=r"voxel spacing \[0.4, 0.9, 2.5\] differs from the image's"):
        _read(seg_nrrd(_crop(), (3, 4, 2), spacing=(0.4, 0.9, 2.5)))


def test_overlapping_segments_are_refused_with_how_to_export_them() -> None:
    layers = np.zeros((2, 3, 4, 2), dtype=np.uint8)
    layers[0, 1, 2, 0], layers[0, 1, 2, 1] = 1, 1  # one voxel in both segments
    data = seg_nrrd(layers, (3, 4, 2), (("liver", 1, 0), ("tumour", 1, 1)))
    with pytest.raises(OverlappingSegments) as refused:
        _read(data)
    assert refused.value.status == 422 and "overlapping segments (2 layers)" in refused.value.detail
    assert "Overwrite all" in refused.value.detail and ".nii.gz" in refused.value.detail


def test_label_values_are_checked_like_any_label() -> None:
    with pytest.raises(InvalidLabelValues, match=r"label values \[3\] are outside the project's classes 0..2"):
        _read(seg_nrrd((_crop() > 0).astype(np.uint8) * 3, (3, 4, 2), (("Segment_1", 3, 0),)))
    with pytest.raises(InvalidLabelValues, match="segment 'tumour' has label value 1 in the file but 2 in the project"):
        _read(seg_nrrd(_crop() % 2, (3, 4, 2), (("tumour", 1, 0),)))
