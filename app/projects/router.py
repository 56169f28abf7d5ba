from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.audit import service as audit
from app.auth.deps import AdminDep, SessionDep, UserDep
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id, Offset
from app.core.storage import BlobStore, get_blob_store
from app.projects import service
from app.projects.schemas import ProjectCreate, ProjectPatch, ProjectPublic, ProjectSettings
from app.review import service as review

StoreDep = Annotated[BlobStore, Depends(get_blob_store)]
router = APIRouter(prefix="/api/v1", tags=["projects"],
                   responses=problem_responses(*COMMON_PROBLEMS, 409))


@router.post("/projects", response_model=ProjectSettings, status_code=201)
def create_project(body: ProjectCreate, session: SessionDep, admin: AdminDep) -> ProjectSettings:
    project = service.create_project(session, body.name, body.modality, body.labels,
                                     control_fraction=body.control_fraction, control_seed=body.control_seed,
                                     annotators_can_upload_cases=body.annotators_can_upload_cases,
                                     train_on=body.train_on, readers_per_case=body.readers_per_case,
                                     consensus_method=body.consensus_method)
    audit.record(session, "project.create", user_id=admin.id, project_id=project.id, name=project.name)
    return ProjectSettings.model_validate(project)


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(session: SessionDep, _: UserDep) -> list[ProjectPublic]:
    return [ProjectPublic.model_validate(p) for p in service.list_projects(session)]


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(project_id: Id, session: SessionDep, _: UserDep) -> ProjectPublic:
    return ProjectPublic.model_validate(service.get_project(session, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectSettings)
def patch_project(
    project_id: Id, body: ProjectPatch, session: SessionDep, store: StoreDep, admin: AdminDep
) -> ProjectSettings:
    project = service.update_control(session, project_id, admin, fraction=body.control_fraction,
                                     seed=body.control_seed)
    if body.annotators_can_upload_cases is not None:
        service.set_annotators_can_upload_cases(session, project, body.annotators_can_upload_cases, admin)
    # What trains and how many read each case: every labelled case is re-derived (status, consensus).
    project = review.update_settings(session, store, project_id, admin, train_on=body.train_on,
                                     readers_per_case=body.readers_per_case, consensus_method=body.consensus_method)
    return ProjectSettings.model_validate(project)


@router.get("/projects/{project_id}/audit")
def project_audit(
    project_id: Id,
    session: SessionDep,
    _: AdminDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: Offset = 0,
) -> list[dict[str, object]]:
    service.get_project(session, project_id)
    return [
        {"id": e.id, "at": e.at.isoformat(), "user_id": e.user_id, "action": e.action, "case_id": e.case_id,
         "detail": e.detail}
        for e in audit.list_events(session, project_id, limit, offset)
    ]
