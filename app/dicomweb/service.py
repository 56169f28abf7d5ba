"""DICOMweb sources, PACS imports (one case per series) and DICOM SEG export.

Imports and STOW exports are jobs with their state in the database, run by Celery tasks on the light
``interop`` queue (``run_import`` / ``run_export``; the tests call them synchronously). Each series is
decoded fully in memory and then ingested through the cases service in a transaction of its own, so a
refused series leaves no case row and no blob. Nothing identifying from the source headers is stored or
logged: the patient id is only HMAC-hashed (as for uploads), and log lines carry job and case ids only.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import SimpleITK as sitk
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.service import get_or_create_system_user
from app.cases import service as cases
from app.cases.imaging import read_nifti
from app.core.db import session_scope
from app.core.errors import Conflict, DomainError, NotFound
from app.core.storage import BlobStore, get_blob_store
from app.dicomweb import credentials as creds
from app.dicomweb import pacs
from app.dicomweb import repository as repo
from app.dicomweb.schemas import (
    BasicCredentials,
    ImportCreate,
    ImportPublic,
    SeriesResult,
    SourceCreate,
    SourcePublic,
)
from app.dicomweb.seg import build_seg
from app.models import (
    Case,
    DicomReference,
    DicomSegExport,
    DicomwebImport,
    DicomwebSource,
    LabelVersion,
    Project,
    User,
    utcnow,
)
from app.projects import service as projects

log = logging.getLogger("nextcase.dicomweb")
IMPORTER = "pacs-importer"  # the system user that PACS-imported cases are created by
NO_MATCH = "the query matched no series on the DICOMweb source"


class BrokerUnavailable(DomainError):
    status, type, title = 503, "broker-unavailable", "Task broker unavailable"


# --- sources ---------------------------------------------------------------------------------------


def create_source(session: Session, project: Project, body: SourceCreate, user: User) -> DicomwebSource:
    sealed, kind = None, "none"
    if body.credentials is not None:
        if isinstance(body.credentials, BasicCredentials):
            plain = creds.Credentials("basic", body.credentials.username, body.credentials.password.get_secret_value())
        else:
            plain = creds.Credentials("bearer", "", body.credentials.token.get_secret_value())
        sealed, kind = creds.seal(plain), plain.kind
    source = DicomwebSource(project_id=project.id, base_url=body.base_url.rstrip("/"), auth=kind,
                            credentials=sealed, created_by=user.id)
    session.add(source)
    session.flush()
    audit.record(session, "dicomweb.source", user_id=user.id, project_id=project.id, source_id=source.id, auth=kind)
    return source


def source_public(source: DicomwebSource) -> SourcePublic:
    return SourcePublic.model_validate(source)


def list_sources(session: Session, project_id: int) -> list[DicomwebSource]:
    return repo.sources(session, project_id)


def get_source(session: Session, project_id: int, source_id: int | None) -> DicomwebSource:
    if source_id is None:
        source = repo.newest_source(session, project_id)
        if source is None:
            raise Conflict(f"project {project_id} has no DICOMweb source: register one with POST "
                           f"/api/v1/projects/{project_id}/dicomweb-sources first", field="source_id")
        return source
    found = session.get(DicomwebSource, source_id)
    if found is None or found.project_id != project_id:
        raise NotFound(f"DICOMweb source {source_id} does not exist in project {project_id}", field="source_id")
    return found


def _client(source: DicomwebSource) -> pacs.Pacs:
    plain = creds.unseal(source.credentials) if source.credentials else None
    return pacs.connect(source.base_url, plain)


# --- jobs on the broker ----------------------------------------------------------------------------


def enqueue(task: str, job_id: int) -> None:
    """Send a job's task to the light queue; called after its row is committed (the worker must find it)."""
    from worker import celery_app as apps

    try:
        apps.celery_app.send_task(task, args=(job_id,), queue=apps.INTEROP_QUEUE)
    except Exception as exc:
        log.exception("enqueue failed", extra={"task": task, "job_id": job_id})
        raise BrokerUnavailable(f"could not reach the task broker: {type(exc).__name__}") from exc


