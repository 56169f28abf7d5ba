from __future__ import annotations

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from app.auth import service as auth
from app.auth.deps import SessionDep, UserDep
from app.cases import repository as case_repo
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id, LeaseToken, Offset, QueryId
from app.models import Ranking, utcnow
from app.projects.service import get_project
from app.queue import repository as repo
from app.queue import service
from app.queue.schemas import (
    ClaimResponse,
    LeaseInfo,
    LeasePublic,
    LiveLease,
    QueueItem,
    QueuePage,
    QueueStats,
    RankingInfo,
    SkipRequest,
)

router = APIRouter(prefix="/api/v1", tags=["queue"],
                   responses=problem_responses(*COMMON_PROBLEMS, 409, 410))


def _ranking_info(ranking: Ranking | None) -> RankingInfo | None:
    if ranking is None:
        return None
    return RankingInfo(id=ranking.id, kind=ranking.kind, strategy=ranking.strategy, seed=ranking.seed,
                       model_version=ranking.model_version_id, created_at=ranking.created_at)


@router.post("/projects/{project_id}/queue/next", response_model=ClaimResponse,
             responses={204: {"description": "no case left to annotate"}})
async def claim_next(project_id: Id, user: UserDep) -> Response:
    claim = await service.claim_next_async(project_id, user)
    if claim is None:
        return Response(status_code=204)
    return _json(ClaimResponse(case=claim.case, rank=claim.rank, score=claim.score, ranking_id=claim.ranking.id,
                               model_version=claim.ranking.model_version_id,
                               lease=LeaseInfo(token=claim.lease.token, expires_at=claim.lease.expires_at),
                               review=claim.review))


def _json(body: BaseModel) -> Response:
    """The response of the claim path's hot routes, already built from their response model: FastAPI would
    validate the model again (for a route that is not ``async``, in a worker thread of its own)."""
    return Response(body.model_dump_json(), media_type="application/json")


@router.get("/leases", response_model=list[LiveLease])
def live_leases(
    session: SessionDep, user: UserDep,
    mine: bool = Query(True, description="only the caller's leases; false (admins): everyone's, tokens hidden"),
    project_id: QueryId = None,
) -> list[LiveLease]:
    """Live leases: a client that lost its lease token finds it here (the holder sees the token)."""
    if not mine:
        auth.require_role(user, "admin")
    rows = repo.live_leases(session, utcnow(), user.id if mine else None, project_id)
    return [LiveLease(token=lease.token if lease.user_id == user.id else None, case_id=lease.case_id,
                      project_id=pid, user_id=lease.user_id, user=name, created_at=lease.created_at,
                      expires_at=lease.expires_at) for lease, pid, name in rows]


@router.post("/leases/{token}/renew", response_model=LeasePublic)
def renew(token: LeaseToken, session: SessionDep, user: UserDep) -> LeasePublic:
    return service.lease_public(service.renew(session, token, user))


@router.delete("/leases/{token}", response_model=LeasePublic)
async def release(token: LeaseToken, user: UserDep) -> Response:
    return _json(await service.end_lease_async(token, user, "released"))


@router.post("/leases/{token}/skip", response_model=LeasePublic)
async def skip(token: LeaseToken, body: SkipRequest, user: UserDep) -> Response:
    return _json(await service.end_lease_async(token, user, "skipped", service.require_reason(body.reason)))


@router.get("/projects/{project_id}/queue", response_model=QueuePage)
def queue(
    project_id: Id, session: SessionDep, _: UserDep,
    limit: int = Query(50, ge=1, le=1000), offset: Offset = 0,
) -> QueuePage:
    project = get_project(session, project_id)
    now = utcnow()
    rows = repo.queue_page(session, project_id, limit, offset)
    names = case_repo.pseudonyms(session, {c.patient_id for c, *_ in rows})
    items = []
    for case, entry, lease, holder in rows:
        live = lease is not None and lease.ended_at is None and lease.expires_at > now
        status = (case.status if case.status in ("labelled", "in_review") else "excluded" if case.excluded
                  else "leased" if live else "open")
        items.append(QueueItem(
            case_id=case.id, patient=names[case.patient_id], rank=entry.rank if entry else None,
            score=entry.score if entry else None, status=status, pinned=case.pinned,
            leased_by=holder.name if live and holder else None,
            lease_expires_at=lease.expires_at if live and lease else None,
        ))
    return QueuePage(ranking_id=project.current_ranking_id, items=items, limit=limit, offset=offset)


@router.get("/projects/{project_id}/queue/stats", response_model=QueueStats)
def stats(project_id: Id, session: SessionDep, _: UserDep) -> QueueStats:
    project = get_project(session, project_id)
    counts = repo.count_pool(session, project_id, utcnow())
    pool = sum(counts.values())
    ranking = repo.get_ranking(session, project.current_ranking_id)
    return QueueStats(
        **counts, pool=pool, validation=repo.count_split(session, project_id, "validation"),
        labelled_fraction=counts["labelled"] / pool if pool else 0.0,
        ranking=_ranking_info(ranking), model_version=ranking.model_version_id if ranking else None,
    )
