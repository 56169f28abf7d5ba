"""Queries behind label efforts and the campaign report."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import LabelEffort, LabelVersion, ModelVersion, Project, User


@dataclass(frozen=True)
class PendingInputs:
    prediction_key: str
    label_key: str
    classes: list[str]


def pending_inputs(session: Session, effort_id: int) -> PendingInputs | None:
    """What a pending effort compares (None when it is not pending: done by another process, or gone)."""
    row = session.execute(
        select(LabelEffort.prediction_key, LabelVersion.blob_key, Project.labels)
        .join(LabelVersion, LabelVersion.id == LabelEffort.label_version_id)
        .join(Project, Project.id == LabelEffort.project_id)
        .where(LabelEffort.id == effort_id, LabelEffort.status == "pending")
    ).first()
    if row is None or row[0] is None:
        return None
    return PendingInputs(row[0], row[1], list(row[2]))


def finish(session: Session, effort_id: int, values: dict[str, Any]) -> bool:
    """Store a result unless another process stored one first (the comparison may run twice, not land twice)."""
    result = session.execute(update(LabelEffort).where(LabelEffort.id == effort_id, LabelEffort.status == "pending")
                             .values(**values))
    return bool(getattr(result, "rowcount", 0))


def stale_pending(session: Session, project_id: int, before: dt.datetime, limit: int) -> list[int]:
    return list(session.scalars(
        select(LabelEffort.id).where(LabelEffort.project_id == project_id, LabelEffort.status == "pending",
                                     LabelEffort.created_at < before).order_by(LabelEffort.id).limit(limit)))


def efforts(session: Session, project_id: int) -> list[tuple[LabelEffort, int | None, str]]:
    """Every effort of the project with its model's version number and its author's name, oldest first."""
    rows = session.execute(
        select(LabelEffort, ModelVersion.version, User.name)
        .outerjoin(ModelVersion, ModelVersion.id == LabelEffort.model_version_id)
        .join(User, User.id == LabelEffort.user_id)
        .where(LabelEffort.project_id == project_id).order_by(LabelEffort.id))
    return [(effort, version, name) for effort, version, name in rows]