def _start(session: Session, row: DicomwebImport | DicomSegExport, task: str) -> None:
    session.commit()  # enqueue after commit
    try:
        enqueue(task, row.id)
    except BrokerUnavailable:
        row.status, row.finished_at = "failed", utcnow()
        row.error = "the task broker was unreachable when it was queued"
        session.commit()
        raise


# --- imports ---------------------------------------------------------------------------------------


def start_import(session: Session, project: Project, body: ImportCreate, user: User) -> DicomwebImport:
    source = get_source(session, project.id, body.source_id)
    query = body.model_dump(mode="json", exclude={"source_id", "allow_modality_mismatch"}, exclude_none=True)
    job = DicomwebImport(project_id=project.id, source_id=source.id, query=query,
                         allow_modality_mismatch=body.allow_modality_mismatch, created_by=user.id)
    session.add(job)
    session.flush()
    audit.record(session, "dicomweb.import", user_id=user.id, project_id=project.id, import_id=job.id)
    _start(session, job, "nextcase.dicomweb.import")
    return job


def get_import(session: Session, project_id: int, import_id: int) -> DicomwebImport:
    job = session.get(DicomwebImport, import_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"DICOMweb import {import_id} does not exist in project {project_id}", field="import_id")
    return job


def list_imports(session: Session, project_id: int) -> list[DicomwebImport]:
    return repo.imports(session, project_id)


def import_public(job: DicomwebImport) -> ImportPublic:
    return ImportPublic(
        id=job.id, project_id=job.project_id, source_id=job.source_id, query=job.query, status=job.status,
        series_total=job.series_total, series_done=job.series_done,
        results=[SeriesResult(**r) for r in job.results], error=job.error, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at,
    )


def run_import(import_id: int, store: BlobStore | None = None) -> None:
    """The import task: find the series (QIDO-RS), then import each (WADO-RS) as one case.

    Safe to redeliver: a finished job is left alone, and series already imported are reported as present. An
    unexpected error fails the job (never left ``running``), named by its type only: its message could quote a
    DICOM header.
    """
    try:
        _run_import(import_id, store or get_blob_store())
    except Exception as exc:
        log.error("dicomweb import failed unexpectedly", extra={"import_id": import_id, "error": type(exc).__name__})
        _finish_import(import_id, "failed", f"the import stopped on an unexpected {type(exc).__name__}; "
                                            "the series imported before it are kept")


def _run_import(import_id: int, store: BlobStore) -> None:
    with session_scope() as session:
        job = session.get(DicomwebImport, import_id)
        if job is None or job.status in ("done", "failed"):
            return
        job.status, job.started_at = "running", job.started_at or utcnow()
        source = session.get(DicomwebSource, job.source_id)
        assert source is not None
        base_url, query, allow = source.base_url, dict(job.query), job.allow_modality_mismatch
        project_id, seen = job.project_id, {r["series_instance_uid"] for r in job.results}
        client = _client(source)
    log.info("dicomweb import started", extra={"import_id": import_id, "project_id": project_id})
    try:
        study, filters = pacs.qido_filters(query)
        hits = pacs.call("the QIDO-RS series search", base_url, lambda: client.search_for_series(
            study, search_filters=filters, get_remaining=True))
        found = pacs.series_of(hits)
    except (DomainError, ValueError) as exc:
        _finish_import(import_id, "failed", exc.detail if isinstance(exc, DomainError) else str(exc))
        return
    if not found:
        _finish_import(import_id, "failed", NO_MATCH)
        return
    with session_scope() as session:
        job = session.get(DicomwebImport, import_id)
        assert job is not None
        job.series_total = len(found)
    for study_uid, series_uid in found:
        if series_uid in seen:
            continue
        result = import_series(store, project_id, client, base_url, study_uid, series_uid, allow)
        with session_scope() as session:
            job = session.get(DicomwebImport, import_id)
            assert job is not None
            job.results = [*job.results, result.model_dump()]
            job.series_done = len(job.results)
        log.info("dicomweb series", extra={"import_id": import_id, "status": result.status, "case_id": result.case_id})
    _finish_import(import_id, "done", None)


