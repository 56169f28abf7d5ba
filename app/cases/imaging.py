"""Reading uploads into canonical images, and checking label masks against a case.

Everything here works in memory or in a private temporary directory: nothing is stored until the
upload has been fully validated. The canonical copy is rebuilt from the voxel array and geometry
alone, so no header field of the source (DICOM tags, NRRD/MHA key-values, NIfTI descrip) survives.
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from app.cases.volume_files import check_volume_bytes
from app.core.config import get_settings
from app.core.errors import GeometryMismatch, InvalidLabelValues, InvalidUpload, UnsupportedFormat, UploadTooLarge

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
# Geometry tolerances for a label against its case. NIfTI stores geometry as float32 and viewers
# round-trip it, so exact equality would reject honest masks; these still catch any real shift.
SPACING_RTOL = 1e-3  # relative to the case spacing
ORIGIN_TOL_VOXELS = 0.01  # fraction of the voxel size along each axis
DIRECTION_ATOL = 1e-3  # direction cosines
SLICE_GAP_RTOL = 0.01  # DICOM slice positions must be evenly spaced to within 1 %
MODALITY_VALUE = re.compile(r"[A-Z0-9_ ]{1,16}")  # the DICOM code-string (CS) alphabet and length
UID_VALUE = re.compile(r"[0-9]+(\.[0-9]+)*")  # a DICOM UID (UI): digits and dots, at most 64 characters


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, int, int]  # (x, y, z) as ITK counts them
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        size = image.GetSize()
        return cls(
            shape=(int(size[0]), int(size[1]), int(size[2])),
            spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in image.GetDirection()),
        )


@dataclass(frozen=True)
class DicomReferences:
    """What a DICOM SEG of the case must reference: identifiers of the source series, never names or dates.

    ``instances`` and ``positions`` follow the case's slice order (index k is slice z = k of the stored image).
    Kept apart from the case (see app.models.DicomReference): only the SEG export and admins read it.
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    sop_class_uid: str
    instances: tuple[str, ...]  # SOP Instance UIDs
    positions: tuple[tuple[float, float, float], ...]  # Image Position (Patient) of each slice
    orientation: tuple[float, ...]  # Image Orientation (Patient), six direction cosines
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) as DICOM writes it


@dataclass(frozen=True)
class CanonicalImage:
    nifti: bytes  # gzip-compressed NIfTI, the stored form
    geometry: Geometry
    dtype: str
    source_format: str
    modality: str | None = None  # DICOM Modality (0008,0060); None when the format carries none
    references: DicomReferences | None = None  # DICOM-born images only; stored apart from the case


def volume_suffix(filename: str) -> str | None:
    lower = filename.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def read_case_upload(files: list[UploadedFile]) -> CanonicalImage:
    """Turn the files of one ingest request into a canonical 3D image."""
    if not files:
        raise InvalidUpload("no file uploaded", field="file")
    for f in files:
        if not f.data:
            raise InvalidUpload(f"file {f.filename!r} is empty", field="file")
    if len(files) == 1 and volume_suffix(files[0].filename):
        return _canonical(read_volume(files[0]), _format_name(files[0].filename))
    if len(files) == 1 and files[0].filename.lower().endswith(".zip"):
        members = _unzip(files[0])
        _require_safe_member_names(files[0].filename, members)
        return _canonical(*read_dicom_series(members))
    if all(f.filename.lower().endswith(".dcm") for f in files):
        return _canonical(*read_dicom_series(files))
    names = ", ".join(repr(f.filename) for f in files)
    raise UnsupportedFormat(
        f"unsupported upload {names}: send one .nii/.nii.gz/.nrrd/.mha file, one .zip of a DICOM series, "
        "or the .dcm files of one series",
        field="file",
    )


def _format_name(filename: str) -> str:
    suffix = volume_suffix(filename) or ""
    return {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".mha": "mha"}.get(suffix, "unknown")


