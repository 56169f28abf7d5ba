"""Label versions: validation against the case, versioning, downloads; cases listing and splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from app.cases.imaging import read_nifti
from tests.conftest import Login
from tests.factories import create_project, encode, label_like, snapshot, upload_case, upload_label, volume

SIX = ["background", "brainstem", "cord", "parotid_r", "parotid_l", "mandible"]


@pytest.fixture
def case(client: TestClient, admin: Login) -> dict[str, Any]:
    project = create_project(client, admin.headers, "hn", SIX)
    r = upload_case(client, admin.headers, project["id"], encode(volume()))
    assert r.status_code == 201
    return dict(r.json())


def test_versions_accumulate_and_are_never_overwritten(
    client: TestClient, case: dict[str, Any], annotator: Login, admin: Login
) -> None:
    image = volume()
    v1 = upload_label(client, annotator.headers, case["id"], encode(label_like(image, (0, 1)), ".nrrd"), "m.nrrd")
    v2 = upload_label(client, admin.headers, case["id"], encode(label_like(image, (0, 5, 2))))
    assert v1.status_code == v2.status_code == 201
    assert (v1.json()["version"], v2.json()["version"]) == (1, 2)
    listed = client.get(f"/api/v1/cases/{case['id']}/labels", headers=annotator.headers).json()
    assert [(v["version"], v["author"]) for v in listed] == [(1, "bob-annotator"), (2, "alice-admin")]

    latest = client.get(f"/api/v1/cases/{case['id']}/label", headers=annotator.headers)
    assert latest.headers["x-label-version"] == "2"
    first = client.get(f"/api/v1/cases/{case['id']}/label?version=1", headers=annotator.headers)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_nifti(first.content)),
                                  sitk.GetArrayFromImage(label_like(image, (0, 1))))
    label = read_nifti(latest.content)
    assert label.GetSpacing() == pytest.approx(image.GetSpacing())
    assert client.get(f"/api/v1/cases/{case['id']}", headers=annotator.headers).json()["status"] == "labelled"


def test_missing_version_is_404(client: TestClient, case: dict[str, Any], annotator: Login) -> None:
    r = client.get(f"/api/v1/cases/{case['id']}/label", headers=annotator.headers)
    assert r.status_code == 404
    assert r.json()["detail"] == f"case {case['id']} has no label yet"
    r = client.get(f"/api/v1/cases/{case['id']}/label?version=3", headers=annotator.headers)
    assert r.json()["detail"] == f"case {case['id']} has no label version 3"


def _shifted(origin_shift: float = 0.0, spacing: tuple[float, ...] | None = None) -> sitk.Image:
    image = volume()
    label = label_like(image, (0, 1))
    label.SetOrigin(tuple(o + origin_shift for o in image.GetOrigin()))
    if spacing:
        label.SetSpacing(spacing)
    return label


BAD_LABELS = {
    "value 9 in a 6-class project": (label_like(volume(), (0, 9, 1)), 422,
                                     "label values [9] are outside the project's classes 0..5"),
    "negative value": (label_like(volume(), (0, -1), dtype=np.int16), 422,
                       "label values [-1] are outside the project's classes 0..5"),
    "fractional values": (label_like(volume(), (0, 1), dtype=np.float32) * 0.5, 422,
                          "label values must be whole numbers (class indices)"),
    "wrong shape": (label_like(volume((6, 7, 9)), (0, 1)), 422,
                    "label shape [9, 7, 6] differs from case shape [8, 7, 6]"),
    "wrong spacing": (_shifted(spacing=(0.8, 0.9, 3.0)), 422,
                      "label spacing [0.8, 0.9, 3] differs from case spacing [0.8, 0.9, 2.5] "
                      "(tolerance 1e-03 relative)"),
    "shifted origin": (_shifted(origin_shift=1.0), 422,
                       "label origin [-9, 21, 6] differs from case origin [-10, 20, 5] (tolerance 1% of a voxel)"),
}


@pytest.mark.parametrize("name", list(BAD_LABELS))
def test_bad_label_rejected_and_nothing_changes(
    client: TestClient, case: dict[str, Any], annotator: Login, settings_env: Path, name: str
) -> None:
    label, status, detail = BAD_LABELS[name]
    before = snapshot(settings_env)
    r = upload_label(client, annotator.headers, case["id"], encode(label))
    assert r.status_code == status, r.text
    assert r.json()["detail"] == detail
    assert r.json()["field"] == "file"
    assert snapshot(settings_env) == before
    assert client.get(f"/api/v1/cases/{case['id']}", headers=annotator.headers).json()["status"] == "unlabelled"


def test_tiny_float_geometry_noise_is_accepted(client: TestClient, case: dict[str, Any], annotator: Login) -> None:
    label = label_like(volume(), (0, 1))
    label.SetOrigin(tuple(o + 1e-4 for o in label.GetOrigin()))
    assert upload_label(client, annotator.headers, case["id"], encode(label)).status_code == 201


def test_corrupt_and_empty_label_files(
    client: TestClient, case: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    before = snapshot(settings_env)
    r = upload_label(client, annotator.headers, case["id"], b"", "x.nii.gz")
    assert (r.status_code, r.json()["detail"]) == (400, "file 'x.nii.gz' is empty")
    r = upload_label(client, annotator.headers, case["id"], b"garbage", "x.mha")
    expected = "'x.mha' has no complete header: the file is corrupt or truncated"
    assert (r.status_code, r.json()["detail"]) == (400, expected)
    r = upload_label(client, annotator.headers, case["id"], b"garbage", "x.txt")
    assert r.status_code == 415
    assert snapshot(settings_env) == before


def test_split_change_is_admin_only_and_filters_listing(
    client: TestClient, admin: Login, annotator: Login
) -> None:
    project = create_project(client, admin.headers)
    ids = [upload_case(client, admin.headers, project["id"], encode(volume(seed=i)), patient=f"p{i}").json()["id"]
           for i in range(5)]
    r = client.patch(f"/api/v1/cases/{ids[0]}", json={"split": "validation"}, headers=annotator.headers)
    assert r.status_code == 403
    r = client.patch(f"/api/v1/cases/{ids[0]}", json={"split": "validation"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["split"] == "validation"
    r = client.patch(f"/api/v1/cases/{ids[1]}", json={"split": "training"}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["field"] == "split"

    base = f"/api/v1/projects/{project['id']}/cases"
    page = client.get(f"{base}?split=pool&limit=2&offset=1", headers=annotator.headers).json()
    assert page["total"] == 4 and [c["id"] for c in page["items"]] == ids[2:4]
    assert client.get(f"{base}?split=validation", headers=annotator.headers).json()["total"] == 1
    assert client.get(f"{base}?status=labelled", headers=annotator.headers).json()["total"] == 0
    assert client.get(f"{base}?status=bogus", headers=annotator.headers).status_code == 422


def test_delete_is_admin_only_and_soft(client: TestClient, admin: Login, annotator: Login,
                                       case: dict[str, Any], settings_env: Path) -> None:
    assert client.delete(f"/api/v1/cases/{case['id']}", headers=annotator.headers).status_code == 403
    blobs_before = snapshot(settings_env)[1]
    assert client.delete(f"/api/v1/cases/{case['id']}", headers=admin.headers).status_code == 204
    assert client.get(f"/api/v1/cases/{case['id']}", headers=admin.headers).status_code == 404
    assert snapshot(settings_env)[1] == blobs_before  # the image is kept
    audit = client.get(f"/api/v1/projects/{case['project_id']}/audit", headers=admin.headers).json()
    assert [e["action"] for e in audit][:2] == ["case.delete", "case.create"]