def _finish_import(import_id: int, status: str, error: str | None) -> None:
    with session_scope() as session:
        job = session.get(DicomwebImport, import_id)
        assert job is not None
        job.status, job.error, job.finished_at = status, error, utcnow()
    log.info("dicomweb import finished", extra={"import_id": import_id, "status": status})


def import_series(
    store: BlobStore, project_id: int, client: pacs.Pacs, base_url: str, study_uid: str,
    series_uid: str, allow_modality_mismatch: bool = False,
) -> SeriesResult:
    """One series as one case, under the same rules as a DICOM upload; a refusal stores nothing."""
    def present(case_id: int | None) -> SeriesResult:
        return SeriesResult(series_instance_uid=series_uid, status="already_present", case_id=case_id)

    with session_scope() as session:
        existing = cases.case_of_series(session, project_id, series_uid)
    if existing is not None:
        return present(existing)
    try:
        datasets = pacs.call("the WADO-RS series retrieval", base_url,
                             lambda: client.retrieve_series(study_uid, series_uid))
        if not datasets:
            raise DomainError("the DICOMweb source returned no instances for the series")
        image = cases.decode_dicom_series(datasets)
        patient = _patient_key(datasets)
        del datasets
        with session_scope() as session:
            project = projects.get_project(session, project_id)
            importer = get_or_create_system_user(session, IMPORTER)  # rolled back with a refused series
            case = cases.ingest_case(session, store, project, patient, image, importer,
                                     allow_modality_mismatch=allow_modality_mismatch)
            case_id = case.id
    except Conflict:  # the same image (or series) is already a case
        with session_scope() as session:
            found = cases.case_of_series(session, project_id, series_uid)
            if found is None:
                project = projects.get_project(session, project_id)
                same = cases.find_same_image(session, project, image)
                found = same.id if same is not None else None
        return present(found)
    except DomainError as exc:
        return SeriesResult(series_instance_uid=series_uid, status="refused", reason=exc.detail)
    return SeriesResult(series_instance_uid=series_uid, status="imported", case_id=case_id)


def _patient_key(datasets: list[pydicom.Dataset]) -> str:
    """The hospital patient id to hash (never stored): Patient ID, else the study (one pseudonym per study)."""
    first = datasets[0]
    patient_id = str(first.get("PatientID", "") or "").strip()
    return patient_id or f"study:{first.get('StudyInstanceUID', '')}"


# --- DICOM SEG -------------------------------------------------------------------------------------


def dicom_origin(session: Session, case: Case) -> DicomReference:
    refs = cases.dicom_references(session, case)
    if refs is None:
        origin = ("a DICOM series whose references were not kept (uploaded before NextCase kept them, or with "
                  "malformed UIDs)" if case.source_format == "dicom"
                  else f"a {case.source_format} file")
        raise Conflict(
            f"case {case.id} has no DICOM origin: a DICOM SEG must reference the source series' instances (Study, "
            "Series and SOP Instance UIDs, Frame of Reference), and this case was ingested from "
            f"{origin}; import the series from the PACS (or upload its DICOM files) to export its labels as SEG",
            field="case_id")
    if not refs.frame_of_reference_uid:
        raise Conflict(f"case {case.id}'s source series has no Frame of Reference UID, which a DICOM SEG needs",
                       field="case_id")
    return refs


