"""Queries behind the "annotate next" queue.

A claim follows one ranking (old or new; rankings are immutable) and locks the chosen case row, so a case is
never handed out twice:
- PostgreSQL: one statement (``claim_statement``) whose tiers lock with ``FOR NO KEY UPDATE OF cases SKIP
  LOCKED``; a row leased by a transaction that committed meanwhile is re-checked against the lease columns (they
  live on the case row for this).
- SQLite: every transaction starts with BEGIN IMMEDIATE (app.core.db), so claims run one at a time.
Both choose the case with the same SQL (``queue_tiers``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    FunctionElement,
    Integer,
    Interval,
    ScalarSelect,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from app.models import (
    AuditEvent,
    Case,
    CaseScore,
    LabelVersion,
    Lease,
    ModelVersion,
    Patient,
    Project,
    Ranking,
    RankingEntry,
    User,
    UTCDateTime,
)
from app.projects.service import CLAIM_LOCK
from app.review import service as review


def current_ranking_id_subquery(project_id: int) -> ScalarSelect[int | None]:
    return select(Project.current_ranking_id).where(Project.id == project_id).scalar_subquery()


def open_case_filter(project_id: int | ColumnElement[int], now: dt.datetime | ColumnElement[dt.datetime]) -> list[Any]:
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


# --- the claim -----------------------------------------------------------------------------------


class ClaimInputs(NamedTuple):
    """What the choice of a claim's case depends on, as SQL: bound values (SQLite), or columns that the PostgreSQL
    claim statement reads from the project row it locks (``claim_statement``)."""

    project_id: ColumnElement[int]
    user_id: ColumnElement[int]
    now: ColumnElement[dt.datetime]
    ranking_id: ColumnElement[int]  # the ranking the claim follows
    readers_per_case: int | ColumnElement[int]
    control: ColumnElement[bool] | None  # the claim is drawn from the control arm (None: it is not)
    control_u: ColumnElement[float] | None  # the control draw's uniform number that places the case


# The SQL for floor(x) as an integer: PostgreSQL's CAST rounds, SQLite's truncates (x >= 0 here).
class floor_int(FunctionElement[int]):
    type = Integer()
    name = "floor_int"
    inherit_cache = True


@compiles(floor_int)
def _floor_int(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(floor_int, "sqlite")
def _floor_int_sqlite(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


# Written out, not a parameter: ix_leases_user_skipped holds the rows WHERE end_reason = 'skipped', and a prepared
# statement's generic plan can use it only when the query says so. With a parameter it read every past lease of each
# case it considered (2,134 for the top case by the end of a load run).
SKIPPED = literal_column("'skipped'", String)


def queue_tiers(q: ClaimInputs) -> list[tuple[str, Select[int]]]:
    """Every rule of the queue: a claim takes the first open case (in its tier's order) of the first tier with one.

    Cases a reviewer sent back to this annotator come first of all; then pinned cases; with ``q.control``, a control
    tier replaces the ranking right after them; then the ranking, then cases it does not rank (added since); then
    this annotator's skips, least recently skipped first (in rank order, skipping the top one when every case was
    skipped handed that same case straight back); a sent-back case the annotator skipped comes back last. No tier
    but the sent-back ones hands out a case the annotator has already labelled.

    Each tier is ``select(cases.id)`` with its joins, conditions and order: the callers choose its columns and
    lock it. Each stops at its first open case: the ranked tier walks ``ix_ranking_entries_ranking_rank``, and
    a skip is looked up in ``ix_leases_user_skipped`` (the annotator's skips, not their lease history).
    """
    entry = and_(RankingEntry.case_id == Case.id, RankingEntry.ranking_id == q.ranking_id)
    skipped = exists().where(Lease.user_id == q.user_id, Lease.end_reason == SKIPPED, Lease.case_id == Case.id)
    open_unread = [*open_case_filter(q.project_id, q.now), ~review.read_by(q.user_id)]
    with_entry = select(Case.id).outerjoin(RankingEntry, entry)
    # Sent back: whatever their status, while no one else holds them.
    returned = select(Case.id).where(
        Case.project_id == q.project_id, Case.deleted_at.is_(None), Case.split == "pool", Case.excluded == false(),
        or_(Case.lease_expires_at.is_(None), Case.lease_expires_at <= q.now),
        review.returned_to(q.user_id, q.readers_per_case))
    returned_order = (review.returned_since(q.user_id), Case.id)
    tiers: list[tuple[str, Select[int]]] = [
        ("returned", returned.where(~skipped).order_by(*returned_order)),
        ("pinned", with_entry.where(*open_unread, Case.pinned == true(), ~skipped)
         .order_by(RankingEntry.rank.is_(None), RankingEntry.rank, Case.id)),
    ]
    if q.control is not None and q.control_u is not None:
        candidates = [*open_unread, ~skipped, Case.pinned == false()]
        tiers.append(("control", _control_tier(q.control, q.control_u, candidates)))
    last_skip = (select(Lease.case_id, func.max(Lease.ended_at).label("skipped_at"))
                 .where(Lease.user_id == q.user_id, Lease.end_reason == SKIPPED).group_by(Lease.case_id).subquery())
    tiers += [
        ("ranked", select(Case.id).join(RankingEntry, entry).where(*open_unread, ~skipped).order_by(RankingEntry.rank)),
        ("unranked", with_entry.where(*open_unread, ~skipped, RankingEntry.case_id.is_(None)).order_by(Case.id)),
        ("skipped", with_entry.join(last_skip, last_skip.c.case_id == Case.id).where(*open_unread)
         .order_by(last_skip.c.skipped_at, Case.pinned.desc(), RankingEntry.rank.is_(None), RankingEntry.rank,
                   Case.id)),
        ("returned", returned.where(skipped).order_by(*returned_order)),
    ]
    return tiers


def _control_tier(control: ColumnElement[bool], u: ColumnElement[float], candidates: list[Any]) -> Select[int]:
    """The candidates from the drawn one onwards in id order, wrapping round.

    The drawn one is at position ``min(n - 1, floor(u * n))`` of the n candidates sorted by id (as
    ``app.campaign.draw.control_position``). They are counted without a lock; a case claimed meanwhile is simply
    passed over by the locking query, which then takes the next one, so SKIP LOCKED keeps its guarantee.
    """
    numbered = select(Case.id, (func.row_number().over(order_by=Case.id) - 1).label("position"),
                      func.count().over().label("n")).where(*candidates).subquery()
    drawn = floor_int(u * numbered.c.n)
    pivot = select(numbered.c.id).where(
        numbered.c.position == case((drawn >= numbered.c.n, numbered.c.n - 1), else_=drawn)).scalar_subquery()
    return select(Case.id).where(control, *candidates).order_by(Case.id < pivot, Case.id)


def pick_serialised(session: Session, q: ClaimInputs) -> tuple[int, str] | None:
    """(case id, tier) of the case the claim takes, for SQLite, where claims run one at a time (BEGIN IMMEDIATE)."""
    tiers = queue_tiers(q)
    firsts = [stmt.with_only_columns(func.json_array(Case.id, i)).limit(1).scalar_subquery()
              for i, (_, stmt) in enumerate(tiers)]
    found = session.scalar(select(func.coalesce(*firsts)))
    if found is None:
        return None
    case_id, tier = json.loads(found)
    return int(case_id), tiers[tier][0]


def newest_open_case(project_id: int | ColumnElement[int]) -> ScalarSelect[dt.datetime]:
    """When the newest case still to be annotated was added (a cold-start ranking older than it is outdated)."""
    return (select(func.max(Case.created_at))
            .where(Case.project_id == project_id, Case.split == "pool", Case.status == "unlabelled",
                   Case.deleted_at.is_(None)).scalar_subquery())


# A claim statement's tier numbers (1-based, as it packs them), ``queue_tiers`` with its control tier.
CLAIM_TIERS = ("returned", "pinned", "control", "ranked", "unranked", "skipped", "returned")
CASE_COLUMNS = ("id", "project_id", "patient_id", "shape", "spacing", "origin", "direction", "dtype", "sha256",
                "source_format", "status", "split", "pinned", "excluded", "created_at")


@functools.cache
def claim_statement() -> Select[Any]:
    """The PostgreSQL claim as one statement: run on its own (autocommit), it is a transaction of one round trip.

    It waits for the project's claim lock (``app.projects.service.CLAIM_LOCK``: claims are numbered one at a time,
    without gaps), locks the project row and reads the claim number and the project's settings from it (the latest
    version, whatever the statement's snapshot); the ranking comes from the snapshot (one published while the claim
    waited is not visible to it yet, so the claim follows the one it sees entirely). Then it picks and locks the case
    (``queue_tiers``, each tier ``FOR NO KEY UPDATE SKIP LOCKED``; COALESCE runs a tier only when those before it
    found nothing), ends the case's expired lease, inserts the new lease and its audit record, points the case at
    the lease, counts the claim, and returns what the response shows.

    Nothing is written unless ``outcome`` is ``go``. ``ranking``: no ranking exists yet, or a cold-start one misses
    cases added since (the caller publishes one and runs the statement again with its id as ``claim_published``).
    ``draw``: the claim may be a control claim and the draws sent do not cover its number (``claim_arm_u`` and
    ``claim_case_u`` hold ``draw.uniform(claim_seed, n, "arm" / "case")`` for n = ``claim_base``, ``claim_base`` + 1,
    ...). No row: the project does not exist. Parameters are named ``claim_*``: one named like a column would
    become a SET value of the UPDATEs.

    The lease starts at the later of the claim's clock (``claim_now``) and the database's clock once the case row is
    locked: a release that committed just before, with an end time taken before its lock, never overlaps it.
    """
    project_id, user_id = bindparam("claim_project_id", type_=Integer), bindparam("claim_user_id", type_=Integer)
    now = bindparam("claim_now", type_=UTCDateTime())
    seed, base = bindparam("claim_seed", type_=Integer), bindparam("claim_base", type_=Integer)
    arm_u, case_u = bindparam("claim_arm_u", type_=ARRAY(Float)), bindparam("claim_case_u", type_=ARRAY(Float))
    published = bindparam("claim_published", type_=Integer)  # just published by this claim: not outdated

    gate = (select(func.pg_advisory_xact_lock(CLAIM_LOCK, project_id).label("locked"))
            .cte("gate").prefix_with("MATERIALIZED"))
    proj = (select(Project.id, (Project.claim_count + 1).label("n"), Project.control_seed, Project.control_fraction,
                   Project.readers_per_case, arm_u.label("arm_u"), case_u.label("case_u"))
            .where(Project.id == project_id, exists(select(gate.c.locked)))
            .with_for_update(key_share=True).cte("proj").prefix_with("MATERIALIZED"))
    snap = (select(Ranking.id, Ranking.kind, Ranking.strategy, Ranking.model_version_id,
                   and_(Ranking.kind == "cold_start", newest_open_case(project_id) > Ranking.created_at,
                        Ranking.id.is_distinct_from(published)).label("outdated"))
            .join_from(Project, Ranking, Ranking.id == Project.current_ranking_id).where(Project.id == project_id)
            .cte("snap").prefix_with("MATERIALIZED"))
    slot = proj.c.n - base + 1
    draws = and_(snap.c.kind != "cold_start", proj.c.control_fraction > 0)
    known = and_(proj.c.control_seed == seed, slot.between(1, func.cardinality(proj.c.arm_u)))
    state = (select(proj.c.n, proj.c.control_seed.label("seed"), proj.c.readers_per_case.label("readers"),
                    snap.c.id.label("ranking_id"), snap.c.kind, snap.c.strategy, snap.c.model_version_id,
                    draws.label("draws"),
                    case((or_(snap.c.id.is_(None), snap.c.outdated), "ranking"), (and_(draws, ~known), "draw"),
                         else_="go").label("outcome"),
                    and_(draws, proj.c.arm_u[slot] < proj.c.control_fraction).label("control"),
                    proj.c.case_u[slot].label("case_u"))
             .select_from(proj.outerjoin(snap, true())).cte("state").prefix_with("MATERIALIZED"))

    # Read as (SELECT state.x FROM state): evaluated once, and valid at any depth of the tiers' subqueries.
    tiers = queue_tiers(ClaimInputs(project_id, user_id, now, *[select(column).scalar_subquery() for column in (
        state.c.ranking_id, state.c.readers, state.c.control, state.c.case_u)]))
    assert tuple(name for name, _ in tiers) == CLAIM_TIERS
    # LIMIT 1 written out, not a parameter: a prepared statement's generic plan must know it stops at one row.
    firsts = [stmt.with_only_columns(array([Case.id, literal_column(str(i)), Case.lease_id])).limit(literal_column("1"))
              .with_for_update(of=Case, skip_locked=True, key_share=True).scalar_subquery()
              for i, (_, stmt) in enumerate(tiers, start=1)]
    pick = (select(func.coalesce(*firsts).label("v")).where(state.c.outcome == "go")
            .cte("pick").prefix_with("MATERIALIZED"))
    granted = (select(pick.c.v, func.greatest(now, func.timezone("UTC", func.clock_timestamp()), type_=DateTime())
                      .label("at")).where(pick.c.v.is_not(None)).cte("granted").prefix_with("MATERIALIZED"))
    case_id, tier, old_lease = granted.c.v[1], granted.c.v[2], granted.c.v[3]

    arm = case((and_(tier == CLAIM_TIERS.index("ranked") + 1, state.c.kind == "cold_start"), "cold_start"),
               *[(tier == i, name) for i, name in enumerate(CLAIM_TIERS, start=1)])
    prediction = (select(CaseScore.prediction_key).join(ModelVersion, ModelVersion.cycle_id == CaseScore.cycle_id)
                  .where(ModelVersion.id == state.c.model_version_id, CaseScore.case_id == case_id).scalar_subquery())
    lease = (insert(Lease).from_select(
        ["token", "case_id", "user_id", "ranking_id", "created_at", "expires_at", "arm", "claim_seq",
         "model_version_id", "prediction_key"],
        select(bindparam("claim_token", type_=String), case_id, user_id, state.c.ranking_id, granted.c.at,
               granted.c.at + bindparam("claim_lease_duration", type_=Interval), arm, state.c.n,
               state.c.model_version_id, prediction).select_from(granted.join(state, true())))
        .returning(Lease.id, Lease.case_id, Lease.token, Lease.created_at, Lease.expires_at).cte("lease"))
    expired = (update(Lease).where(Lease.id == old_lease, Lease.ended_at.is_(None))
               .values(ended_at=func.least(Lease.expires_at, granted.c.at), end_reason="expired").cte("expired"))
    claimed = (update(Case).where(Case.id == lease.c.case_id)
               .values(lease_id=lease.c.id, lease_expires_at=lease.c.expires_at)
               .returning(*[Case.__table__.c[name] for name in CASE_COLUMNS]).cte("claimed"))
    counted = (update(Project).where(Project.id == project_id, exists(select(lease.c.id)))
               .values(claim_count=select(state.c.n).scalar_subquery()).cte("counted"))
    audited = insert(AuditEvent).from_select(
        ["at", "user_id", "action", "project_id", "case_id", "detail"],
        select(lease.c.created_at, user_id, literal("lease.claim"), project_id, lease.c.case_id,
               func.json_build_object("lease_id", lease.c.id))).cte("audited")
    latest_version = select(func.max(LabelVersion.version)).where(LabelVersion.case_id == claimed.c.id)
    return (
        select(state.c.outcome, state.c.n, state.c.seed, state.c.draws, state.c.readers, state.c.ranking_id,
               state.c.kind, state.c.strategy, state.c.model_version_id, tier.label("tier"), lease.c.token,
               lease.c.created_at.label("lease_created_at"), lease.c.expires_at.label("lease_expires_at"),
               *[claimed.c[name] for name in CASE_COLUMNS], Patient.pseudonym, RankingEntry.rank, RankingEntry.score,
               latest_version.scalar_subquery().label("latest_label_version"))
        .select_from(state.outerjoin(granted, true()).outerjoin(lease, true()).outerjoin(claimed, true())
                     .outerjoin(Patient, Patient.id == claimed.c.patient_id)
                     .outerjoin(RankingEntry, and_(RankingEntry.ranking_id == state.c.ranking_id,
                                                   RankingEntry.case_id == claimed.c.id)))
        .add_cte(expired, counted, audited)
    )


def prediction_key(session: Session, model_version_id: int, case_id: int) -> str | None:
    """The label map that model version's scoring run stored for the case (what GET .../prediction serves)."""
    return session.scalar(
        select(CaseScore.prediction_key).join(ModelVersion, ModelVersion.cycle_id == CaseScore.cycle_id)
        .where(ModelVersion.id == model_version_id, CaseScore.case_id == case_id))


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


