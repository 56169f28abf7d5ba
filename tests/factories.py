"""Small synthetic volumes and upload helpers for tests."""

from __future__ import annotations

import io
import tempfile
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
