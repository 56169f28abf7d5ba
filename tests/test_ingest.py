"""Case ingest: every accepted format, and every rejected upload leaves nothing behind."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from tests.conftest import Login
from tests.factories import (
    create_project,
    dicom_slices,
    encode,
    snapshot,
    upload_case,
    volume,
    zip_files,
)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_formats_are_ingested_with_geometry(
    client: TestClient, admin: Login, suffix: str, tmp_path: Path
) -> None:
    project = create_project(client, admin.headers)
    r = upload_case(client, admin.headers, project["id"], encode(volume(), suffix), filename=f"scan{suffix}")
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["shape"] == [8, 7, 6]  # ITK order x, y, z
    assert case["spacing"] == pytest.approx([0.8, 0.9, 2.5], rel=1e-6)
    assert case["status"] == "unlabelled" and case["split"] == "pool"
    assert case["patient"].startswith("PT-")
    image = client.get(f"/api/v1/cases/{case['id']}/image", headers=admin.headers)
    assert image.status_code == 200
    path = tmp_path / "downloaded.nii.gz"
    path.write_bytes(image.content)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(got, sitk.GetArrayFromImage(volume()))


def test_same_patient_keeps_one_pseudonym_and_no_external_id_is_stored(
    client: TestClient, admin: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers)
    a = upload_case(client, admin.headers, project["id"], encode(volume(seed=1)), patient="HOSP-777").json()
    b = upload_case(client, admin.headers, project["id"], encode(volume(seed=2)), patient="HOSP-777").json()
    c = upload_case(client, admin.headers, project["id"], encode(volume(seed=3)), patient="HOSP-778").json()
    assert a["patient"] == b["patient"] != c["patient"]
    from sqlalchemy import select

    from app.core import db
    from app.models import Patient

    with db.session_scope() as session:
        stored = [(p.pseudonym, p.external_id_hash) for p in session.scalars(select(Patient))]
    assert all("HOSP" not in pseudo and "HOSP" not in digest for pseudo, digest in stored)


def test_dicom_series_zip_sorted_rescaled_and_stripped(client: TestClient, admin: Login, settings_env: Path) -> None:
    project = create_project(client, admin.headers, modality="MR")
    slices = dicom_slices(5, slope=2.0, intercept=-100.0)
    r = upload_case(client, admin.headers, project["id"], zip_files(slices), filename="series.zip")
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["shape"] == [5, 6, 5]
    assert case["spacing"] == pytest.approx([0.75, 0.5, 2.0])
    assert case["origin"] == pytest.approx([-50.0, -40.0, 10.0])
    assert case["source_format"] == "dicom"
    assert "DOE" not in r.text and "MRN-12345" not in r.text
    for blob in settings_env.rglob("*"):
        if blob.is_file():
            assert b"DOE^JANE" not in blob.read_bytes() and b"MRN-12345" not in blob.read_bytes()
    data = client.get(f"/api/v1/cases/{case['id']}/image", headers=admin.headers).content
    from app.cases.imaging import read_nifti

    array = sitk.GetArrayFromImage(read_nifti(data))
    first = pydicom.dcmread(io.BytesIO(slices["slice000.dcm"]))
    np.testing.assert_array_equal(array[0], first.pixel_array * 2.0 - 100.0)


def test_several_dcm_files_form_one_case(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers, modality="MR")
    files = [("file", (name, data)) for name, data in dicom_slices(3).items()]
    r = client.post(f"/api/v1/projects/{project['id']}/cases", files=files, data={"patient": "P1"},
                    headers=admin.headers)
    assert r.status_code == 201, r.text
    assert r.json()["shape"] == [5, 6, 3]


def test_same_image_twice_is_409(client: TestClient, admin: Login, settings_env: Path) -> None:
    project = create_project(client, admin.headers)
    data = encode(volume())
    first = upload_case(client, admin.headers, project["id"], data)
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], data, patient="other")
    assert r.status_code == 409
    assert r.json()["detail"] == f"this image is already case {first.json()['id']} of the project"
    assert snapshot(settings_env) == before


OVERRIDE = "send allow_modality_mismatch=true to ingest it anyway"
MODALITY_MISMATCHES = {
    "MR series, CT project": ("CT", "MR", f"series modality MR does not match project modality CT; {OVERRIDE}"),
    "CT series, MR project": ("MR", "CT", f"series modality CT does not match project modality MR; {OVERRIDE}"),
    "series without modality": ("CT", None, "the DICOM series has no Modality (0008,0060), so it cannot be checked "
                                            f"against project modality CT; {OVERRIDE}"),
}


@pytest.mark.parametrize("name", list(MODALITY_MISMATCHES))
@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "dcm files"])
def test_dicom_series_of_another_modality_is_422_and_nothing_changes(
    client: TestClient, admin: Login, settings_env: Path, name: str, as_zip: bool
) -> None:
    project_modality, series_modality, detail = MODALITY_MISMATCHES[name]
    project = create_project(client, admin.headers, modality=project_modality)
    slices = dicom_slices(3, modality=series_modality)
    files = [("file", ("series.zip", zip_files(slices)))] if as_zip else [("file", kv) for kv in slices.items()]
    before = snapshot(settings_env)
    r = client.post(f"/api/v1/projects/{project['id']}/cases", files=files, data={"patient": "P1"},
                    headers=admin.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (r.json()["detail"], r.json()["field"]) == (detail, "file")
    assert r.json()["type"].endswith("/modality-mismatch")
    assert snapshot(settings_env) == before


def test_modality_mismatch_is_ingested_when_explicitly_allowed_and_audited(
    client: TestClient, admin: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, modality="CT")
    data = zip_files(dicom_slices(3, modality="MR"))
    r = client.post(f"/api/v1/projects/{project['id']}/cases", files={"file": ("series.zip", data)},
                    data={"patient": "P1", "allow_modality_mismatch": "true"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    audit = client.get(f"/api/v1/projects/{project['id']}/audit", headers=admin.headers).json()
    assert audit[0]["action"] == "case.create" and audit[0]["detail"]["series_modality"] == "MR"


@pytest.mark.parametrize("odd_one,detail", [
    ("CT", "the DICOM slices name different modalities (CT, MR); send one series per case"),
    ("m/r", "a DICOM slice has a malformed Modality (0008,0060) value"),
])
def test_slices_of_one_series_with_other_or_malformed_modality_are_400(
    client: TestClient, admin: Login, settings_env: Path, odd_one: str, detail: str
) -> None:
    project = create_project(client, admin.headers, modality="MR")
    slices = dicom_slices(3)
    odd = pydicom.dcmread(io.BytesIO(slices["slice001.dcm"]))
    odd.Modality = odd_one
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when writing the malformed value: that is the point
        odd.save_as(buf)
    slices["slice001.dcm"] = buf.getvalue()
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], zip_files(slices), filename="series.zip")
    assert (r.status_code, r.json()["detail"]) == (400, detail)
    assert snapshot(settings_env) == before


def test_volume_files_carry_no_modality_and_are_not_checked(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers, modality="MR")
    assert upload_case(client, admin.headers, project["id"], encode(volume())).status_code == 201


BAD_UPLOADS = {
    "corrupt": (("scan.nii.gz", b"\x1f\x8b" + b"not really gzip" * 10), 400,
                "'scan.nii.gz' has a compressed stream that ends early or is corrupt: the file is truncated"),
    "wrong extension": (("scan.png", b"\x89PNG fake"), 415,
                        "unsupported upload 'scan.png': send one .nii/.nii.gz/.nrrd/.mha file, one .zip of a "
                        "DICOM series, or the .dcm files of one series"),
    "empty": (("scan.nii.gz", b""), 400, "file 'scan.nii.gz' is empty"),
    "two series": (("two.zip", zip_files({**{f"a/{k}": v for k, v in dicom_slices(3).items()},
                                          **{f"b/{k}": v for k, v in dicom_slices(3, series_uid="1.2.3.9").items()}})),
                   400, "the upload holds 2 DICOM series; send one series per case"),
    "slice gap": (("gap.zip", zip_files(dicom_slices(5, skip=2))), 400,
                  "the DICOM slices are not evenly spaced (gaps from 2.000 to 4.000 mm): a slice is missing or "
                  "the series is irregular"),
    "not dicom in zip": (("junk.zip", zip_files({"a.dcm": b"hello"})), 400, "'a.dcm' is not a readable DICOM file"),
    "bad zip": (("broken.zip", b"PK\x03\x04 truncated"), 400, "'broken.zip' is not a readable zip archive"),
    "2d image": (("flat.nrrd", encode(sitk.GetImageFromArray(np.zeros((4, 4), np.int16)), ".nrrd")), 400,
                 "'flat.nrrd' is 2D; a 3D volume is required"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_upload_rejected_and_nothing_changes(
    client: TestClient, admin: Login, settings_env: Path, name: str
) -> None:
    project = create_project(client, admin.headers)
    (filename, data), status, detail = BAD_UPLOADS[name]
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], data, filename=filename)
    assert r.status_code == status, r.text
    assert r.json()["detail"] == detail
    assert r.json()["field"] == "file"
    assert snapshot(settings_env) == before


@pytest.fixture
def one_mib_limit(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setenv("NEXTCASE_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()


def test_upload_over_limit_is_413_and_nothing_changes(
    client: TestClient, admin: Login, settings_env: Path, one_mib_limit: None
) -> None:
    project = create_project(client, admin.headers)
    big = encode(volume((40, 100, 100), dtype=np.float32), ".nii")  # ~1.5 MiB uncompressed
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], big, filename="big.nii")
    assert r.status_code == 413
    assert r.json()["detail"].endswith("the limit is NEXTCASE_MAX_UPLOAD_MB=1")
    huge = encode(volume((80, 100, 100), dtype=np.float32), ".nii")  # refused from Content-Length alone
    r = upload_case(client, admin.headers, project["id"], huge, filename="huge.nii")
    assert r.status_code == 413
    assert snapshot(settings_env) == before


def test_annotator_cannot_ingest(client: TestClient, admin: Login, annotator: Login, settings_env: Path) -> None:
    project = create_project(client, admin.headers)
    before = snapshot(settings_env)
    r = upload_case(client, annotator.headers, project["id"], encode(volume()))
    assert r.status_code == 403
    assert snapshot(settings_env) == before


def test_missing_patient_field_is_422(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers)
    r = client.post(f"/api/v1/projects/{project['id']}/cases", files={"file": ("a.nii.gz", encode(volume()))},
                    headers=admin.headers)
    assert r.status_code == 422
    assert r.json()["field"] == "patient"


def test_zip_that_unpacks_over_the_limit_is_413(
    client: TestClient, admin: Login, settings_env: Path, one_mib_limit: None
) -> None:
    project = create_project(client, admin.headers)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\0" * (3 * 2**20))  # a few KiB that unpack to 3 MiB
    bomb = packed.getvalue()
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], bomb, filename="bomb.zip")
    assert r.status_code == 413 and r.json()["detail"].startswith("'bomb.zip' unpacks to 3.0 MiB")
    assert snapshot(settings_env) == before


def test_dicom_slices_of_different_sizes_are_400(client: TestClient, admin: Login, settings_env: Path) -> None:
    project = create_project(client, admin.headers)
    slices = dicom_slices(3)
    odd = pydicom.dcmread(io.BytesIO(slices["slice001.dcm"]))
    odd.Rows, odd.Columns = 5, 6
    buf = io.BytesIO()
    odd.save_as(buf)
    slices["slice001.dcm"] = buf.getvalue()
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], zip_files(slices), filename="series.zip")
    assert (r.status_code, r.json()["detail"]) == (400, "the DICOM slices differ in size (Rows x Columns)")
    assert snapshot(settings_env) == before


def test_chunked_upload_without_length_is_411(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers)

    def body() -> Any:
        yield b"--x\r\n"

    r = client.post(f"/api/v1/projects/{project['id']}/cases", content=body(), headers={
        **admin.headers, "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 411