@functools.cache
def end_lease_statement() -> Select[Any]:
    """Ending a lease (release, skip) as one PostgreSQL statement: like a claim, a transaction of one round trip when
    run on its own.

    It frees the case, if the case still points at this lease, the lease has not expired and the caller holds it
    (``claim_admin``: or is an admin), then ends the lease and writes the audit record. Each row is written once,
    by an UPDATE that waits for it like any other (the case row first, as everywhere). The row always holds the
    lease as read before (``ended`` null: nothing was written, the caller says why); no row: no such token.
    """
    token, user_id = bindparam("claim_token", type_=String), bindparam("claim_user_id", type_=Integer)
    now, skip_reason = bindparam("claim_now", type_=UTCDateTime()), bindparam("claim_skip_reason", type_=String)
    target = (select(Lease.id, Lease.token, Lease.case_id, Lease.user_id, Lease.created_at, Lease.expires_at,
                     Lease.ended_at, Lease.end_reason).where(Lease.token == token).cte("target"))
    allowed = or_(target.c.user_id == user_id, bindparam("claim_admin", type_=Boolean))
    freed = (update(Case).where(Case.id == target.c.case_id, Case.lease_id == target.c.id,
                                Case.lease_expires_at > now, allowed)
             .values(lease_id=None, lease_expires_at=None).returning(Case.id, Case.project_id).cte("freed"))
    ended = (update(Lease).where(Lease.id == target.c.id, Lease.ended_at.is_(None), exists(select(freed.c.id)))
             .values(ended_at=now, end_reason=bindparam("claim_reason", type_=String), skip_reason=skip_reason)
             .returning(Lease.id, Lease.ended_at, Lease.end_reason).cte("ended"))
    detail = case((skip_reason.is_(None), func.json_build_object("lease_id", ended.c.id)),
                  else_=func.json_build_object("lease_id", ended.c.id, "reason", skip_reason))
    audited = insert(AuditEvent).from_select(
        ["at", "user_id", "action", "project_id", "case_id", "detail"],
        select(now, user_id, bindparam("claim_action", type_=String), freed.c.project_id, freed.c.id, detail)
        .select_from(freed.join(ended, true()))).cte("audited")
    return (select(target.c.token, target.c.case_id, target.c.user_id, target.c.created_at, target.c.expires_at,
                   target.c.ended_at, target.c.end_reason, ended.c.ended_at.label("ended"),
                   ended.c.end_reason.label("ended_reason"))
            .select_from(target.outerjoin(ended, true())).add_cte(audited))
