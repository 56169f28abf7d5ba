from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

Split = Literal["pool", "validation", "test"]  # test: never queued, never trained on, evaluated each cycle
# in_review: every reader has read the case, but a reading does not count yet (awaiting review, or sent back).
Status = Literal["unlabelled", "in_review", "labelled"]


class CasePublic(BaseModel):
    id: int
    project_id: int
    patient: str  # pseudonym, never the hospital id
    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    dtype: str
    sha256: str
    source_format: str
    status: str
    split: str
    pinned: bool
    excluded: bool
    latest_label_version: int | None
    created_at: dt.datetime


class CasePage(BaseModel):
    items: list[CasePublic]
    total: int
    limit: int
    offset: int


class CasePatch(BaseModel):
    split: Split | None = None
    pinned: bool | None = None  # to the top of the "annotate next" queue
    excluded: bool | None = None  # never handed out by the queue


class LabelVersionPublic(BaseModel):
    id: int
    case_id: int
    version: int
    author: str  # "consensus" for the combination of several readers' versions
    sha256: str
    created_at: dt.datetime
    review_state: str = Field("submitted", description="submitted (on upload), approved or changes_requested")
    review_comment: str | None = None
    reviewer: str | None = None
    reviewed_at: dt.datetime | None = None
    consensus_of: list[int] | None = Field(None, description="a consensus version: the ids of the readers' "
                                           "label versions it combines")
