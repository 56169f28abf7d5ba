from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.auth.deps import SessionDep, UserDep
from app.cases import service as cases
from app.cases.schemas import LabelVersionPublic
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id, LeaseToken
from app.core.storage import BlobStore, get_blob_store
from app.models import ReviewLease
from app.review import service
from app.review.schemas import (
    CaseAgreement,
    ProjectAgreement,
    ReviewClaimResponse,
    ReviewLeaseInfo,
    ReviewLeasePublic,
    ReviewRequest,
)

router = APIRouter(prefix="/api/v1", tags=["review"], responses=problem_responses(*COMMON_PROBLEMS, 409, 410))
StoreDep = Annotated[BlobStore, Depends(get_blob_store)]


def _lease_public(lease: ReviewLease) -> ReviewLeasePublic:
    return ReviewLeasePublic(token=lease.token, label_version_id=lease.label_version_id, user_id=lease.user_id,
                             created_at=lease.created_at, expires_at=lease.expires_at, ended_at=lease.ended_at,
                             end_reason=lease.end_reason)


@router.post("/projects/{project_id}/review/next", response_model=ReviewClaimResponse,
             responses={204: {"description": "no submitted version left to review"}})
def claim_review(project_id: Id, session: SessionDep, user: UserDep) -> ReviewClaimResponse | Response:
    """Lease the oldest submitted label version you did not author (reviewers and admins)."""
    claim = service.claim_review(session, project_id, user)
    if claim is None:
        return Response(status_code=204)
    return ReviewClaimResponse(label=service.versions_public(session, [claim.version])[0],
                               case=cases.to_public(session, [claim.case])[0],
                               lease=ReviewLeaseInfo(token=claim.lease.token, expires_at=claim.lease.expires_at))


@router.post("/review/leases/{token}/renew", response_model=ReviewLeasePublic)
def renew(token: LeaseToken, session: SessionDep, user: UserDep) -> ReviewLeasePublic:
    return _lease_public(service.renew_review_lease(session, token, user))


@router.delete("/review/leases/{token}", response_model=ReviewLeasePublic)
def release(token: LeaseToken, session: SessionDep, user: UserDep) -> ReviewLeasePublic:
    return _lease_public(service.release_review_lease(session, token, user))


@router.get("/labels/{label_id}", response_model=LabelVersionPublic)
def get_label(label_id: Id, session: SessionDep, _: UserDep) -> LabelVersionPublic:
    return service.get_version_public(session, label_id)


@router.post("/labels/{label_id}/review", response_model=LabelVersionPublic)
def review(
    label_id: Id, body: ReviewRequest, session: SessionDep, store: StoreDep, user: UserDep
) -> LabelVersionPublic:
    """Approve a submitted version, or send it back to its author with a comment (never your own: 403)."""
    version = service.review(session, store, label_id, user, body.decision, body.comment)
    return service.versions_public(session, [version])[0]


@router.get("/cases/{case_id}/agreement", response_model=CaseAgreement)
def case_agreement(case_id: Id, session: SessionDep, _: UserDep) -> CaseAgreement:
    return service.case_agreement(session, cases.get_case(session, case_id))


@router.get("/projects/{project_id}/agreement", response_model=ProjectAgreement)
def project_agreement(project_id: Id, session: SessionDep, _: UserDep) -> ProjectAgreement:
    return service.project_agreement(session, project_id)
