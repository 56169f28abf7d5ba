"""3D Slicer segmentation files (.seg.nrrd) as label uploads.

Slicer saves a segmentation cropped to the extent of its segments, on the source volume's voxel
lattice, with ``SegmentN_Name``, ``SegmentN_LabelValue`` and ``SegmentN_Layer`` keys; segments that
overlap go to separate layers, stored as a 4th (list) axis. A single-layer crop on the case's lattice
is placed onto the case's full grid (zeros elsewhere). Anything else is refused with what to change
in Slicer: a label version is one label map, so it cannot hold overlapping segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from app.cases.imaging import (
    DIRECTION_ATOL,
    ORIGIN_TOL_VOXELS,
    SPACING_RTOL,
    Geometry,
    UploadedFile,
    check_label_values,
    mask_nifti,
    read_image,
    require_scalar_3d,
)
from app.core.errors import DomainError, GeometryMismatch, InvalidLabelValues

SEGMENT_KEY = re.compile(r"^Segment(\d+)_(Name|LabelValue|Layer)$")
EXPORT_ADVICE = ("In Slicer, make the segments non-overlapping (Segment Editor, Masking: 'Modify other segments: "
                 "Overwrite all') and save again, or send a label map: in the MONAI Label settings set 'File "
                 "Extension' to .nii.gz or turn off 'Allow Overlapping Segmentations', or export the segments to "
                 "a labelmap volume (Segmentations module, Export to files).")


class OverlappingSegments(DomainError):
    status, type, title = 422, "overlapping-segments", "Overlapping segments"


@dataclass(frozen=True)
class Segment:
    name: str
    value: int
    layer: int


def read_slicer_segmentation(upload: UploadedFile, case: Geometry, labels: Sequence[str]) -> bytes:
    """Validate a Slicer .seg.nrrd against its case and the label schema; return canonical NIfTI bytes.

    Args:
        upload: the file as sent (the same byte checks as any NRRD upload run first).
        case: the case's geometry; the segmentation must lie on its voxel lattice.
        labels: the project's label names, index = label value (0 is background).
    """
    image = read_image(upload)
    segments = _segments(image)
    image = _single_layer(image, segments)
    require_scalar_3d(image, upload.filename)
    offset = lattice_offset(Geometry.of(image), case)
    values = sitk.GetArrayFromImage(image)
    _check_segment_values(segments, labels)
    check_label_values(values, len(labels))
    return mask_nifti(place_on_grid(values, offset, case.shape), case, len(labels))


def _segments(image: sitk.Image) -> list[Segment]:
    fields: dict[int, dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        match = SEGMENT_KEY.match(key)
        if match:
            fields.setdefault(int(match[1]), {})[match[2]] = image.GetMetaData(key).strip()
    segments = []
    for index, found in sorted(fields.items()):
        try:
            segments.append(Segment(found.get("Name", f"Segment{index}"), int(found.get("LabelValue", "1")),
                                    int(found.get("Layer", "0"))))
        except ValueError as exc:
            raise InvalidLabelValues(f"segment {index} has a label value or layer that is not a whole number",
                                     field="label") from exc
    return segments


def _single_layer(image: sitk.Image, segments: list[Segment]) -> sitk.Image:
    layers = max(image.GetNumberOfComponentsPerPixel(), len({s.layer for s in segments}))
    if layers > 1:
        raise OverlappingSegments(f"the segmentation stores overlapping segments ({layers} layers); a label is one "
                                  f"label map, so each voxel can belong to one segment only. {EXPORT_ADVICE}",
                                  field="label")
    if image.GetPixelIDTypeAsString().startswith("vector"):
        image = sitk.VectorIndexSelectionCast(image, 0)  # a list axis of length 1: the one layer
    return image


def lattice_offset(crop: Geometry, case: Geometry) -> tuple[int, int, int]:
    """The case voxel index of the crop's first voxel; GeometryMismatch when it is off the case's lattice."""
    if not np.allclose(crop.spacing, case.spacing, rtol=SPACING_RTOL, atol=0):
        raise GeometryMismatch(f"the segmentation's voxel spacing {_fmt(crop.spacing)} differs from the image's "
                               f"{_fmt(case.spacing)}: it is not on the image's voxel grid", field="label")
    if not np.allclose(crop.direction, case.direction, rtol=0, atol=DIRECTION_ATOL):
        raise GeometryMismatch("the segmentation's axes are oriented differently from the image's: it is not on "
                               "the image's voxel grid", field="label")
    axes = np.asarray(case.direction).reshape(3, 3) * np.asarray(case.spacing)  # column i: voxel step along axis i
    index = np.linalg.solve(axes, np.subtract(crop.origin, case.origin))
    off = np.abs(index - np.round(index))
    if np.any(off > ORIGIN_TOL_VOXELS):
        raise GeometryMismatch(f"the segmentation's origin lies {float(off.max()):.2f} voxels off the image's voxel "
                               f"grid (tolerance {ORIGIN_TOL_VOXELS:.0%} of a voxel)", field="label")
    x, y, z = (int(v) for v in np.round(index))
    return x, y, z


def place_on_grid(values: np.ndarray, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """Paste (z, y, x) ``values`` whose first voxel is case index ``offset`` (x, y, z) into a zero grid of ``shape``.

    Voxels of the crop outside the grid may only be background: a segment drawn beyond the image is refused.
    """
    full = np.zeros(shape[::-1], dtype=values.dtype)
    start = np.array(offset[::-1])  # (z, y, x) from here on
    lo = np.maximum(start, 0)
    hi = np.minimum(start + values.shape, full.shape)
    inside = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, np.maximum(hi, lo), start, strict=True))
    outside = int(np.count_nonzero(values)) - int(np.count_nonzero(values[inside]))
    if outside:
        raise GeometryMismatch(f"{outside} segmented voxels lie outside the image", field="label")
    full[tuple(slice(int(a), int(b)) for a, b in zip(lo, np.maximum(hi, lo), strict=True))] = values[inside]
    return full


def _check_segment_values(segments: list[Segment], labels: Sequence[str]) -> None:
    index = {name.lower(): i for i, name in enumerate(labels)}
    for segment in segments:
        expected = index.get(segment.name.lower())
        if expected is not None and expected != segment.value:
            raise InvalidLabelValues(f"segment {segment.name[:40]!r} has label value {segment.value} in the file but "
                                     f"{expected} in the project", field="label")


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
