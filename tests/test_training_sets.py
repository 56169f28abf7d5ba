"""Training sets out: ``nextcase export`` (MSD, nnU-Net v2) and the admins' zip download."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import Login
from tests.factories import create_project, encode, label_like, upload_case, volume

LABELS = ("background", "a", "b")


Made = dict[int, tuple[sitk.Image, sitk.Image]]


def _labelled_project(client: TestClient, admin: Login) -> tuple[dict[str, object], Made]:
    """Three cases: two labelled (pool, validation; the first twice), one in test, one unlabelled."""
    project = create_project(client, admin.headers, name="Liver set", labels=LABELS)
    made: Made = {}
    for seed, split in ((1, "pool"), (2, "validation"), (3, "test"), (4, None)):
        image = volume(seed=seed)
        case = upload_case(client, admin.headers, int(project["id"]), encode(image), patient=f"P{seed}").json()
        if split is None:
            continue
        client.patch(f"/api/v1/cases/{case['id']}", json={"split": split}, headers=admin.headers)
        for values in ((0, 1), (0, 1, 2)) if seed == 1 else ((0, 2),):  # the export takes the latest version
            mask = label_like(image, values)
            r = client.put(f"/api/v1/cases/{case['id']}/label", files={"file": ("l.nii.gz", encode(mask))},
                           headers=admin.headers)
            assert r.status_code == 201, r.text
        made[case["id"]] = (image, mask)
    return project, made


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_msd_export_round_trips_through_import_msd(client: TestClient, admin: Login, tmp_path: Path) -> None:
    from app.cli import cli

    _, made = _labelled_project(client, admin)
    out = tmp_path / "msd"
    result = CliRunner().invoke(cli, ["export", "Liver set", str(out), "--format", "msd", "--split", "pool,validation"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "a", "2": "b"} and meta["modality"] == {"0": "CT"}
    assert meta["numTraining"] == 2  # the test split and the unlabelled case are left out
    expected = [made[cid] for cid in sorted(made)][:2]
    for entry, (image, mask) in zip(meta["training"], expected, strict=True):
        np.testing.assert_array_equal(_array(out / entry["image"]), sitk.GetArrayFromImage(image))
        np.testing.assert_array_equal(_array(out / entry["label"]), sitk.GetArrayFromImage(mask))

    result = CliRunner().invoke(cli, ["import-msd", "round trip", str(out), "--with-labels"])
    assert result.exit_code == 0, result.output
    projects = {p["name"]: p["id"] for p in client.get("/api/v1/projects", headers=admin.headers).json()}
    cases = client.get(f"/api/v1/projects/{projects['round trip']}/cases", headers=admin.headers).json()["items"]
    assert len(cases) == 2
    for case, (image, mask) in zip(cases, expected, strict=True):
        got = client.get(f"/api/v1/cases/{case['id']}/image", headers=admin.headers).content
        label = client.get(f"/api/v1/cases/{case['id']}/label", headers=admin.headers).content
        from app.cases.imaging import read_nifti

        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_nifti(got)), sitk.GetArrayFromImage(image))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_nifti(label)), sitk.GetArrayFromImage(mask))
        assert case["spacing"] == pytest.approx(image.GetSpacing())
        assert case["origin"] == pytest.approx(image.GetOrigin())


def test_nnunet_zip_download_is_for_admins(client: TestClient, admin: Login, annotator: Login) -> None:
    project, made = _labelled_project(client, admin)
    url = f"/api/v1/projects/{project['id']}/export?format=nnunet"
    assert client.get(url, headers=annotator.headers).status_code == 403
    r = client.get(url, headers=admin.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        names = set(archive.namelist())
        meta = json.loads(archive.read("dataset.json"))
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "a": 1, "b": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert names == {"dataset.json"} | {f"imagesTr/Liverset_{cid:05d}_0000.nii.gz" for cid in made} | {
        f"labelsTr/Liverset_{cid:05d}.nii.gz" for cid in made}
    bad = client.get(f"/api/v1/projects/{project['id']}/export?format=nnunet&split=pool,nope", headers=admin.headers)
    assert bad.status_code == 422
