from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from app.auth.deps import AdminDep, SessionDep, UserDep
from app.campaign import service as campaign
from app.cases import repository as repo
from app.cases import service
from app.cases.imaging import UploadedFile
from app.cases.schemas import CasePage, CasePatch, CasePublic, LabelVersionPublic, Split, Status
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id, Offset, Version
from app.core.storage import BlobStore, get_blob_store
from app.projects.service import get_project
from app.queue.service import check_and_end_lease, set_queue_flags

router = APIRouter(prefix="/api/v1", tags=["cases"],
                   responses=problem_responses(*COMMON_PROBLEMS, 400, 409, 410, 411, 413, 415))
StoreDep = Annotated[BlobStore, Depends(get_blob_store)]
NIFTI = "application/gzip"


def _read(files: list[UploadFile]) -> list[UploadedFile]:
    # Sync on purpose: routes run in the thread pool, so image decoding never blocks the event loop.
    return [UploadedFile(f.filename or "", f.file.read()) for f in files]


@router.post("/projects/{project_id}/cases", response_model=CasePublic, status_code=201)
def create_case(
    project_id: Id,
    session: SessionDep,
    store: StoreDep,
    user: AdminDep,
    file: Annotated[list[UploadFile], File(description="one volume, one DICOM .zip, or the .dcm slices")],
    patient: Annotated[str, Form(description="the patient's external id; stored only as a keyed hash")],
    allow_modality_mismatch: Annotated[bool, Form(
        description="ingest a DICOM series whose Modality (0008,0060) differs from the project's, or is missing; "
                    "it is then normalised as the project's modality")] = False,
) -> CasePublic:
    image = service.decode_case(_read(file))  # before the transaction: SQLite holds its write lock for it
    project = get_project(session, project_id)
    case = service.ingest_case(session, store, project, patient, image, user,
                               allow_modality_mismatch=allow_modality_mismatch)
    return service.to_public(session, [case])[0]


@router.get("/projects/{project_id}/cases", response_model=CasePage)
def list_cases(
    project_id: Id,
    session: SessionDep,
    _: UserDep,
    status: Status | None = None,
    split: Split | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: Offset = 0,
) -> CasePage:
    get_project(session, project_id)
    cases, total = repo.list_cases(session, project_id, status, split, limit, offset)
    return CasePage(items=service.to_public(session, cases), total=total, limit=limit, offset=offset)


@router.get("/cases/{case_id}", response_model=CasePublic)
def get_case(case_id: Id, session: SessionDep, _: UserDep) -> CasePublic:
    return service.to_public(session, [service.get_case(session, case_id)])[0]


@router.patch("/cases/{case_id}", response_model=CasePublic)
def patch_case(case_id: Id, body: CasePatch, session: SessionDep, admin: AdminDep) -> CasePublic:
    case = service.get_case(session, case_id, for_update=True)
    if body.split is not None:
        service.set_split(session, case, body.split, admin)
    if body.pinned is not None or body.excluded is not None:
        set_queue_flags(session, case, admin, pinned=body.pinned, excluded=body.excluded)
    return service.to_public(session, [case])[0]


@router.delete("/cases/{case_id}", status_code=204)
def delete_case(case_id: Id, session: SessionDep, admin: AdminDep) -> Response:
    service.delete_case(session, service.get_case(session, case_id, for_update=True), admin)
    return Response(status_code=204)


@router.get("/cases/{case_id}/image", response_class=FileResponse)
def download_image(case_id: Id, session: SessionDep, store: StoreDep, _: UserDep) -> FileResponse:
    case = service.get_case(session, case_id)
    return FileResponse(store.path(case.blob_key), media_type=NIFTI, filename=f"case-{case.id}.nii.gz")


@router.put("/cases/{case_id}/label", response_model=LabelVersionPublic, status_code=201)
def upload_label(
    case_id: Id,
    session: SessionDep,
    store: StoreDep,
    user: UserDep,
    file: Annotated[UploadFile, File(description="label mask (.nii/.nii.gz/.nrrd/.mha) on the case's grid")],
    background: BackgroundTasks,
) -> LabelVersionPublic:
    data = service.decode_label(case_id, _read([file])[0])
    stored = service.upload_label(session, store, case_id, data, user, before_save=check_and_end_lease)
    if (effort_id := campaign.after_label_upload(session, stored)) is not None:
        # Runs once this request's transaction has committed and its response is sent (see app.campaign).
        background.add_task(campaign.compute_effort, effort_id)
    return service.version_public(session, stored.version)


@router.get("/cases/{case_id}/label", response_class=Response)
def download_label(
    case_id: Id, session: SessionDep, store: StoreDep, _: UserDep, version: Version = None
) -> Response:
    case = service.get_case(session, case_id)
    lv, data = service.label_bytes(session, store, case, version)
    return Response(
        data, media_type=NIFTI,
        headers={"Content-Disposition": f'attachment; filename="case-{case.id}-label-v{lv.version}.nii.gz"',
                 "X-Label-Version": str(lv.version)},
    )


@router.get("/cases/{case_id}/labels", response_model=list[LabelVersionPublic])
def list_labels(case_id: Id, session: SessionDep, _: UserDep) -> list[LabelVersionPublic]:
    service.get_case(session, case_id)
    return service.versions_public(session, case_id)
