"""DICOMweb sources and imports (admins), the DICOM SEG of a label version, and its STOW-RS export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response

from app.auth.deps import AdminDep, SessionDep
from app.cases import service as cases
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id, Version
from app.core.storage import BlobStore, get_blob_store
from app.dicomweb import service
from app.dicomweb.schemas import (
    DicomReferencesPublic,
    ExportCreate,
    ImportCreate,
    ImportPublic,
    SegExportPublic,
    SourceCreate,
    SourcePublic,
)
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["dicomweb"], responses=problem_responses(*COMMON_PROBLEMS, 409))
StoreDep = Annotated[BlobStore, Depends(get_blob_store)]
DICOM = "application/dicom"


@router.post("/projects/{project_id}/dicomweb-sources", response_model=SourcePublic, status_code=201)
def create_source(project_id: Id, body: SourceCreate, session: SessionDep, admin: AdminDep) -> SourcePublic:
    project = get_project(session, project_id)
    return service.source_public(service.create_source(session, project, body, admin))


@router.get("/projects/{project_id}/dicomweb-sources", response_model=list[SourcePublic])
def list_sources(project_id: Id, session: SessionDep, _: AdminDep) -> list[SourcePublic]:
    get_project(session, project_id)
    return [service.source_public(s) for s in service.list_sources(session, project_id)]


@router.post("/projects/{project_id}/dicomweb-imports", response_model=ImportPublic, status_code=202,
             responses=problem_responses(503))
def start_import(
    project_id: Id, body: Annotated[ImportCreate, Body(description=(
        "one StudyInstanceUID, one SeriesInstanceUID (optionally with its study), or QIDO filters (Modality and "
        "an optional StudyDate range); every matching series becomes one case"))],
    session: SessionDep, admin: AdminDep,
) -> ImportPublic:
    project = get_project(session, project_id)
    return service.import_public(service.start_import(session, project, body, admin))


@router.get("/projects/{project_id}/dicomweb-imports", response_model=list[ImportPublic])
def list_imports(project_id: Id, session: SessionDep, _: AdminDep) -> list[ImportPublic]:
    get_project(session, project_id)
    return [service.import_public(j) for j in service.list_imports(session, project_id)]


@router.get("/projects/{project_id}/dicomweb-imports/{import_id}", response_model=ImportPublic)
def get_import(project_id: Id, import_id: Id, session: SessionDep, _: AdminDep) -> ImportPublic:
    return service.import_public(service.get_import(session, project_id, import_id))


@router.get("/cases/{case_id}/dicom-references", response_model=DicomReferencesPublic)
def dicom_references(case_id: Id, session: SessionDep, _: AdminDep) -> DicomReferencesPublic:
    case = cases.get_case(session, case_id)
    return DicomReferencesPublic.model_validate(service.references_of(session, case))


@router.get("/cases/{case_id}/label.dcm", response_class=Response,
            responses={200: {"content": {DICOM: {}}, "description": "a DICOM SEG (BINARY) of the label version"}})
def download_seg(case_id: Id, session: SessionDep, store: StoreDep, _: AdminDep, version: Version = None) -> Response:
    case = cases.get_case(session, case_id)
    number, data = service.seg_bytes(session, store, case, version)
    return Response(data, media_type=DICOM, headers={
        "Content-Disposition": f'attachment; filename="case-{case.id}-label-v{number}-seg.dcm"',
        "X-Label-Version": str(number)})


@router.post("/cases/{case_id}/export", response_model=SegExportPublic, status_code=202,
             responses=problem_responses(503))
def export_seg(case_id: Id, session: SessionDep, admin: AdminDep,
               body: Annotated[ExportCreate | None, Body()] = None) -> SegExportPublic:
    body = body or ExportCreate()
    case = cases.get_case(session, case_id)
    return SegExportPublic.model_validate(service.start_export(session, case, body.version, body.source_id, admin))


@router.get("/cases/{case_id}/exports", response_model=list[SegExportPublic])
def list_exports(case_id: Id, session: SessionDep, _: AdminDep) -> list[SegExportPublic]:
    cases.get_case(session, case_id)
    return [SegExportPublic.model_validate(e) for e in service.list_exports(session, case_id)]
