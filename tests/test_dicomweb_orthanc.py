"""Against a real Orthanc (Debian's orthanc + orthanc-dicomweb): the shared DICOM study in, labels out as SEG.

SQLite only: the database paths are covered on both databases in tests/test_dicomweb.py, and one Orthanc run
of the whole flow keeps the suite's time budget. Jobs run synchronously (see tests/test_dicomweb.py).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from tests.conftest import Login, OrthancServer, shared_data
from tests.factories import create_project, encode, snapshot
from tests.test_dicomweb import run_jobs_inline

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
LABELS = ("background", "brain", "lesion")
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
               "InstitutionName", "StudyDate")


@pytest.fixture(scope="session")
def study_in_orthanc(orthanc: OrthancServer) -> dict[str, Any]:
    """The shared MR study stored into Orthanc once: its UIDs and the identifying values of its headers."""
    root = shared_data("dicom-mr-study")
    files = sorted(root.glob("*/*.dcm"))
    auth = (orthanc.user, orthanc.password)
    with httpx.Client(auth=auth, timeout=60) as http:
        for path in files:
            assert http.post(f"{orthanc.url}/instances", content=path.read_bytes()).status_code == 200
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    series = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
    secrets = {str(first.get(k)) for k in IDENTIFYING if str(first.get(k, "") or "").strip()}
    return {"study": str(first.StudyInstanceUID), "series": series, "secrets": secrets,
            "t1post": str(pydicom.dcmread(next((root / "11-T1post-18670").glob("*.dcm")),
                                          stop_before_pixels=True).SeriesInstanceUID)}


def _project_with_source(client: TestClient, admin: Login, orthanc: OrthancServer, password: str | None = None,
                         url: str | None = None) -> dict[str, Any]:
    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    r = client.post(f"/api/v1/projects/{project['id']}/dicomweb-sources", headers=admin.headers, json={
        "base_url": url or orthanc.dicomweb,
        "credentials": {"type": "basic", "username": orthanc.user, "password": password or orthanc.password}})
    assert r.status_code == 201, r.text
    return project


def _import(client: TestClient, admin: Login, project_id: int, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/v1/projects/{project_id}/dicomweb-imports", headers=admin.headers, json=body)
    assert r.status_code == 202, r.text
    job = client.get(f"/api/v1/projects/{project_id}/dicomweb-imports/{r.json()['id']}", headers=admin.headers)
    return dict(job.json())


def test_study_from_orthanc_is_imported_labelled_and_its_seg_stored_back(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, orthanc: OrthancServer,
    study_in_orthanc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import highdicom as hd
    from dicomweb_client.api import DICOMwebClient
    from requests import Session

    caplog.set_level(logging.DEBUG)
    run_jobs_inline(monkeypatch)
    project = _project_with_source(client, admin, orthanc)
    by_study = _import(client, admin, project["id"], {"study_instance_uid": study_in_orthanc["study"]})
    assert by_study["status"] == "done" and by_study["series_total"] == len(study_in_orthanc["series"]) == 5
    statuses = {r["series_instance_uid"]: r["status"] for r in by_study["results"]}
    assert statuses == dict.fromkeys(study_in_orthanc["series"], "imported"), by_study["results"]
    cases = client.get(f"/api/v1/projects/{project['id']}/cases", headers=annotator.headers)
    assert cases.json()["total"] == 5
    # The same study again, found by QIDO filters: every series is already present, no case is added.
    by_filter = _import(client, admin, project["id"], {"modality": "MR", "study_date_from": "2020-01-01",
                                                       "study_date_to": "2020-12-31"})
    assert {r["status"] for r in by_filter["results"]} == {"already_present"} and len(by_filter["results"]) == 5
    assert client.get(f"/api/v1/projects/{project['id']}/cases", headers=admin.headers).json()["total"] == 5

    # A label on the T1post case, exported as SEG and stored back into Orthanc with STOW-RS.
    case_id = next(r["case_id"] for r in by_study["results"] if r["series_instance_uid"] == study_in_orthanc["t1post"])
    case = client.get(f"/api/v1/cases/{case_id}", headers=annotator.headers).json()
    x, y, z = case["shape"]
    mask = np.zeros((z, y, x), np.uint8)
    mask[3:15, 60:200, 50:150] = 1
    mask[8:12, 100:140, 80:120] = 2
    label = sitk.GetImageFromArray(mask)
    label.SetSpacing(case["spacing"])
    label.SetOrigin(case["origin"])
    label.SetDirection(case["direction"])
    r = client.put(f"/api/v1/cases/{case_id}/label", files={"file": ("l.nii.gz", encode(label))},
                   headers=annotator.headers)
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/cases/{case_id}/export", headers=admin.headers, json={"version": 1})
    assert r.status_code == 202, r.text
    (export,) = client.get(f"/api/v1/cases/{case_id}/exports", headers=admin.headers).json()
    assert export["status"] == "done", export

    session = Session()
    session.auth = (orthanc.user, orthanc.password)
    pacs = DICOMwebClient(orthanc.dicomweb, session=session)
    (hit,) = pacs.search_for_series(search_filters={"Modality": "SEG"})
    seg = pacs.retrieve_instance(study_in_orthanc["study"], hit["0020000E"]["Value"][0], export["sop_instance_uid"])
    assert isinstance(hd.seg.Segmentation.from_dataset(seg), hd.seg.Segmentation)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(LABELS[1:])
    refs = client.get(f"/api/v1/cases/{case_id}/dicom-references", headers=admin.headers).json()
    source = study_in_orthanc["series"][study_in_orthanc["t1post"]]
    assert set(refs["instances"]) == source
    from app.dicomweb.seg import frames_by_slice

    frames = frames_by_slice(seg, refs["instances"])
    referenced = {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for g in seg.PerFrameFunctionalGroupsSequence}
    assert referenced <= source
    for segment in (1, 2):
        for k in range(z):
            np.testing.assert_array_equal(frames[(segment, k)], mask[k] == segment)
    assert str(seg.PatientID) == "PGBM-003"  # the SEG joins its patient in the PACS (filled from the PACS)

    # No identifying header value in any case image, annotator response or log line.
    secrets = study_in_orthanc["secrets"]
    assert "Albus^Dumbledore" in secrets and "PGBM-003" in secrets
    responses = [cases.text, client.get(f"/api/v1/cases/{case_id}", headers=annotator.headers).text,
                 client.get(f"/api/v1/cases/{case_id}/labels", headers=annotator.headers).text]
    for blob in settings_env.rglob("*.nii.gz"):
        content = gzip.decompress(blob.read_bytes())
        assert not any(s.encode() in content for s in secrets), blob
    for text in [*responses, caplog.text]:
        assert not any(s in text for s in secrets)
    assert orthanc.password not in caplog.text


@pytest.mark.parametrize("bad", ["unreachable", "wrong password", "matches nothing"])
def test_pacs_failures_are_clear_and_store_nothing(
    client: TestClient, admin: Login, settings_env: Path, orthanc: OrthancServer, study_in_orthanc: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bad: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    run_jobs_inline(monkeypatch)
    query: dict[str, Any] = {"study_instance_uid": study_in_orthanc["study"]}
    if bad == "unreachable":
        project = _project_with_source(client, admin, orthanc, url="http://127.0.0.1:9/dicom-web")
        expected = "cannot reach the DICOMweb source at http://127.0.0.1:9/dicom-web"
    elif bad == "wrong password":
        project = _project_with_source(client, admin, orthanc, password="not-the-password")
        expected = f"the DICOMweb source at {orthanc.dicomweb} refused the credentials (HTTP 401)"
    else:
        project = _project_with_source(client, admin, orthanc)
        query = {"modality": "CT"}
        expected = "the query matched no series on the DICOMweb source"
    before = snapshot(settings_env)
    job = _import(client, admin, project["id"], query)
    assert job["status"] == "failed" and job["results"] == []
    assert job["error"].startswith(expected), job["error"]
    counts, blobs = snapshot(settings_env)
    assert blobs == before[1] and counts["cases"] == before[0]["cases"] == 0 and counts["patients"] == 0
    assert "not-the-password" not in caplog.text and orthanc.password not in caplog.text
