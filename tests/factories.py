"""Small synthetic volumes and upload helpers for tests."""

from __future__ import annotations

import io
import tempfile
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from fastapi.testclient import TestClient

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-10.0, 20.0, 5.0)


def volume(
    shape_zyx: tuple[int, int, int] = (6, 7, 8), *, seed: int = 0, dtype: Any = np.int16,
    spacing: Sequence[float] = SPACING, origin: Sequence[float] = ORIGIN,
) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-100, 400, size=shape_zyx).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    return image


def label_like(image: sitk.Image, values: Sequence[int] = (0, 1, 2), dtype: Any = np.uint8) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=dtype)
    flat = array.reshape(-1)
    for i, v in enumerate(values):
        flat[i::len(values)] = v
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    return label


def encode(image: sitk.Image, suffix: str = ".nii.gz") -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        sitk.WriteImage(image, str(path), useCompression=suffix.endswith(".gz"))
        return path.read_bytes()


def zip_files(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def create_project(client: TestClient, headers: dict[str, str], name: str = "demo",
                   labels: Sequence[str] = ("background", "a", "b"), modality: str = "CT") -> dict[str, Any]:
    r = client.post("/api/v1/projects", json={"name": name, "modality": modality, "labels": list(labels)},
                    headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload_case(client: TestClient, headers: dict[str, str], project_id: int, data: bytes,
                filename: str = "img.nii.gz", patient: str = "HOSP-0001") -> Any:
    return client.post(f"/api/v1/projects/{project_id}/cases", files={"file": (filename, data)},
                       data={"patient": patient}, headers=headers)


def upload_label(client: TestClient, headers: dict[str, str], case_id: int, data: bytes,
                 filename: str = "label.nii.gz") -> Any:
    return client.put(f"/api/v1/cases/{case_id}/label", files={"file": (filename, data)}, headers=headers)


def snapshot(blob_dir: Path) -> tuple[dict[str, int], set[str]]:
    """Row counts of every table and the set of stored blobs: compare before/after a rejected request."""
    from sqlalchemy import func, select

    from app.core import db
    from app.models import Base

    with db.session_scope() as session:
        counts = {t.name: int(session.scalar(select(func.count()).select_from(t)) or 0)
                  for t in Base.metadata.sorted_tables if t.name != "audit_log"}
    blobs = {str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file()} if blob_dir.exists() else set()
    return counts, blobs


def dicom_slices(
    n: int = 4, *, series_uid: str = "1.2.826.0.1.3680043.8.498.1", spacing: float = 2.0,
    skip: int | None = None, patient_name: str = "DOE^JANE", slope: float = 1.0, intercept: float = 0.0,
    modality: str | None = "MR",
) -> dict[str, bytes]:
    """A synthetic axial DICOM series (16-bit slices, Modality MR unless told); ``skip`` drops one slice to make a gap.

    ``modality=None`` leaves out the Modality attribute (0008,0060).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    files: dict[str, bytes] = {}
    rng = np.random.default_rng(n)
    for i in range(n):
        if i == skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = "MRN-12345"
        ds.PatientBirthDate = "19700101"
        if modality is not None:
            ds.Modality = modality
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.100"
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.200"
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-50.0, -40.0, 10.0 + i * spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.75]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = 6, 5
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = rng.integers(0, 1000, size=(6, 5)).astype(np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[f"slice{i:03d}.dcm"] = buf.getvalue()
    # shuffled order: the reader must sort by position, not by name or arrival
    return dict(reversed(list(files.items())))


def bulk_cases(project_id: int, n: int, blob_dir: Path, shape: tuple[int, int, int] = (2, 3, 4)
               ) -> tuple[list[int], bytes]:
    """Insert n cases straight into the database (queue tests need many, not many distinct images).

    Every case points at one real tiny image blob, so label uploads validate against real geometry.
    Returns the case ids and the bytes of a label mask that fits them.
    """
    from sqlalchemy import insert

    from app.cases.imaging import Geometry
    from app.core import db
    from app.core.storage import BlobStore
    from app.models import Case, Patient

    image = volume(shape)
    blob = BlobStore(blob_dir).put(encode(image), "nii.gz")
    geo = Geometry.of(image)
    with db.session_scope() as session:
        tag = uuid.uuid4().hex[:8]
        patient = Patient(project_id=project_id, pseudonym=f"PT-{tag}", external_id_hash=tag * 8)
        session.add(patient)
        session.flush()
        rows = [
            {"project_id": project_id, "patient_id": patient.id, "sha256": f"{tag}{i:056x}", "blob_key": blob.key,
             "shape": list(geo.shape), "spacing": list(geo.spacing), "origin": list(geo.origin),
             "direction": list(geo.direction), "dtype": "int16", "source_format": "nifti", "status": "unlabelled",
             "split": "pool", "pinned": False, "excluded": False}
            for i in range(n)
        ]
        ids = list(session.scalars(insert(Case).returning(Case.id), rows))
    return sorted(ids), encode(label_like(image, (0, 1)))