def read_volume(upload: UploadedFile) -> sitk.Image:
    """Read one NIfTI/NRRD/MHA file with SimpleITK; the format follows the file name."""
    image = read_image(upload)
    require_scalar_3d(image, upload.filename)
    return image


def read_image(upload: UploadedFile) -> sitk.Image:
    """Like :func:`read_volume` with the same byte checks, but any dimension and component count."""
    suffix = volume_suffix(upload.filename)
    if suffix is None:
        raise UnsupportedFormat(
            f"unsupported file type {upload.filename!r}: expected .nii, .nii.gz, .nrrd or .mha", field="file"
        )
    if not upload.data:
        raise InvalidUpload(f"file {upload.filename!r} is empty", field="file")
    check_volume_bytes(upload.filename, suffix, upload.data)
    with tempfile.TemporaryDirectory(prefix="nextcase-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(upload.data)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InvalidUpload(
                f"could not read {upload.filename!r} as {suffix[1:]}: the file is corrupt or truncated",
                field="file",
            ) from exc
    return image


def require_scalar_3d(image: sitk.Image, name: str) -> None:
    if image.GetDimension() != 3:
        raise InvalidUpload(f"{name!r} is {image.GetDimension()}D; a 3D volume is required", field="file")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidUpload(f"{name!r} has several components per voxel; one is required", field="file")
    if min(image.GetSize()) < 1:
        raise InvalidUpload(f"{name!r} has an empty dimension", field="file")
    _require_valid_geometry(image, name)


def _require_valid_geometry(image: sitk.Image, name: str) -> None:
    spacing = image.GetSpacing()
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        shown = ", ".join(f"{v:g}" for v in spacing)
        raise InvalidUpload(f"{name!r} has the voxel spacing [{shown}]; every spacing must be a positive, "
                            "finite number", field="file")
    if not all(np.isfinite(v) for v in (*image.GetOrigin(), *image.GetDirection())):
        raise InvalidUpload(f"{name!r} has a non-finite origin or direction", field="file")


def _require_finite_voxels(array: np.ndarray) -> None:
    # ITK would store NaN as-is and training would turn it into zeros; a scan with NaN is broken data.
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidUpload("the image holds NaN or infinite voxel values", field="file")


def _canonical(
    image: sitk.Image, source_format: str, modality: str | None = None, references: DicomReferences | None = None,
) -> CanonicalImage:
    _require_valid_geometry(image, "the image")
    array = sitk.GetArrayViewFromImage(image)
    _require_finite_voxels(array)
    clean = sitk.GetImageFromArray(np.ascontiguousarray(array))
    clean.CopyInformation(image)  # geometry only: spacing, origin, direction
    return CanonicalImage(
        nifti=write_nifti(clean), geometry=Geometry.of(clean), dtype=str(array.dtype), source_format=source_format,
        modality=modality, references=references,
    )


def write_nifti(image: sitk.Image) -> bytes:
    with tempfile.TemporaryDirectory(prefix="nextcase-") as tmp:
        path = Path(tmp) / "image.nii.gz"
        sitk.WriteImage(image, str(path), useCompression=True)
        return path.read_bytes()


def read_nifti(data: bytes) -> sitk.Image:
    with tempfile.TemporaryDirectory(prefix="nextcase-") as tmp:
        path = Path(tmp) / "image.nii.gz"
        path.write_bytes(data)
        return sitk.ReadImage(str(path))


# --- DICOM -------------------------------------------------------------------------------------


