"""Queries behind review: label versions of cases, the review queue's pick, review leases, agreement rows.

The review queue locks the chosen label version row as the annotation queue locks a case row: PostgreSQL
``FOR NO KEY UPDATE OF label_versions SKIP LOCKED`` with the lease columns on the version row (a row leased
by a transaction that committed meanwhile is re-checked against them); SQLite serialises transactions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session, aliased

from app.models import Case, LabelVersion, ReaderAgreement, ReviewLease, User


def is_current(readers_per_case: int | ColumnElement[int]) -> Any:
    """SQL: this label version is a reader's current reading (no newer reading replaces it).

    One reader per case: the case's newest reading replaces every older one (a correction, as before
    review existed). Several readers: only the same author's newer version replaces it. ``readers_per_case``
    may be SQL (the claim statement reads it from the project row it locks).
    """
    newer = aliased(LabelVersion)
    condition = [newer.case_id == LabelVersion.case_id, newer.version > LabelVersion.version,
                 newer.consensus_of.is_(None)]
    if not isinstance(readers_per_case, int):
        condition.append(or_(readers_per_case <= 1, newer.author_id == LabelVersion.author_id))
    elif readers_per_case > 1:
        condition.append(newer.author_id == LabelVersion.author_id)
    return ~exists().where(*condition)


def pick_submitted(session: Session, project_id: int, reviewer_id: int, readers_per_case: int,
                   now: dt.datetime) -> LabelVersion | None:
    """Lock the oldest submitted current reading of the project that the reviewer did not author and nobody holds."""
    stmt = (
        select(LabelVersion).join(Case, Case.id == LabelVersion.case_id)
        .where(Case.project_id == project_id, Case.deleted_at.is_(None), LabelVersion.review_state == "submitted",
               LabelVersion.consensus_of.is_(None), LabelVersion.author_id != reviewer_id,
               or_(LabelVersion.review_lease_expires_at.is_(None), LabelVersion.review_lease_expires_at <= now),
               is_current(readers_per_case))
        .order_by(LabelVersion.created_at, LabelVersion.id).limit(1)
        .with_for_update(of=LabelVersion, skip_locked=True, key_share=True)
    )
    return session.scalar(stmt)


def get_version(session: Session, version_id: int, *, for_update: bool = False) -> LabelVersion | None:
    if not for_update:
        return session.get(LabelVersion, version_id)
    return session.get(LabelVersion, version_id, with_for_update={"key_share": True}, populate_existing=True)


def versions_of(session: Session, case_id: int) -> list[LabelVersion]:
    return list(session.scalars(select(LabelVersion).where(LabelVersion.case_id == case_id)
                                .order_by(LabelVersion.version)))


def versions_of_project(
    session: Session, project_id: int, split: str | None = None
) -> list[tuple[Case, list[LabelVersion]]]:
    """Every live case of the project (of one split if given) that has a label version, with its versions."""
    where = [Case.project_id == project_id, Case.deleted_at.is_(None)]
    if split is not None:
        where.append(Case.split == split)
    rows = session.execute(select(Case, LabelVersion).join(LabelVersion, LabelVersion.case_id == Case.id)
                           .where(*where).order_by(Case.id, LabelVersion.version))
    grouped: dict[int, tuple[Case, list[LabelVersion]]] = {}
    for case, version in rows:
        grouped.setdefault(case.id, (case, []))[1].append(version)
    return list(grouped.values())


def returned_version(session: Session, case_id: int, author_id: int, readers_per_case: int) -> LabelVersion | None:
    """The author's current reading of the case if a reviewer asked for changes to it."""
    return session.scalar(select(LabelVersion).where(
        LabelVersion.case_id == case_id, LabelVersion.author_id == author_id,
        LabelVersion.review_state == "changes_requested", LabelVersion.consensus_of.is_(None),
        is_current(readers_per_case)).order_by(LabelVersion.version.desc()).limit(1))


def user_names(session: Session, user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return {uid: name for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(user_ids)))}


def lease_by_token(session: Session, token: str) -> ReviewLease | None:
    return session.scalar(select(ReviewLease).where(ReviewLease.token == token))


def agreements(session: Session, consensus_ids: list[int]) -> list[ReaderAgreement]:
    if not consensus_ids:
        return []
    return list(session.scalars(select(ReaderAgreement).where(ReaderAgreement.consensus_version_id.in_(consensus_ids))
                                .order_by(ReaderAgreement.id)))
