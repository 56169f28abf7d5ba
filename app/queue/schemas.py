from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from app.cases.schemas import CasePublic
from app.review.schemas import ReviewNote

SCORE_MEANING = (
    "the ranking's priority for this case, comparable only within one ranking (higher = sooner); not a "
    "probability. mc_dropout_variance: per voxel the variance over the T dropout passes, averaged over classes "
    "and summed over the volume, so it is unbounded and grows with the volume; random: a random draw; null: the "
    "case arrived after the ranking was published")
RANK_MEANING = "position in the current ranking, 1 = first; null: the case arrived after it was published"


class LeaseInfo(BaseModel):
    token: str
    expires_at: dt.datetime


class ClaimResponse(BaseModel):
    case: CasePublic
    rank: int | None = Field(description=RANK_MEANING)
    score: float | None = Field(description=SCORE_MEANING)
    ranking_id: int | None
    model_version: int | None
    lease: LeaseInfo
    review: ReviewNote | None = Field(None, description="a reviewer sent your reading of this case back: their "
                                      "comment says what to change; your next version replaces it")


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
    rank: int | None = Field(description=RANK_MEANING)
    score: float | None = Field(description=SCORE_MEANING)
    status: str  # open | leased | in_review | labelled | excluded
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
    in_review: int = Field(description="read by every reader, but a reading awaits review or was sent back")
    labelled: int
    excluded: int
    pool: int
    validation: int
    labelled_fraction: float
    ranking: RankingInfo | None
    model_version: int | None
