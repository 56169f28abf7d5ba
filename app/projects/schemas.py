from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONTROL_FRACTION = ("probability that a claim is served from a seeded random order of the open cases instead of "
                    "the ranking (the control arm of the campaign report); 0 turns the control arm off")
CONTROL_SEED = "seed of the control draws: claim n of the project is drawn from (seed, n), so a campaign replays"
TRAIN_ON = ("which label versions count as labelled for training, evaluation and the queue: submitted (every "
            "version not sent back by a reviewer) or approved (approved versions only)")
READERS = ("how many distinct annotators read each case: it stays in the queue until that many have submitted; "
           "with two or more, their consensus is what trains")
CONSENSUS = "how several readers' versions are combined: staple (SimpleITK multi-label STAPLE) or majority_vote"
TrainOn = Literal["submitted", "approved"]
ConsensusMethod = Literal["staple", "majority_vote"]


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    modality: Literal["CT", "MR"]
    labels: list[str] = Field(min_length=2, max_length=255)
    annotators_can_upload_cases: bool = Field(
        default=False, description="annotators may add cases (a volume opened locally in 3D Slicer); admins always may")
    control_fraction: float | None = Field(None, ge=0, le=1, description=CONTROL_FRACTION + "; default "
                                           "NEXTCASE_CONTROL_FRACTION (0.1)")
    control_seed: int | None = Field(None, ge=0, le=2**31 - 1, description=CONTROL_SEED + "; default random")
    train_on: TrainOn = Field("submitted", description=TRAIN_ON)
    readers_per_case: int = Field(1, ge=1, le=50, description=READERS)
    consensus_method: ConsensusMethod = Field("staple", description=CONSENSUS)

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: list[str]) -> list[str]:
        if labels[0].lower() != "background":
            raise ValueError("index 0 must be 'background'")
        if len({name.lower() for name in labels}) != len(labels):
            raise ValueError("label names must be unique")
        if any(not name.strip() for name in labels):
            raise ValueError("label names must not be empty")
        return labels


class ProjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    modality: str
    labels: list[str]
    created_at: dt.datetime
    current_ranking_id: int | None
    control_fraction: float = Field(description=CONTROL_FRACTION)
    annotators_can_upload_cases: bool
    train_on: str = Field(description=TRAIN_ON)
    readers_per_case: int = Field(description=READERS)
    consensus_method: str = Field(description=CONSENSUS)


class ProjectSettings(ProjectPublic):
    """What admins see when they create or change a project: with the seed, which annotators are not shown.

    With the seed and the claim count anyone could compute which claims are controls. Hiding it does not fully
    blind annotators: a claim's rank (far down the ranking) can still give a control case away."""

    control_seed: int = Field(description=CONTROL_SEED)


class ProjectPatch(BaseModel):
    """Project settings an admin may change while the campaign runs."""

    model_config = ConfigDict(extra="forbid")  # a misspelt or read-only field is a 422, not silently ignored
    control_fraction: float | None = Field(None, ge=0, le=1, description=CONTROL_FRACTION)
    control_seed: int | None = Field(None, ge=0, le=2**31 - 1, description=CONTROL_SEED)
    annotators_can_upload_cases: bool | None = Field(
        default=None, description="annotators may add cases (a volume opened locally in 3D Slicer)")
    train_on: TrainOn | None = Field(None, description=TRAIN_ON)
    readers_per_case: int | None = Field(None, ge=1, le=50, description=READERS)
    consensus_method: ConsensusMethod | None = Field(None, description=CONSENSUS)
