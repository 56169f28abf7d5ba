from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from app.cases.schemas import CasePublic, LabelVersionPublic

Decision = Literal["approved", "changes_requested"]
TrainOn = Literal["submitted", "approved"]
ConsensusMethod = Literal["staple", "majority_vote"]


class ReviewRequest(BaseModel):
    decision: Decision
    comment: str | None = Field(None, max_length=5000,
                                description="what to change; required with changes_requested")


class ReviewNote(BaseModel):
    """The review that sent a case back to its author, shown with the author's claim of it."""

    label_version_id: int
    version: int
    decision: str
    comment: str | None
    reviewer: str | None
    reviewed_at: dt.datetime | None


class ReviewLeaseInfo(BaseModel):
    token: str
    expires_at: dt.datetime


class ReviewClaimResponse(BaseModel):
    label: LabelVersionPublic
    case: CasePublic
    lease: ReviewLeaseInfo


class ReviewLeasePublic(BaseModel):
    token: str
    label_version_id: int
    user_id: int
    created_at: dt.datetime
    expires_at: dt.datetime
    ended_at: dt.datetime | None
    end_reason: str | None


AGREEMENT_MEANING = ("per foreground class: Dice (1 = identical) and the 95th-percentile Hausdorff distance in mm "
                     "(MONAI's metrics); null where the class is absent from both masks (Dice) or from either (HD95)")


class PairAgreement(BaseModel):
    reader_a: str
    reader_b: str
    version_a: int
    version_b: int
    dice: dict[str, float | None] = Field(description=AGREEMENT_MEANING)
    hd95: dict[str, float | None] = Field(description=AGREEMENT_MEANING)


class Reading(BaseModel):
    reader: str
    version: int
    review_state: str


class CaseAgreement(BaseModel):
    case_id: int
    method: str
    readers: list[Reading] = Field(description="the readings that count (train_on), one per reader")
    consensus_version: int | None = Field(description="the consensus label version of these readings; null with "
                                          "fewer than two, or readers_per_case = 1")
    pairs: list[PairAgreement]


class AnnotatorAgreement(BaseModel):
    annotator: str
    cases: int
    pairs: int
    mean_dice: dict[str, float | None] = Field(description="mean Dice with the other readers of the same cases")
    mean_hd95: dict[str, float | None] = Field(description="mean HD95 (mm) with the other readers of the same cases")


class ProjectAgreement(BaseModel):
    project_id: int
    annotators: list[AnnotatorAgreement]
