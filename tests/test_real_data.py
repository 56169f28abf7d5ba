"""Ingest of the real scans in ../shared/data (skipped with a reason when it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.cases.imaging import read_nifti
from app.core import db
from app.models import Base
from tests.conftest import Login, shared_data
from tests.factories import create_project, upload_case, zip_files

PHI = ("Albus", "Dumbledore", "PGBM-003")


def _sitk_reference(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("series", ["11-T1post-18670", "37830-T2reg-78532", "11_HCropVolume"])
def test_real_dicom_series_matches_simpleitk_and_carries_no_phi(
    client: TestClient, admin: Login, settings_env: Path, series: str
) -> None:
    folder = shared_data("dicom-mr-study") / series
    project = create_project(client, admin.headers, "brain", ["background", "tumour"], "MR")
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("*.dcm"))}
    r = upload_case(client, admin.headers, project["id"], zip_files(files), filename="study.zip", patient="PGBM-003")
    assert r.status_code == 201, r.text
    case = r.json()

    reference = _sitk_reference(folder)
    assert case["shape"] == list(reference.GetSize())
    assert case["spacing"] == pytest.approx(reference.GetSpacing(), rel=1e-4)
    assert case["origin"] == pytest.approx(reference.GetOrigin(), abs=1e-3)
    assert case["direction"] == pytest.approx(reference.GetDirection(), abs=1e-4)
    stored = read_nifti(client.get(f"/api/v1/cases/{case['id']}/image", headers=admin.headers).content)
    np.testing.assert_allclose(sitk.GetArrayFromImage(stored), sitk.GetArrayFromImage(reference))

    listing = client.get(f"/api/v1/projects/{project['id']}/cases", headers=admin.headers).text
    audit = client.get(f"/api/v1/projects/{project['id']}/audit", headers=admin.headers).text
    for word in PHI:
        assert word not in r.text and word not in listing and word not in audit
        for blob in settings_env.rglob("*"):
            assert not blob.is_file() or word.encode() not in blob.read_bytes()
    with db.session_scope() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(text(f"SELECT * FROM {table.name}")):
                assert not any(word in str(row) for word in PHI), table.name


def test_whole_study_folder_is_several_series_and_rejected(client: TestClient, admin: Login) -> None:
    root = shared_data("dicom-mr-study")
    project = create_project(client, admin.headers, "brain", ["background", "tumour"], "MR")
    files = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(root.glob("*-*/*.dcm"))}
    r = upload_case(client, admin.headers, project["id"], zip_files(files), filename="study.zip")
    assert r.status_code == 400
    assert r.json()["detail"] == "the upload holds 4 DICOM series; send one series per case"


def test_import_msd_with_labels_then_resume(settings_env: Path, tmp_path: Path) -> None:
    """The CLI's import on a 12-case slice of msd-hippocampus; a rerun skips what is there."""
    from typer.testing import CliRunner

    from app.bulk_import import msd_subset
    from app.cli import cli

    source = shared_data("msd-hippocampus")
    subset = msd_subset(source, tmp_path / "hippo12", count=12)

    result = CliRunner().invoke(cli, ["import-msd", "hippo", str(subset), "--with-labels"])
    assert result.exit_code == 0, result.output
    assert "imported 12, already present 0, failed 0" in result.output
    again = CliRunner().invoke(cli, ["import-msd", "hippo", str(subset), "--with-labels"])
    assert "imported 0, already present 12, failed 0" in again.output

    with db.session_scope() as session:
        rows = session.execute(text(
            "SELECT p.id, count(c.id), count(lv.id) FROM projects p JOIN cases c ON c.project_id = p.id "
            "LEFT JOIN label_versions lv ON lv.case_id = c.id AND lv.version = 1 GROUP BY p.id"
        )).all()
        labels = session.scalar(text("SELECT labels FROM projects"))
    assert len(rows) == 1
    assert rows[0][1:] == (12, 12)
    assert "anterior" in str(labels)
