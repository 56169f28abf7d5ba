from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from app.cases.schemas import CasePublic


class LeaseInfo(BaseModel):
    token: str
    expires_at: dt.datetime


class ClaimResponse(BaseModel):
    case: CasePublic
    rank: int | None  # None: a case imported after the current ranking was published
    score: float | None
    ranking_id: int | None
    model_version: int | None
    lease: LeaseInfo


class SkipRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class LeasePublic(BaseModel):
    token: str
    case_id: int
    user_id: int
    created_at: dt.datetime
    expires_at: dt.datetime
    ended_at: dt.datetime | None
    end_reason: str | None


class LiveLease(BaseModel):
    # The token is the key to renew, skip or release: shown only to its holder.
    token: str | None = Field(description="the lease token; null on another user's lease")
    case_id: int
    project_id: int
    user_id: int
    user: str
    created_at: dt.datetime
    expires_at: dt.datetime


class QueueItem(BaseModel):
    case_id: int
    patient: str
    rank: int | None
    score: float | None
    status: str  # open | leased | labelled | excluded
    pinned: bool
    leased_by: str | None
    lease_expires_at: dt.datetime | None


class QueuePage(BaseModel):
    ranking_id: int | None
    items: list[QueueItem]
    limit: int
    offset: int


class RankingInfo(BaseModel):
    id: int
    kind: str
    strategy: str
    seed: int | None
    model_version: int | None
    created_at: dt.datetime


class QueueStats(BaseModel):
    open: int
    leased: int
    labelled: int
    excluded: int
    pool: int
    validation: int
    labelled_fraction: float
    ranking: RankingInfo | None
    model_version: int | None
