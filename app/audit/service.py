"""The audit trail: who did what to which case, when. Rows are only ever appended."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEvent


def record(
    session: Session,
    action: str,
    *,
    user_id: int | None,
    project_id: int | None = None,
    case_id: int | None = None,
    **detail: Any,
) -> None:
    session.add(AuditEvent(action=action, user_id=user_id, project_id=project_id, case_id=case_id, detail=detail))


def list_events(session: Session, project_id: int, limit: int, offset: int) -> list[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.project_id == project_id)
        .order_by(AuditEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(stmt))
