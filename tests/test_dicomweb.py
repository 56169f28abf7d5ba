"""DICOM references, DICOM SEG, PACS sources and imports without a PACS: a fake DICOMweb client stands in.

The tests against a real Orthanc are in tests/test_dicomweb_orthanc.py. Import and export jobs run
synchronously here (``enqueue`` is replaced by a direct call of the task body, as the Celery task does).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from tests.conftest import Login
from tests.factories import create_project, dicom_slices, encode, label_like, snapshot, upload_case, volume, zip_files

LABELS = ("background", "liver", "lesion x")
PASSWORD = "pacs-Pa55word-never-shown"
STUDY = "1.2.826.0.1.3680043.8.498.100"


def run_jobs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker is replaced by a direct call of the task body (what the Celery task runs)."""
    from app.dicomweb import service

    def enqueue(task: str, job_id: int) -> None:
        (service.run_import if task.endswith(".import") else service.run_export)(job_id)

    monkeypatch.setattr(service, "enqueue", enqueue)


class FakePacs:
    """A DICOMweb endpoint holding some series in memory (what dicomweb-client's client is asked)."""

    def __init__(self, series: dict[str, list[Dataset]]) -> None:
        self.series = series
        self.stored: list[Dataset] = []

    def search_for_series(self, study_instance_uid: str | None = None, *, search_filters: Any = None,
                          get_remaining: bool = False) -> list[dict[str, Any]]:
        return [{"0020000D": {"vr": "UI", "Value": [STUDY]}, "0020000E": {"vr": "UI", "Value": [uid]}}
                for uid in self.series]

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return self.series[series_instance_uid]

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[dict[str, Any]]:
        return [ds.to_json_dict() for ds in self.series[series_instance_uid]]

    def store_instances(self, datasets: list[Dataset]) -> Dataset:
        self.stored.extend(datasets)
        return Dataset()


def parsed(files: dict[str, bytes]) -> list[Dataset]:
    return [pydicom.dcmread(io.BytesIO(data)) for data in files.values()]


def add_source(client: TestClient, admin: Login, project_id: int, url: str = "http://127.0.0.1:9/dicom-web") -> Any:
    r = client.post(f"/api/v1/projects/{project_id}/dicomweb-sources", headers=admin.headers, json={
        "base_url": url, "credentials": {"type": "basic", "username": "nextcase", "password": PASSWORD}})
    assert r.status_code == 201, r.text
    return r.json()


