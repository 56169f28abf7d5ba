from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    modality: Literal["CT", "MR"]
    labels: list[str] = Field(min_length=2, max_length=255)
    annotators_can_upload_cases: bool = Field(
        default=False, description="annotators may add cases (a volume opened locally in 3D Slicer); admins always may")

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
    annotators_can_upload_cases: bool


class ProjectPatch(BaseModel):
    """Project settings an admin may change; fields left out stay as they are."""

    annotators_can_upload_cases: bool | None = Field(
        default=None, description="annotators may add cases (a volume opened locally in 3D Slicer)")