def _unzip(upload: UploadedFile) -> list[UploadedFile]:
    limit = get_settings().max_upload_bytes
    too_large = f"the limit is NEXTCASE_MAX_UPLOAD_MB={get_settings().max_upload_mb}"
    try:
        with zipfile.ZipFile(io.BytesIO(upload.data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir() and not _is_junk(m.filename)]
            unpacked = sum(m.file_size for m in members)
            if unpacked > limit:
                raise UploadTooLarge(f"{upload.filename!r} unpacks to {unpacked / 2**20:.1f} MiB; {too_large}",
                                     field="file")
            files, total = [], 0
            for m in members:
                # The declared sizes may lie, and ZipFile.read inflates a member in one call: read in
                # chunks, counting what really comes out, and stop at the limit. zipfile would stop at
                # the declared size (then fail the CRC), so it is raised beyond anything read here.
                m.file_size, chunks = limit + 2 * 2**20, []
                with archive.open(m) as member:
                    while chunk := member.read(2**20):
                        total += len(chunk)
                        if total > limit:
                            raise UploadTooLarge(f"{upload.filename!r} unpacks to over {limit / 2**20:.1f} MiB; "
                                                 f"{too_large}", field="file")
                        chunks.append(chunk)
                files.append(UploadedFile(m.filename, b"".join(chunks)))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidUpload(f"{upload.filename!r} is not a readable zip archive", field="file") from exc
    if not files:
        raise InvalidUpload(f"{upload.filename!r} contains no files", field="file")
    return files


def _require_safe_member_names(archive: str, members: list[UploadedFile]) -> None:
    """Refuse archives whose member names are absolute or climb out of their folder.

    Nothing is extracted to disk, but such names only come from hostile or broken archives.
    """
    for member in members:
        parts = member.filename.replace("\\", "/").split("/")
        if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise InvalidUpload(f"{archive!r} holds a member with an unsafe path (absolute or containing '..'); "
                                "re-create the archive with relative names", field="file")


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith(".") or base.upper() == "DICOMDIR"


def _read_dicom(f: UploadedFile) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(f.data))
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise InvalidUpload(f"{f.filename!r} is not a readable DICOM file", field="file") from exc
    check_dicom_slice(ds, repr(f.filename))
    return ds


def check_dicom_slice(ds: pydicom.Dataset, name: str) -> None:
    """Refuse a slice without the geometry a volume needs; ``name`` says which slice (never a header value)."""
    missing = [t for t in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
               if t not in ds]
    if missing:
        raise InvalidUpload(f"{name} lacks the DICOM attribute(s) {', '.join(missing)}", field="file")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise InvalidUpload(f"{name} is a multi-frame DICOM object; send single-frame slices", field="file")
    try:
        geometry_ok = len(ds.ImageOrientationPatient) == 6 and len(ds.ImagePositionPatient) == 3 and len(
            ds.PixelSpacing) == 2 and all(float(v) for v in ds.PixelSpacing)
    except (TypeError, ValueError):
        geometry_ok = False
    if not geometry_ok:
        raise InvalidUpload(f"{name} has malformed position, orientation or pixel spacing", field="file")


def read_dicom_series(
    files: list[UploadedFile],
) -> tuple[sitk.Image, str, str | None, DicomReferences | None]:
    """Build a 3D image from the slices of exactly one DICOM series (see :func:`dicom_series_image`)."""
    return dicom_series_image([_read_dicom(f) for f in files])


def read_dicom_datasets(datasets: list[pydicom.Dataset]) -> CanonicalImage:
    """The canonical image of one series already parsed (e.g. retrieved over DICOMweb): same rules as uploads."""
    for i, ds in enumerate(datasets):
        check_dicom_slice(ds, f"slice {i + 1} of the series")
    return _canonical(*dicom_series_image(datasets))