def seg_dataset(
    session: Session, store: BlobStore, case: Case, version: int | None, patient_study: pydicom.Dataset | None = None,
) -> tuple[int, pydicom.Dataset]:
    """The DICOM SEG of one label version (the latest by default); returns its version number and the SEG."""
    refs = dicom_origin(session, case)
    lv, data = cases.label_bytes(session, store, case, version)
    project = projects.get_project(session, case.project_id)
    mask = sitk.GetArrayFromImage(read_nifti(data)).astype(np.uint16)
    seg = build_seg(refs, case.shape, mask, list(project.labels), label_version=lv.version,
                    patient_study=patient_study)
    return lv.version, seg


def seg_bytes(session: Session, store: BlobStore, case: Case, version: int | None) -> tuple[int, bytes]:
    number, seg = seg_dataset(session, store, case, version)
    return number, pacs.seg_bytes(seg)


def references_of(session: Session, case: Case) -> DicomReference:
    refs = cases.dicom_references(session, case)
    if refs is None:
        raise NotFound(f"case {case.id} has no DICOM origin", field="case_id")
    return refs


def start_export(session: Session, case: Case, version: int | None, source_id: int | None,
                 user: User) -> DicomSegExport:
    dicom_origin(session, case)
    lv, _ = cases.label_bytes(session, get_blob_store(), case, version)
    source = get_source(session, case.project_id, source_id)
    row = DicomSegExport(case_id=case.id, label_version_id=lv.id, source_id=source.id, created_by=user.id)
    session.add(row)
    session.flush()
    audit.record(session, "dicomweb.export", user_id=user.id, project_id=case.project_id, case_id=case.id,
                 version=lv.version, export_id=row.id)
    _start(session, row, "nextcase.dicomweb.export")
    return row


def list_exports(session: Session, case_id: int) -> list[DicomSegExport]:
    return repo.exports(session, case_id)


def run_export(export_id: int, store: BlobStore | None = None) -> None:
    """The STOW-RS task: build the SEG (with the patient/study attributes read back from the PACS) and store it.

    An unexpected error fails the export (never left ``queued`` or ``running``), named by its type only.
    """
    try:
        _run_export(export_id, store or get_blob_store())
    except Exception as exc:
        log.error("dicom seg export failed unexpectedly", extra={"export_id": export_id, "error": type(exc).__name__})
        _finish_export(export_id, "failed", f"the export stopped on an unexpected {type(exc).__name__}", None, None)


def _run_export(export_id: int, store: BlobStore) -> None:
    with session_scope() as session:
        row = session.get(DicomSegExport, export_id)
        if row is None or row.status in ("done", "failed"):
            return
        row.status = "running"
        source = session.get(DicomwebSource, row.source_id)
        assert source is not None
        client, base_url = _client(source), source.base_url
        case = cases.get_case(session, row.case_id)
        refs = dicom_origin(session, case)
        study_uid, series_uid = refs.study_instance_uid, refs.series_instance_uid
        version = _version_number(session, row)
    try:
        patient_study = pacs.patient_study(client, base_url, study_uid, series_uid)
        with session_scope() as session:
            _, seg = seg_dataset(session, store, cases.get_case(session, row.case_id), version, patient_study)
        response = pacs.call("the STOW-RS store", base_url, lambda: client.store_instances([seg]))
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise pacs.PacsError(f"the DICOMweb source refused the SEG (failure reason {reason})")
    except DomainError as exc:
        _finish_export(export_id, "failed", exc.detail, None, None)
        return
    _finish_export(export_id, "done", None, str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID))


def _version_number(session: Session, row: DicomSegExport) -> int:
    lv = session.get(LabelVersion, row.label_version_id)
    assert lv is not None
    return lv.version


def _finish_export(export_id: int, status: str, error: str | None, sop: str | None, series: str | None) -> None:
    with session_scope() as session:
        row = session.get(DicomSegExport, export_id)
        assert row is not None
        row.status, row.error, row.finished_at = status, error, utcnow()
        row.sop_instance_uid, row.series_instance_uid = sop, series
    log.info("dicom seg export finished", extra={"export_id": export_id, "status": status})

