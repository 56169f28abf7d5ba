"""Queries for the facade's own table: the ids MONAI Label clients gave the volumes they uploaded."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ImageAlias


def find_alias(session: Session, project_id: int, user_id: int, alias_hash: str) -> ImageAlias | None:
    return session.scalar(select(ImageAlias).where(
        ImageAlias.project_id == project_id, ImageAlias.user_id == user_id, ImageAlias.alias_hash == alias_hash))


def save_alias(session: Session, project_id: int, user_id: int, alias_hash: str, case_id: int) -> None:
    """Point the alias at ``case_id``: a second upload under the same name is the volume the user now has open."""
    alias = find_alias(session, project_id, user_id, alias_hash)
    if alias is None:
        session.add(ImageAlias(project_id=project_id, user_id=user_id, alias_hash=alias_hash, case_id=case_id))
    else:
        alias.case_id = case_id
    session.flush()