def seg_of(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_dicom_upload_keeps_references_apart_and_its_label_exports_as_seg(
    client: TestClient, admin: Login, annotator: Login,
) -> None:
    from app.dicomweb.seg import frames_by_slice

    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    slices = dicom_slices(5)  # shuffled: the references must follow the sorted slice order
    r = upload_case(client, admin.headers, project["id"], zip_files(slices), filename="series.zip")
    assert r.status_code == 201, r.text
    case = r.json()
    as_annotator = client.get(f"/api/v1/cases/{case['id']}", headers=annotator.headers)
    assert "1.2.826.0.1.3680043.8.498" not in as_annotator.text  # no UID in an annotator's response
    assert client.get(f"/api/v1/cases/{case['id']}/dicom-references", headers=annotator.headers).status_code == 403
    refs = client.get(f"/api/v1/cases/{case['id']}/dicom-references", headers=admin.headers).json()
    by_uid = {ds.SOPInstanceUID: ds for ds in parsed(slices)}
    assert [by_uid[uid].ImagePositionPatient[2] for uid in refs["instances"]] == [10.0, 12.0, 14.0, 16.0, 18.0]
    assert refs["frame_of_reference_uid"] == "1.2.826.0.1.3680043.8.498.200"

    mask = sitk.GetArrayFromImage(label_like(volume((5, 6, 5)), (0, 1, 2, 0, 1)))
    label = sitk.GetImageFromArray(mask)
    label.SetSpacing(case["spacing"])
    label.SetOrigin(case["origin"])
    assert client.put(f"/api/v1/cases/{case['id']}/label", files={"file": ("l.nii.gz", encode(label))},
                      headers=annotator.headers).status_code == 201
    assert client.get(f"/api/v1/cases/{case['id']}/label.dcm", headers=annotator.headers).status_code == 403
    r = client.get(f"/api/v1/cases/{case['id']}/label.dcm?version=1", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    seg = seg_of(r.content)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(LABELS[1:])
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"MANUAL"}
    liver, other = (s.SegmentedPropertyTypeCodeSequence[0] for s in seg.SegmentSequence)
    assert (liver.CodingSchemeDesignator, liver.CodeValue) == ("SCT", "10200004")  # SNOMED CT: Liver
    assert (other.CodingSchemeDesignator, other.CodeValue) == ("99NEXTCASE", "L2")  # project-local
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == refs["series_instance_uid"]
    assert str(seg.get("PatientName", "")) == "" and "DOE" not in r.content.decode("latin-1")
    frames = frames_by_slice(seg, refs["instances"])
    for segment in (1, 2):
        for k in range(5):
            np.testing.assert_array_equal(frames[(segment, k)], mask[k] == segment)


def test_seg_of_a_case_without_dicom_origin_is_409(client: TestClient, admin: Login) -> None:
    project = create_project(client, admin.headers, labels=LABELS)
    image = volume()
    case = upload_case(client, admin.headers, project["id"], encode(image)).json()
    client.put(f"/api/v1/cases/{case['id']}/label", files={"file": ("l.nii.gz", encode(label_like(image)))},
               headers=admin.headers)
    for r in (client.get(f"/api/v1/cases/{case['id']}/label.dcm", headers=admin.headers),
              client.post(f"/api/v1/cases/{case['id']}/export", headers=admin.headers)):
        assert r.status_code == 409, r.text
        assert r.json()["detail"].startswith(f"case {case['id']} has no DICOM origin: a DICOM SEG must reference the "
                                             "source series' instances")
        assert "a nifti file" in r.json()["detail"]


def test_source_credentials_are_encrypted_never_returned_and_never_logged(
    client: TestClient, admin: Login, annotator: Login, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run_jobs_inline(monkeypatch)
    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    source = add_source(client, admin, project["id"])  # port 9 (discard): nothing listens
    assert source["auth"] == "basic" and PASSWORD not in str(source) and "nextcase" not in str(source)
    listed = client.get(f"/api/v1/projects/{project['id']}/dicomweb-sources", headers=admin.headers)
    assert PASSWORD not in listed.text
    assert client.get(f"/api/v1/projects/{project['id']}/dicomweb-sources",
                      headers=annotator.headers).status_code == 403
    from sqlalchemy import text

    from app.core import db

    with db.session_scope() as session:
        stored = session.execute(text("SELECT credentials FROM dicomweb_sources")).scalar_one()
    assert PASSWORD not in stored

    r = client.post(f"/api/v1/projects/{project['id']}/dicomweb-imports", headers=admin.headers,
                    json={"study_instance_uid": STUDY})
    assert r.status_code == 202, r.text
    job = client.get(f"/api/v1/projects/{project['id']}/dicomweb-imports/{r.json()['id']}", headers=admin.headers)
    assert job.json()["status"] == "failed"
    assert job.json()["error"].startswith("cannot reach the DICOMweb source at http://127.0.0.1:9/dicom-web")
    assert PASSWORD not in job.text and PASSWORD not in caplog.text


@pytest.mark.parametrize("bad", ["missing slice", "two series as one", "unsupported transfer syntax"])
def test_bad_series_are_refused_with_the_reason_and_store_nothing(
    client: TestClient, admin: Login, settings_env: Path, monkeypatch: pytest.MonkeyPatch, bad: str,
) -> None:
    good_uid = "1.2.826.0.1.3680043.8.498.7"
    if bad == "missing slice":
        datasets, reason = parsed(dicom_slices(5, skip=2)), "the DICOM slices are not evenly spaced"
    elif bad == "two series as one":
        datasets = parsed(dicom_slices(3)) + parsed(dicom_slices(3, series_uid="1.2.826.0.1.3680043.8.498.2"))
        reason = "the upload holds 2 DICOM series; send one series per case"
    else:
        datasets = parsed(dicom_slices(3))
        for ds in datasets:
            ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.999.1"  # a private, unknown syntax
        reason = "a DICOM slice has pixel data that cannot be decoded (transfer syntax 1.2.826.0.1.3680043.8.498.999.1"
    fake = FakePacs({good_uid: datasets})
    monkeypatch.setattr("app.dicomweb.pacs.connect", lambda url, credentials: fake)
    run_jobs_inline(monkeypatch)
    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    add_source(client, admin, project["id"])
    before = snapshot(settings_env)
    r = client.post(f"/api/v1/projects/{project['id']}/dicomweb-imports", headers=admin.headers,
                    json={"series_instance_uid": good_uid})
    job = client.get(f"/api/v1/projects/{project['id']}/dicomweb-imports/{r.json()['id']}",
                     headers=admin.headers).json()
    assert job["status"] == "done" and job["series_total"] == 1
    (result,) = job["results"]
    assert result["status"] == "refused" and result["case_id"] is None
    assert result["reason"].startswith(reason), result["reason"]
    counts, blobs = snapshot(settings_env)
    assert blobs == before[1]
    assert {k: v for k, v in counts.items() if not k.startswith("dicomweb_")} == {
        k: v for k, v in before[0].items() if not k.startswith("dicomweb_")}


def test_pacs_series_imported_twice_is_one_case_and_stow_export_is_recorded(
    client: TestClient, admin: Login, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    fake = FakePacs({uid: parsed(dicom_slices(4))})
    monkeypatch.setattr("app.dicomweb.pacs.connect", lambda url, credentials: fake)
    run_jobs_inline(monkeypatch)
    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    add_source(client, admin, project["id"])
    url = f"/api/v1/projects/{project['id']}/dicomweb-imports"
    first = client.post(url, headers=admin.headers, json={"modality": "MR", "study_date_from": "2020-01-01"}).json()
    again = client.post(url, headers=admin.headers, json={"study_instance_uid": STUDY}).json()
    jobs = {j["id"]: j for j in client.get(url, headers=admin.headers).json()}
    (imported,), (present,) = jobs[first["id"]]["results"], jobs[again["id"]]["results"]
    assert imported["status"] == "imported" and present == {**imported, "status": "already_present"}
    case = client.get(f"/api/v1/cases/{imported['case_id']}", headers=admin.headers).json()
    assert case["patient"].startswith("PT-") and case["source_format"] == "dicom"
    label = sitk.GetImageFromArray(np.ones((4, 6, 5), np.uint8))
    label.SetSpacing(case["spacing"])
    label.SetOrigin(case["origin"])
    client.put(f"/api/v1/cases/{case['id']}/label", files={"file": ("l.nii.gz", encode(label))},
               headers=admin.headers)
    r = client.post(f"/api/v1/cases/{case['id']}/export", headers=admin.headers, json={"version": 1})
    assert r.status_code == 202, r.text
    (export,) = client.get(f"/api/v1/cases/{case['id']}/exports", headers=admin.headers).json()
    assert export["status"] == "done" and export["sop_instance_uid"] == fake.stored[0].SOPInstanceUID
    assert str(fake.stored[0].PatientID) == "MRN-12345"  # filled from the PACS for the PACS, never stored


# JPEG 2000 is only checked for its decoder: OpenJPEG cannot encode tiles as small as these 6 x 5 slices.
@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless"])
def test_compressed_transfer_syntaxes_decode_to_the_same_volume(syntax: str) -> None:
    import pydicom.uid
    from pydicom.pixels import get_decoder

    from app.cases.imaging import read_dicom_datasets

    for name in ("JPEGBaseline8Bit", "JPEGLosslessSV1", "JPEG2000", "RLELossless"):  # what PACS send
        assert get_decoder(getattr(pydicom.uid, name)).is_available, name
    plain = parsed(dicom_slices(3))
    packed = parsed(dicom_slices(3))
    for ds in packed:
        ds.compress(getattr(pydicom.uid, syntax))
    a, b = read_dicom_datasets(plain), read_dicom_datasets(packed)
    assert a.geometry == b.geometry
    from app.cases.imaging import read_nifti

    decoded = [sitk.GetArrayFromImage(read_nifti(image.nifti)) for image in (a, b)]
    np.testing.assert_array_equal(*decoded)


def test_the_embedded_worker_consumes_the_interop_queue() -> None:
    from app.cli import EMBEDDED_QUEUES
    from worker import tasks
    from worker.celery_app import INTEROP_QUEUE

    assert INTEROP_QUEUE in EMBEDDED_QUEUES.split(",")
    assert {"nextcase.dicomweb.import", "nextcase.dicomweb.export"} <= set(tasks.celery_app.tasks)


def test_an_unexpected_error_fails_the_job_naming_its_type_only(
    client: TestClient, admin: Login, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    uid = "1.2.826.0.1.3680043.8.498.3"
    fake = FakePacs({uid: parsed(dicom_slices(3))})

    def broken(*_args: Any, **_kwargs: Any) -> list[Dataset]:
        raise RuntimeError("bad header PatientName=DOE^JANE")  # an error whose text quotes a header

    fake.retrieve_series = broken  # type: ignore[method-assign]
    monkeypatch.setattr("app.dicomweb.pacs.connect", lambda url, credentials: fake)
    run_jobs_inline(monkeypatch)
    project = create_project(client, admin.headers, labels=LABELS, modality="MR")
    add_source(client, admin, project["id"])
    url = f"/api/v1/projects/{project['id']}/dicomweb-imports"
    job_id = client.post(url, headers=admin.headers, json={"series_instance_uid": uid}).json()["id"]
    job = client.get(f"{url}/{job_id}", headers=admin.headers).json()
    assert job["status"] == "failed" and "RuntimeError" in job["error"], job
    assert "DOE" not in str(job) and "DOE" not in caplog.text