def dicom_series_image(
    datasets: list[pydicom.Dataset],
) -> tuple[sitk.Image, str, str | None, DicomReferences | None]:
    """Build a 3D image from the slices of exactly one DICOM series.

    Slices are sorted by their position along the slice normal; the spacing between them must be
    uniform (a missing slice is rejected rather than silently stretched). Rescale slope and
    intercept are applied. Only geometry and pixels are kept, plus the series' Modality, which the
    ingest checks against the project's, and the UIDs a DICOM SEG must reference (kept apart).
    Returns the image, ``"dicom"``, the modality and the references.
    """
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for ds in datasets:
        series[str(ds.SeriesInstanceUID)].append(ds)
    if len(series) > 1:
        raise InvalidUpload(f"the upload holds {len(series)} DICOM series; send one series per case", field="file")
    if len(datasets) < 2:
        raise InvalidUpload("a DICOM series needs at least 2 slices for a 3D volume", field="file")
    if len({(int(d.Rows), int(d.Columns)) for d in datasets}) > 1:
        raise InvalidUpload("the DICOM slices differ in size (Rows x Columns)", field="file")
    row, col = _orientation(datasets[0])
    if any(not np.allclose(np.concatenate(_orientation(d)), np.concatenate((row, col)), atol=1e-3) for d in datasets):
        raise InvalidUpload("the DICOM slices differ in orientation", field="file")
    normal = np.cross(row, col)
    ordered = sorted(datasets, key=lambda d: float(np.dot(normal, _position(d))))
    slice_spacing = _uniform_slice_spacing(ordered, normal)
    volume = np.stack([_slice_pixels(d) for d in ordered])
    image = sitk.GetImageFromArray(_narrow_dtype(volume))
    pixel_spacing = [float(v) for v in ordered[0].PixelSpacing]  # (row spacing, column spacing)
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], slice_spacing))
    image.SetOrigin(tuple(float(v) for v in _position(ordered[0])))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    return image, "dicom", _series_modality(datasets), _references(ordered)


