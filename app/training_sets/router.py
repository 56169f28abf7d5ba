"""The training-set export as a zip download (admins); ``nextcase export`` writes the same to a folder."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.auth.deps import AdminDep, SessionDep
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id
from app.core.storage import get_blob_store
from app.training_sets import service

router = APIRouter(prefix="/api/v1", tags=["training sets"], responses=problem_responses(*COMMON_PROBLEMS))


@router.get("/projects/{project_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the training set as a zip"}})
def export_training_set(
    project_id: Id, session: SessionDep, _: AdminDep,
    format: Annotated[Literal["msd", "nnunet"], Query(description="Medical Segmentation Decathlon or nnU-Net v2 raw")],
    split: Annotated[str, Query(max_length=100, pattern=r"^(pool|validation|test)(,(pool|validation|test))*$",
                                description="comma-separated splits to include")] = "pool,validation,test",
) -> StreamingResponse:
    training_set = service.plan(session, project_id, format, service.parse_splits(split))
    name = f"project-{project_id}-{format}.zip"
    return StreamingResponse(service.zip_stream(training_set, get_blob_store()), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
