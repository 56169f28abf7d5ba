from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.auth.deps import UserDep
from app.campaign import service
from app.campaign.schemas import CampaignReport
from app.core.db import session_scope
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["campaign"], responses=problem_responses(*COMMON_PROBLEMS))


@router.get("/projects/{project_id}/campaign", response_model=CampaignReport,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "the report; with format=csv one row per (model version, arm)"}})
def campaign(
    project_id: Id, _: UserDep,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format", description="csv: a download")] = "json",
) -> CampaignReport | Response:
    """Is the model getting better, how much do its pre-segmentations save, does the ranking find its mistakes."""
    # Efforts whose background job was lost are computed first, each in short transactions of its own, so no
    # session of this request may be open yet (on SQLite it would hold the write lock they wait for).
    service.catch_up(project_id)
    with session_scope() as session:
        report = service.campaign_report(session, get_project(session, project_id))
    if fmt == "csv":
        return Response(service.campaign_csv(report), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="campaign-{project_id}.csv"'})
    return report