def _references(ordered: list[pydicom.Dataset]) -> DicomReferences | None:
    """None when the slices lack what a SEG must reference: valid, distinct SOP Instance UIDs and valid Study,
    Series and SOP Class UIDs (a SEG cannot reference a malformed UID). Such a series is still a valid image;
    only its SEG export is impossible (and says so).
    """
    first = ordered[0]
    sop_uids = tuple(str(d.get("SOPInstanceUID", "") or "") for d in ordered)
    series_level = [str(first.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")]
    if not all(_is_uid(uid) for uid in (*sop_uids, *series_level)) or len(set(sop_uids)) != len(sop_uids):
        return None
    frame_of_reference = str(first.get("FrameOfReferenceUID", "") or "")
    return DicomReferences(
        study_instance_uid=series_level[0],
        series_instance_uid=series_level[1],
        frame_of_reference_uid=frame_of_reference if _is_uid(frame_of_reference) else None,
        sop_class_uid=series_level[2],
        instances=sop_uids,
        positions=tuple((float(p[0]), float(p[1]), float(p[2])) for p in (_position(d) for d in ordered)),
        orientation=tuple(float(v) for v in first.ImageOrientationPatient),
        pixel_spacing=(float(first.PixelSpacing[0]), float(first.PixelSpacing[1])),
    )


def _is_uid(value: str) -> bool:
    return len(value) <= 64 and UID_VALUE.fullmatch(value) is not None


def _series_modality(datasets: list[pydicom.Dataset]) -> str | None:
    """The Modality (0008,0060) the slices share; None when none of them names one."""
    values = {str(ds.get("Modality", "") or "").strip() for ds in datasets} - {""}
    if any(not MODALITY_VALUE.fullmatch(v) for v in values):
        # Not echoed: a malformed value is arbitrary text from the file.
        raise InvalidUpload("a DICOM slice has a malformed Modality (0008,0060) value", field="file")
    if len(values) > 1:
        raise InvalidUpload(f"the DICOM slices name different modalities ({', '.join(sorted(values))}); "
                            "send one series per case", field="file")
    return values.pop() if values else None


def _orientation(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return iop[:3], iop[3:]


def _position(ds: pydicom.Dataset) -> np.ndarray:
    return np.array([float(v) for v in ds.ImagePositionPatient])


def _uniform_slice_spacing(ordered: list[pydicom.Dataset], normal: np.ndarray) -> float:
    positions = np.array([float(np.dot(normal, _position(d))) for d in ordered])
    gaps = np.diff(positions)
    if np.any(gaps <= 1e-6):
        raise InvalidUpload("the DICOM series has two slices at the same position", field="file")
    spacing = float(np.median(gaps))
    worst = float(np.max(np.abs(gaps - spacing)))
    if worst > SLICE_GAP_RTOL * spacing:
        raise InvalidUpload(
            f"the DICOM slices are not evenly spaced (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm): "
            "a slice is missing or the series is irregular",
            field="file",
        )
    return spacing


def _slice_pixels(ds: pydicom.Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as exc:  # pydicom raises many types for missing handlers / bad data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)  # name it: the sender can convert
        raise InvalidUpload("a DICOM slice has pixel data that cannot be decoded"
                            + (f" (transfer syntax {syntax.name}, {syntax})" if syntax else ""), field="file") from exc
    if pixels.ndim != 2:
        raise InvalidUpload("a DICOM slice is not a single-channel 2D image", field="file")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return pixels * slope + intercept


def _narrow_dtype(volume: np.ndarray) -> np.ndarray:
    """Keep integers as int16 where they fit exactly (CT HU, most MR); otherwise float32."""
    if np.all(np.mod(volume, 1) == 0) and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


# --- labels ------------------------------------------------------------------------------------


def read_label_upload(upload: UploadedFile, case: Geometry, num_classes: int) -> bytes:
    """Validate a label mask against its case and the label schema; return canonical NIfTI bytes."""
    image = read_volume(upload)
    check_geometry(Geometry.of(image), case)
    values = sitk.GetArrayFromImage(image)
    check_label_values(values, num_classes)
    return mask_nifti(values, case, num_classes)


def mask_nifti(values: np.ndarray, case: Geometry, num_classes: int) -> bytes:
    """Canonical NIfTI bytes of checked (z, y, x) label values on the case's grid."""
    mask = sitk.GetImageFromArray(values.astype(np.uint8 if num_classes <= 256 else np.uint16))
    mask.SetSpacing(case.spacing)
    mask.SetOrigin(case.origin)
    mask.SetDirection(case.direction)
    return write_nifti(mask)


def check_geometry(label: Geometry, case: Geometry) -> None:
    if label.shape != case.shape:
        raise GeometryMismatch(f"label shape {list(label.shape)} differs from case shape {list(case.shape)}",
                               field="file")
    spacing_ok = np.allclose(label.spacing, case.spacing, rtol=SPACING_RTOL, atol=0)
    if not spacing_ok:
        raise GeometryMismatch(
            f"label spacing {_fmt(label.spacing)} differs from case spacing {_fmt(case.spacing)} "
            f"(tolerance {SPACING_RTOL:.0e} relative)", field="file")
    tol = ORIGIN_TOL_VOXELS * np.asarray(case.spacing)
    if np.any(np.abs(np.subtract(label.origin, case.origin)) > tol):
        raise GeometryMismatch(
            f"label origin {_fmt(label.origin)} differs from case origin {_fmt(case.origin)} "
            f"(tolerance {ORIGIN_TOL_VOXELS:.0%} of a voxel)", field="file")
    if not np.allclose(label.direction, case.direction, rtol=0, atol=DIRECTION_ATOL):
        raise GeometryMismatch(
            f"label direction {_fmt(label.direction)} differs from case direction {_fmt(case.direction)}",
            field="file")


def check_label_values(values: np.ndarray, num_classes: int) -> None:
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(np.mod(values, 1) != 0):
            raise InvalidLabelValues("label values must be whole numbers (class indices)", field="file")
    elif values.dtype.kind not in "iub":
        raise InvalidLabelValues(f"label voxel type {values.dtype} is not an integer type", field="file")
    present = np.unique(values)
    bad = [int(v) for v in present if v < 0 or v >= num_classes]
    if bad:
        raise InvalidLabelValues(
            f"label values {bad[:10]}{' …' if len(bad) > 10 else ''} are outside the project's classes "
            f"0..{num_classes - 1}", field="file"
        )


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
