"""Queries behind the "annotate next" queue.

A claim reads the project's current ranking id once and passes it to every query it runs, so it
sees exactly one ranking (old or new; rankings are immutable). It locks the chosen case row, so a
case is never handed out twice:
- PostgreSQL: ``FOR NO KEY UPDATE OF cases SKIP LOCKED``; a row leased by a transaction that
  committed meanwhile is re-checked against the lease columns (they live on the case row for this).
- SQLite: every transaction starts with BEGIN IMMEDIATE (app.core.db), so claims run one at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import ScalarSelect, Select, Subquery, and_, case, false, func, literal, or_, select, true
from sqlalchemy.orm import Session

from app.models import Case, CaseScore, Lease, ModelVersion, Project, Ranking, RankingEntry, User


class Picked(NamedTuple):
    case: Case
    entry: RankingEntry | None
    tier: str  # returned | pinned | control | ranked | unranked | skipped


def current_ranking_id_subquery(project_id: int) -> ScalarSelect[int | None]:
    return select(Project.current_ranking_id).where(Project.id == project_id).scalar_subquery()


def open_case_filter(project_id: int, now: dt.datetime) -> list[Any]:
    return [
        Case.project_id == project_id,
        Case.deleted_at.is_(None),
        Case.status == "unlabelled",
        Case.split == "pool",
        Case.excluded == false(),
        or_(Case.lease_expires_at.is_(None), Case.lease_expires_at <= now),
    ]


def _queue_order(skipped: set[int]) -> tuple[Any, ...]:
    skipped_first = case((Case.id.in_(skipped), 1), else_=0) if skipped else literal(0)
    return (Case.pinned.desc(), skipped_first, RankingEntry.rank.is_(None), RankingEntry.rank, Case.id)


def _entry_join(project_id: int) -> Any:
    return and_(RankingEntry.case_id == Case.id, RankingEntry.ranking_id == current_ranking_id_subquery(project_id))


def _lock_first(session: Session, stmt: Select[Case, RankingEntry]) -> tuple[Case, RankingEntry | None] | None:
    # NO KEY UPDATE: a plain FOR UPDATE conflicts with the KEY SHARE locks that foreign-key checks
    # take while a new ranking is being written, and SKIP LOCKED would then wrongly report "empty".
    row = session.execute(stmt.limit(1).with_for_update(of=Case, skip_locked=True, key_share=True)).first()
    return None if row is None else (row[0], row[1])


def pick_next(
    session: Session, project_id: int, ranking_id: int | None, now: dt.datetime, user_id: int,
    control: Callable[[int], int] | None = None, readers: ReaderRules | None = None,
) -> Picked | None:
    """Lock the first open case in queue order: pinned, ranked, unranked, then this annotator's skips.

    One small query per tier instead of one sort over the whole project: the ranked tier walks
    ``ix_ranking_entries_ranking_rank`` and stops at the first open case. With ``control`` (open case
    count -> position of the control case), a control tier replaces the ranking right after the pinned tier.
    Skipped cases come back least recently skipped first: in rank order, skipping the top one when every
    case was skipped handed that same case straight back, so the annotator could never get past it.
    With ``readers`` (review), cases a reviewer sent back to this annotator come first of all, and no
    other tier hands out a case the annotator has already labelled.
    """
    skipped = skipped_by(session, project_id, user_id)
    entry = and_(RankingEntry.case_id == Case.id, RankingEntry.ranking_id == ranking_id)
    unread = [~readers.read_by] if readers is not None else []
    open_filter = [*open_case_filter(project_id, now), *unread]
    with_entry = select(Case, RankingEntry).outerjoin(RankingEntry, entry).where(*open_filter)
    fresh = [Case.id.not_in(skipped)] if skipped else []
    tiers: list[tuple[str, Any]] = []
    if readers is not None:
        tiers.append(("returned", _returned_tier(project_id, now, entry, readers, fresh)))
    tiers.append(("pinned", with_entry.where(Case.pinned == true(), *fresh)
                  .order_by(RankingEntry.rank.is_(None), RankingEntry.rank, Case.id)))
    if control is not None:
        tiers.append(("control", _control_tier(session, with_entry, open_filter, fresh, control)))
    tiers += [
        ("ranked", select(Case, RankingEntry).join(RankingEntry, entry)
         .where(*open_filter, *fresh).order_by(RankingEntry.rank)),
        ("unranked", with_entry.where(*fresh, RankingEntry.case_id.is_(None)).order_by(Case.id)),
    ]
    if skipped:
        last_skip = _last_skips(user_id)
        tiers.append(("skipped", with_entry.join(last_skip, last_skip.c.case_id == Case.id)
                      .order_by(last_skip.c.skipped_at, Case.pinned.desc(), RankingEntry.rank.is_(None),
                                RankingEntry.rank, Case.id)))
        if readers is not None:  # a sent-back case the annotator skipped comes back after everything else
            tiers.append(("returned", _returned_tier(project_id, now, entry, readers, [Case.id.in_(skipped)])))
    for tier, stmt in tiers:
        if stmt is None:
            continue
        picked = _lock_first(session, stmt)
        if picked is not None:
            return Picked(picked[0], picked[1], tier)
    return None


def _last_skips(user_id: int) -> Subquery:
    """(case_id, skipped_at): when the user last skipped each case they skipped."""
    return (select(Lease.case_id, func.max(Lease.ended_at).label("skipped_at"))
            .where(Lease.user_id == user_id, Lease.end_reason == "skipped")
            .group_by(Lease.case_id).subquery())


class ReaderRules(NamedTuple):
    """SQL conditions on ``cases`` from the review domain, for one annotator."""

    returned: Any  # a reviewer sent the annotator's current reading of the case back
    returned_at: Any  # when (orders the returned cases, oldest first)
    read_by: Any  # the annotator authored a version of the case


def _returned_tier(
    project_id: int, now: dt.datetime, entry: Any, readers: ReaderRules, also: list[Any]
) -> Select[Case, RankingEntry]:
    """Cases sent back to this annotator: whatever their status, while no one else holds them (``also``: further
    conditions, e.g. not skipped: Slicer's Next Sample skips, and must then be handed another case)."""
    return (select(Case, RankingEntry).outerjoin(RankingEntry, entry)
            .where(Case.project_id == project_id, Case.deleted_at.is_(None), Case.split == "pool",
                   Case.excluded == false(), or_(Case.lease_expires_at.is_(None), Case.lease_expires_at <= now),
                   readers.returned, *also)
            .order_by(readers.returned_at, Case.id))


def _control_tier(
    session: Session, with_entry: Select[Case, RankingEntry], open_filter: list[Any], fresh: list[Any],
    position: Callable[[int], int],
) -> Select[Case, RankingEntry] | None:
    """The open, unpinned cases from the drawn one onwards in id order, wrapping round (None: no open case).

    The ids are read without a lock; a case claimed meanwhile is simply passed over by the locking query,
    which then takes the next one, so SKIP LOCKED keeps its guarantee.
    """
    open_ids = list(session.scalars(select(Case.id).where(*open_filter, *fresh,
                                                          Case.pinned == false()).order_by(Case.id)))
    if not open_ids:
        return None
    pivot = open_ids[position(len(open_ids))]
    return with_entry.where(Case.pinned == false(), *fresh).order_by(Case.id < pivot, Case.id)


def prediction_key(session: Session, model_version_id: int, case_id: int) -> str | None:
    """The label map that model version's scoring run stored for the case (what GET .../prediction serves)."""
    return session.scalar(
        select(CaseScore.prediction_key).join(ModelVersion, ModelVersion.cycle_id == CaseScore.cycle_id)
        .where(ModelVersion.id == model_version_id, CaseScore.case_id == case_id))


def skipped_query(project_id: int, user_id: int) -> Select[int]:
    """The cases a user skipped in a project; ``ix_leases_user_skipped`` holds exactly the rows it reads."""
    return (select(Lease.case_id).join(Case, Case.id == Lease.case_id)
            .where(Case.project_id == project_id, Lease.user_id == user_id, Lease.end_reason == "skipped"))


def skipped_by(session: Session, project_id: int, user_id: int) -> set[int]:
    return set(session.scalars(skipped_query(project_id, user_id)))


def lease_by_token(session: Session, token: str) -> Lease | None:
    return session.scalar(select(Lease).where(Lease.token == token))


def live_leases(
    session: Session, now: dt.datetime, user_id: int | None, project_id: int | None,
) -> list[tuple[Lease, int, str]]:
    """Live leases (not ended, not expired) with their case's project id and holder's name, soonest expiry first."""
    stmt = (select(Lease, Case.project_id, User.name).join(Case, Case.lease_id == Lease.id)
            .join(User, User.id == Lease.user_id)
            .where(Lease.ended_at.is_(None), Lease.expires_at > now).order_by(Lease.expires_at, Lease.id))
    if user_id is not None:
        stmt = stmt.where(Lease.user_id == user_id)
    if project_id is not None:
        stmt = stmt.where(Case.project_id == project_id)
    return [(lease, pid, name) for lease, pid, name in session.execute(stmt)]


def queue_page(
    session: Session, project_id: int, limit: int, offset: int
) -> list[tuple[Case, RankingEntry | None, Lease | None, User | None]]:
    stmt = (
        select(Case, RankingEntry, Lease, User)
        .select_from(Case)
        .outerjoin(RankingEntry, _entry_join(project_id))
        .outerjoin(Lease, Lease.id == Case.lease_id)
        .outerjoin(User, User.id == Lease.user_id)
        .where(Case.project_id == project_id, Case.deleted_at.is_(None), Case.split == "pool")
        .order_by(Case.status.desc(), *_queue_order(set()))  # "unlabelled" before "labelled"
        .limit(limit)
        .offset(offset)
    )
    return [(r[0], r[1], r[2], r[3]) for r in session.execute(stmt)]


def count_pool(session: Session, project_id: int, now: dt.datetime) -> dict[str, int]:
    live = and_(Case.lease_expires_at.is_not(None), Case.lease_expires_at > now)
    bucket = case(
        (Case.status == "labelled", "labelled"),
        (Case.status == "in_review", "in_review"),
        (Case.excluded, "excluded"),
        (live, "leased"),
        else_="open",
    )
    rows = session.execute(
        select(bucket, func.count())
        .where(Case.project_id == project_id, Case.deleted_at.is_(None), Case.split == "pool")
        .group_by(bucket)
    )
    counts = {"open": 0, "leased": 0, "in_review": 0, "labelled": 0, "excluded": 0}
    counts.update({str(k): int(v) for k, v in rows})
    return counts


def count_split(session: Session, project_id: int, split: str) -> int:
    stmt = select(func.count()).select_from(Case).where(
        Case.project_id == project_id, Case.deleted_at.is_(None), Case.split == split
    )
    return int(session.scalar(stmt) or 0)


def pool_cases_added_since(session: Session, project_id: int, since: dt.datetime) -> bool:
    """Cheap (index range scan) test for cases imported after a ranking was published."""
    stmt = select(Case.id).where(
        Case.project_id == project_id, Case.created_at > since, Case.split == "pool", Case.status == "unlabelled",
        Case.deleted_at.is_(None),
    ).limit(1)
    return session.scalar(stmt) is not None


def rankable_case_ids(session: Session, project_id: int) -> list[int]:
    stmt = select(Case.id).where(
        Case.project_id == project_id, Case.deleted_at.is_(None), Case.split == "pool", Case.status == "unlabelled"
    ).order_by(Case.id)
    return list(session.scalars(stmt))


def get_ranking(session: Session, ranking_id: int | None) -> Ranking | None:
    return None if ranking_id is None else session.get(Ranking, ranking_id)
