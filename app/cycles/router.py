from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import FileResponse

from app.auth.deps import AdminDep, SessionDep, UserDep
from app.cases.service import get_case
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id
from app.core.storage import BlobStore, get_blob_store
from app.cycles import service
from app.cycles.schemas import CycleCreate, CyclePublic, ModelVersionPublic
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["cycles"],
                   responses=problem_responses(*COMMON_PROBLEMS, 409, 503))
StoreDep = Annotated[BlobStore, Depends(get_blob_store)]


@router.post("/projects/{project_id}/cycles", response_model=CyclePublic, status_code=202)
def start_cycle(
    project_id: Id, session: SessionDep, admin: AdminDep, body: Annotated[CycleCreate | None, Body()] = None
) -> CyclePublic:
    cycle = service.start(session, get_project(session, project_id), body or CycleCreate(), admin)
    return CyclePublic.model_validate(cycle)


@router.get("/cycles/{cycle_id}", response_model=CyclePublic)
def get_cycle(cycle_id: Id, session: SessionDep, _: UserDep) -> CyclePublic:
    return CyclePublic.model_validate(service.get_cycle(session, cycle_id))


@router.get("/projects/{project_id}/cycles", response_model=list[CyclePublic])
def list_cycles(project_id: Id, session: SessionDep, _: UserDep) -> list[CyclePublic]:
    get_project(session, project_id)
    return [CyclePublic.model_validate(c) for c in service.list_cycles(session, project_id)]


@router.delete("/cycles/{cycle_id}", response_model=CyclePublic)
def cancel_cycle(
    cycle_id: Id, session: SessionDep, admin: AdminDep,
    force: Annotated[bool, Query(description="end a running cycle now instead of at its worker's next check "
                                             "(for a worker that hangs or is gone)")] = False,
) -> CyclePublic:
    return CyclePublic.model_validate(service.cancel(session, service.get_cycle(session, cycle_id), admin, force))


@router.get("/projects/{project_id}/models", response_model=list[ModelVersionPublic])
def list_models(project_id: Id, session: SessionDep, _: UserDep) -> list[ModelVersionPublic]:
    get_project(session, project_id)
    return [ModelVersionPublic.model_validate(m) for m in service.list_models(session, project_id)]


@router.get("/models/{model_id}/weights", response_class=FileResponse)
def download_weights(model_id: Id, session: SessionDep, store: StoreDep, _: UserDep) -> FileResponse:
    model = service.get_model(session, model_id)
    return FileResponse(store.path(model.weights_key), media_type="application/octet-stream",
                        filename=f"project{model.project_id}-model-v{model.version}.pt")


def _case_output(
    case_id: int, kind: str, session: SessionDep, store: BlobStore, key: str | None = None
) -> FileResponse:
    get_case(session, case_id)
    key = key or service.latest_case_output(session, case_id, kind)
    return FileResponse(store.path(key), media_type="application/gzip", filename=f"case-{case_id}-{kind}.nii.gz")


@router.get("/cases/{case_id}/prediction", response_class=FileResponse)
def prediction(case_id: Id, session: SessionDep, store: StoreDep, user: UserDep) -> FileResponse:
    """The model's label map on the case's grid (NIfTI uint8), a starting point for editing.

    The holder of a live lease gets the map served with their claim, even after a newer model is published.
    """
    leased = service.leased_prediction(session, case_id, user.id)
    return _case_output(case_id, "prediction", session, store, leased)


@router.get("/cases/{case_id}/uncertainty", response_class=FileResponse)
def uncertainty(case_id: Id, session: SessionDep, store: StoreDep, _: UserDep) -> FileResponse:
    """Per-voxel MC-dropout variance (mean over classes) from the last scoring run (NIfTI float32)."""
    return _case_output(case_id, "uncertainty", session, store)
