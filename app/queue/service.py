"""The "annotate next" queue: rankings, claims and leases.

A lease is live while ``ended_at`` is unset, ``expires_at`` is in the future and the case still
points at it. Expiry is a comparison with the clock at claim time, so no sweeper is needed.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NoReturn

import anyio.to_thread
from psycopg import AsyncConnection, AsyncCursor
from sqlalchemy import ClauseElement, Connection, Dialect, Engine, insert, literal, select, true, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.campaign import draw
from app.cases import service as cases
from app.cases.schemas import CasePublic
from app.core import db
from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidRequest, LeaseExpired, NotFound
from app.models import Case, Lease, Project, Ranking, RankingEntry, User, UTCDateTime, utcnow
from app.projects import service as projects
from app.queue import repository as repo
from app.queue.schemas import LeasePublic
from app.review import service as review
from app.review.schemas import ReviewNote


@dataclass(frozen=True)
class RankingRef:
    id: int
    kind: str
    strategy: str
    model_version_id: int | None


@dataclass(frozen=True)
class LeaseGrant:
    token: str
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class Claim:
    case: CasePublic
    lease: LeaseGrant
    rank: int | None
    score: float | None
    ranking: RankingRef
    tier: str  # returned (a reviewer sent the claimant's reading back) | pinned | control | ranked | unranked | skipped
    review: ReviewNote | None  # on a returned case: the review that sent it back


def lease_duration() -> dt.timedelta:
    return dt.timedelta(minutes=get_settings().lease_minutes)


# --- rankings ----------------------------------------------------------------------------------


def publish_ranking(
    session: Session,
    project_id: int,
    scores: Sequence[tuple[int, float]],
    *,
    kind: str,
    strategy: str,
    seed: int | None = None,
    model_version_id: int | None = None,
    order: Sequence[int] | None = None,
) -> Ranking:
    """Write a complete ranking and make it current in the same transaction (one atomic switch).

    ``scores`` are (case id, score) pairs; a higher score is annotated first, ties by case id, unless
    ``order`` (every scored case id once) gives the annotate-first order, as batch-aware strategies do.
    """
    ranking = Ranking(project_id=project_id, kind=kind, strategy=strategy, seed=seed,
                      model_version_id=model_version_id)
    session.add(ranking)
    session.flush()
    ordered = sorted(scores, key=lambda cs: (-cs[1], cs[0]))
    if order is not None:
        by_id = dict(scores)
        if sorted(order) != sorted(by_id):
            raise ValueError("a ranking order must name every scored case exactly once")
        ordered = [(cid, by_id[cid]) for cid in order]
    if ordered:
        session.execute(
            insert(RankingEntry),
            [{"ranking_id": ranking.id, "case_id": cid, "rank": i + 1, "score": float(s)}
             for i, (cid, s) in enumerate(ordered)],
        )
    projects.lock_claims(session, project_id)  # only now: claims wait for the switch, not for the whole ranking
    session.execute(update(Project).where(Project.id == project_id).values(current_ranking_id=ranking.id))
    return ranking


def publish_cold_start(session: Session, project_id: int, seed: int | None = None) -> Ranking:
    """A seeded random order, recorded like any ranking so it can be reproduced."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    case_ids = repo.rankable_case_ids(session, project_id)
    order = list(case_ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    return publish_ranking(session, project_id, [(cid, float(n - i)) for i, cid in enumerate(order)],
                           kind="cold_start", strategy="random", seed=seed)


def current_ranking(session: Session, project: Project) -> Ranking | None:
    """The ranking claims follow now, without publishing one (None before the first claim)."""
    return repo.get_ranking(session, project.current_ranking_id)


def _current_ranking(session: Session, project: Project) -> Ranking:
    """The ranking a claim follows; before any model exists, a cold-start one covering every case."""
    current = repo.get_ranking(session, project.current_ranking_id)
    if current is None:
        return publish_cold_start(session, project.id)
    if current.kind == "cold_start" and repo.pool_cases_added_since(session, project.id, current.created_at):
        return publish_cold_start(session, project.id)
    return current


# --- claims and leases -------------------------------------------------------------------------


def claim_next(session: Session, project_id: int, user: User) -> Claim | None:
    """Lease the next case to ``user`` (None: no case is left for them); the claim's number in the project's sequence
    decides whether it is a control claim.

    Claims are numbered one at a time and without gaps (a claim that finds nothing gives its number back); case
    rows are locked after the number is drawn. On PostgreSQL the claim is one statement
    (``repository.claim_statement``): in a session that has not started a transaction it runs on its own in
    autocommit, a transaction of one round trip; inside a transaction (MONAI Label's Next Sample, which ends a lease
    first) it is a statement of that transaction. SQLite runs ``_claim_serialised``. A request's claim is
    ``claim_next_async``.
    """
    if session.get_bind().dialect.name != "postgresql":
        return _claim_serialised(session, project_id, user)
    if session.in_transaction():
        return _claim_in_transaction(session, project_id, user)
    row = _claim_statement(session, project_id, user, autocommit=True)
    if row.outcome == "draw":  # the draws sent missed the claim's number: again with the number it read
        row = _claim_statement(session, project_id, user, autocommit=True)
    claim = _claim_of(row, _returned_note(session, row, user)) if row.outcome == "go" else None
    session.commit()  # nothing left to commit (each statement was its own transaction): the connection goes back now
    return claim if row.outcome == "go" else _claim_in_own_transaction(project_id, user, session.get_bind())


async def claim_next_async(project_id: int, user: User) -> Claim | None:
    """``claim_next`` for a request, on the event loop.

    On PostgreSQL the claim statement runs on a connection of the loop's own pool (``db.async_pool``), in
    autocommit: no worker thread and no ORM session. Only a claim that needs a transaction (a ranking to publish
    first, draws that missed the claim's number twice) or the review note of a returned case goes to a worker
    thread. SQLite claims in a worker thread, in a session of their own.
    """
    if get_settings().is_sqlite:
        return await anyio.to_thread.run_sync(_claim_in_own_session, project_id, user)
    async with db.async_connection() as conn:
        row = await _claim_statement_async(conn, project_id, user)
        if row.outcome == "draw":
            row = await _claim_statement_async(conn, project_id, user)
    if row.outcome != "go":
        return await anyio.to_thread.run_sync(_claim_in_own_transaction, project_id, user)
    if _tier(row) == "returned":
        return _claim_of(row, await anyio.to_thread.run_sync(_review_note_of, row, user))
    return _claim_of(row)


def _claim_in_own_session(project_id: int, user: User) -> Claim | None:
    with db.session_scope() as session:
        return claim_next(session, project_id, user)


def _claim_in_own_transaction(project_id: int, user: User, bind: Engine | Connection | None = None) -> Claim | None:
    """Rare: a ranking to publish first (the first claim, or cases added to a cold-start project), or claims of other
    API processes moving the number on between two tries. A transaction of its own holds the project meanwhile."""
    with Session(bind or db.get_engine(), expire_on_commit=False) as own, own.begin():
        return _claim_in_transaction(own, project_id, user)


def _review_note_of(row: Any, user: User) -> ReviewNote | None:
    with db.new_session() as session:
        return _returned_note(session, row, user)


def _claim_in_transaction(session: Session, project_id: int, user: User) -> Claim | None:
    """The claim statement inside ``session``'s transaction: after its first run the project's claim lock and row
    lock are held to the end, so the ranking it publishes or the draws for the number it read are still right when it
    runs again."""
    published = None
    for _ in range(3):
        row = _claim_statement(session, project_id, user, published)
        if row.outcome == "ranking":
            published = publish_cold_start(session, project_id).id
        elif row.outcome == "go":
            return _claim_of(row, _returned_note(session, row, user))
    raise RuntimeError(f"project {project_id}: the claim did not settle under the project's locks")


# The control draws sent with a claim: for the claim numbers from the one after this API process's last claim of the
# project, with the seed and the need it saw then. Another process's claims move the number on: this many ahead
# still cover it, and past them the statement asks for the draws of the number it read (outcome "draw").
DRAWS_AHEAD = 16
_HINTS: dict[int, tuple[int, int, bool]] = {}  # project id -> (control seed, next claim number, control possible)


@functools.lru_cache(maxsize=4096)
def _draws(seed: int, number: int) -> tuple[float, float]:
    return draw.uniform(seed, number, "arm"), draw.uniform(seed, number, "case")


def _execute(session: Session, statement: ClauseElement, params: dict[str, Any], *, alone: bool) -> Any | None:
    """One statement: in autocommit, a transaction of its own, when ``alone`` and the session has not begun one;
    else in the session's transaction, after what the transaction changed so far (it runs on the connection).

    Its row (None: no row), with attribute access. Timestamps go in and come out as UTC, as ``UTCDateTime`` does.
    """
    session.flush()
    if alone and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    conn = session.connection()
    sql, constants = _compiled(statement, conn.dialect)
    row = conn.exec_driver_sql(sql, _values(constants, params)).one_or_none()
    return None if row is None else _row_of(row._mapping.items())


async def _execute_async(conn: AsyncConnection[Any], statement: ClauseElement, params: dict[str, Any]) -> Any | None:
    """``_execute`` on a connection of ``db.async_pool`` (in autocommit: a transaction of its own)."""
    sql, constants = _compiled(statement, db.get_engine().dialect)
    cursor = await conn.execute(sql, _values(constants, params))
    row = await cursor.fetchone()
    return None if row is None else _row_of(zip(_column_names(sql, cursor), row, strict=True))


def _values(constants: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {**constants, **{name: _naive_utc(value) for name, value in params.items()}}


def _row_of(items: Iterable[tuple[Any, Any]]) -> SimpleNamespace:
    return SimpleNamespace(**{name: _aware_utc(value) for name, value in items})


_COLUMN_NAMES: dict[str, list[str]] = {}


def _column_names(sql: str, cursor: AsyncCursor[Any]) -> list[str]:
    """The names of a statement's result columns, read once (psycopg builds a description object per column)."""
    names = _COLUMN_NAMES.get(sql)
    if names is None:
        names = _COLUMN_NAMES[sql] = [column.name for column in cursor.description or ()]
    return names


@functools.cache
def _compiled(statement: ClauseElement, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The statement compiled once, and the values of the parameters it holds itself (its constants).

    Run with ``exec_driver_sql``: through ``Connection.execute`` SQLAlchemy finds the compiled form by the statement's
    cache key (hashing the key of a 15 KiB statement) and builds its 57 parameters each time: 0.4 ms of a claim.
    """
    compiled = statement.compile(dialect=dialect)
    return compiled.string, dict(compiled.params)  # the caller's values replace its unset ones


def _naive_utc(value: Any) -> Any:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(value, dt.datetime) else value


def _aware_utc(value: Any) -> Any:
    return value.replace(tzinfo=dt.UTC) if isinstance(value, dt.datetime) else value


def _claim_statement(session: Session, project_id: int, user: User, published: int | None = None, *,
                     autocommit: bool = False) -> Any:
    row = _execute(session, repo.claim_statement(), _claim_params(project_id, user, published), alone=autocommit)
    return _noted(project_id, row)


async def _claim_statement_async(conn: AsyncConnection[Any], project_id: int, user: User) -> Any:
    return _noted(project_id, await _execute_async(conn, repo.claim_statement(), _claim_params(project_id, user)))


def _claim_params(project_id: int, user: User, published: int | None = None) -> dict[str, Any]:
    """The claim statement's parameters, with the control draws for the claim numbers this process expects next."""
    seed, base, possible = _HINTS.get(project_id, (0, 0, False))
    window = [_draws(seed, n) for n in range(base, base + DRAWS_AHEAD)] if possible else []
    return {
        "claim_project_id": project_id, "claim_user_id": user.id, "claim_now": utcnow(), "claim_seed": seed,
        "claim_base": base, "claim_arm_u": [arm for arm, _ in window], "claim_case_u": [pos for _, pos in window],
        "claim_token": secrets.token_urlsafe(24), "claim_lease_duration": lease_duration(),
        "claim_published": published,
    }


def _noted(project_id: int, row: Any | None) -> Any:
    """The claim statement's row, after noting the claim number and draws it saw for the next claim."""
    if row is None:
        raise NotFound(f"project {project_id} does not exist", field="project_id")
    if row.outcome == "go":
        _HINTS[project_id] = (row.seed, row.n + (row.tier is not None), bool(row.draws))
    elif row.outcome == "draw":
        _HINTS[project_id] = (row.seed, row.n, True)
    return row


def _tier(row: Any) -> str | None:
    return None if row.tier is None else repo.CLAIM_TIERS[row.tier - 1]


def _returned_note(session: Session, row: Any, user: User) -> ReviewNote | None:
    """On a case a reviewer sent back to the claimant: the review that did."""
    return review.returned_note(session, row.id, user.id, row.readers) if _tier(row) == "returned" else None


def _claim_of(row: Any, note: ReviewNote | None = None) -> Claim | None:
    tier = _tier(row)
    if tier is None:
        return None
    return Claim(
        case=cases.public_view(row, row.pseudonym, row.latest_label_version),
        lease=LeaseGrant(row.token, row.lease_created_at, row.lease_expires_at), rank=row.rank, score=row.score,
        ranking=RankingRef(row.ranking_id, row.kind, row.strategy, row.model_version_id), tier=tier, review=note)


def _claim_serialised(session: Session, project_id: int, user: User) -> Claim | None:
    """SQLite: the same choice of case (``repository.queue_tiers``), then the writes, in a transaction that holds the
    database's write lock from its start (BEGIN IMMEDIATE), so claims run one at a time."""
    project = projects.lock_project(session, project_id)
    ranking = _current_ranking(session, project)
    now = utcnow()
    number = project.claim_count + 1
    # A cold-start ranking is already a seeded random order with no model behind it: nothing to control for.
    control = ranking.kind != "cold_start" and draw.is_control(project.control_seed, number, project.control_fraction)
    picked = repo.pick_serialised(session, repo.ClaimInputs(
        literal(project.id), literal(user.id), literal(now, UTCDateTime()), literal(ranking.id),
        project.readers_per_case, true() if control else None,
        literal(draw.uniform(project.control_seed, number, "case")) if control else None))
    if picked is None:
        return None
    case_id, tier = picked
    project.claim_count = number
    case = session.get(Case, case_id)
    assert case is not None
    granted = utcnow()  # the lease starts once the case is chosen, as on PostgreSQL
    _end_stale_lease(session, case, granted)
    lease = _grant(session, case, user, ranking.id, granted, arm=_arm(tier, ranking), claim_seq=number,
                   **_served_prediction(session, ranking, case.id))
    entry = session.get(RankingEntry, (ranking.id, case.id))
    note = review.returned_note(session, case.id, user.id, project.readers_per_case) if tier == "returned" else None
    return Claim(
        case=cases.to_public(session, [case])[0], lease=LeaseGrant(lease.token, lease.created_at, lease.expires_at),
        rank=entry.rank if entry else None, score=entry.score if entry else None,
        ranking=RankingRef(ranking.id, ranking.kind, ranking.strategy, ranking.model_version_id), tier=tier,
        review=note)


def lease_case(session: Session, case: Case, user: User) -> Lease | None:
    """Lease one given case to ``user`` (a volume they just uploaded to annotate) if it is open.

    Returns the user's live lease on it, or None when the case is not open (labelled, not in the
    pool, excluded) or someone else holds it: then the user labels it without a lease, as anyone may.
    """
    now = utcnow()
    locked = session.get(Case, case.id, with_for_update={"key_share": True}, populate_existing=True)
    if locked is None or locked.status != "unlabelled" or locked.split != "pool" or locked.excluded:
        return None
    if locked.lease_id is not None and locked.lease_expires_at is not None and locked.lease_expires_at > now:
        held = session.get(Lease, locked.lease_id)
        return held if held is not None and held.user_id == user.id and held.ended_at is None else None
    _end_stale_lease(session, locked, now)
    return _grant(session, locked, user, None, now, arm="uploaded")  # not a queue draw: its own arm


def _grant(
    session: Session, case: Case, user: User, ranking_id: int | None, now: dt.datetime, **telemetry: Any
) -> Lease:
    """Write a new lease on a case the caller has locked and found open (``telemetry``: arm, served model)."""
    lease = Lease(
        token=secrets.token_urlsafe(24), case_id=case.id, user_id=user.id,
        ranking_id=ranking_id, created_at=now, expires_at=now + lease_duration(), **telemetry,
    )
    session.add(lease)
    session.flush()
    case.lease_id, case.lease_expires_at = lease.id, lease.expires_at
    audit.record(session, "lease.claim", user_id=user.id, project_id=case.project_id, case_id=case.id,
                 lease_id=lease.id)
    return lease


def _arm(tier: str, ranking: Ranking) -> str:
    if tier == "ranked" and ranking.kind == "cold_start":
        return "cold_start"
    return tier


def _served_prediction(session: Session, ranking: Ranking, case_id: int) -> dict[str, Any]:
    """The model version in service and the label map of this case it predicted (None before any model)."""
    if ranking.model_version_id is None:
        return {"model_version_id": None, "prediction_key": None}
    return {"model_version_id": ranking.model_version_id,
            "prediction_key": repo.prediction_key(session, ranking.model_version_id, case_id)}


def _end_stale_lease(session: Session, case: Case, now: dt.datetime) -> None:
    if case.lease_id is None:
        return
    old = session.get(Lease, case.lease_id)
    if old is not None and old.ended_at is None:
        old.ended_at, old.end_reason = min(old.expires_at, now), "expired"


def _live_lease(session: Session, token: str, user: User, now: dt.datetime) -> tuple[Lease, Case]:
    lease = repo.lease_by_token(session, token)
    if lease is None:
        raise NotFound("no lease with this token", field="token")
    if lease.user_id != user.id and user.role != "admin":
        raise Forbidden("this lease belongs to another annotator", field="token")
    # Lock order everywhere is case row, then lease row (claims and label uploads lock the case first);
    # taking the lease first here deadlocked against a claim ending the same expired lease.
    case = session.get(Case, lease.case_id, with_for_update={"key_share": True}, populate_existing=True)
    assert case is not None
    session.refresh(lease, with_for_update={"key_share": True})
    if lease.ended_at is not None:
        raise LeaseExpired(f"the lease ended ({lease.end_reason}) at {lease.ended_at.isoformat()}", field="token")
    if lease.expires_at <= now or case.lease_id != lease.id:
        raise LeaseExpired(f"the lease expired at {lease.expires_at.isoformat()}", field="token")
    return lease, case


def renew(session: Session, token: str, user: User) -> Lease:
    now = utcnow()
    lease, case = _live_lease(session, token, user, now)
    lease.expires_at = case.lease_expires_at = now + lease_duration()
    return lease


def end_lease(session: Session, token: str, user: User, reason: str, skip_reason: str | None = None) -> LeasePublic:
    """End the caller's live lease (released, skipped: an admin may end anyone's), with its audit record.

    PostgreSQL: one statement (``repository.end_lease_statement``), on its own in a fresh session as a claim is.
    """
    now = utcnow()
    if session.get_bind().dialect.name != "postgresql":
        lease, case = _live_lease(session, token, user, now)
        _close(lease, case, now, reason)
        lease.skip_reason = skip_reason
        audit.record(session, f"lease.{reason}", user_id=user.id, project_id=case.project_id, case_id=case.id,
                     lease_id=lease.id, **({"reason": skip_reason} if skip_reason else {}))
        return lease_public(lease)
    alone = not session.in_transaction()
    row = _execute(session, repo.end_lease_statement(), _end_lease_params(token, user, reason, skip_reason, now),
                   alone=alone)
    ended = _ended(row, user)
    if ended is None:
        _why_not_ended(session, token)
    if alone:
        session.commit()  # nothing left to commit: the connection goes back now
    return ended


async def end_lease_async(token: str, user: User, reason: str, skip_reason: str | None = None) -> LeasePublic:
    """``end_lease`` for a request, on the event loop: on PostgreSQL one statement on a connection of the loop's own
    pool (as ``claim_next_async``); SQLite in a worker thread, in a session of its own."""
    if get_settings().is_sqlite:
        return await anyio.to_thread.run_sync(_end_lease_in_own_session, token, user, reason, skip_reason)
    async with db.async_connection() as conn:
        row = await _execute_async(conn, repo.end_lease_statement(),
                                   _end_lease_params(token, user, reason, skip_reason, utcnow()))
    ended = _ended(row, user)
    if ended is None:
        await anyio.to_thread.run_sync(_why_not_ended_in_own_session, token)
    return ended


def _end_lease_params(token: str, user: User, reason: str, skip_reason: str | None,
                      now: dt.datetime) -> dict[str, Any]:
    return {"claim_token": token, "claim_user_id": user.id, "claim_admin": user.role == "admin", "claim_now": now,
            "claim_reason": reason, "claim_skip_reason": skip_reason, "claim_action": f"lease.{reason}"}


def _ended(row: Any | None, user: User) -> LeasePublic | None:
    """The lease the end-lease statement ended; None when the caller's lease did not end (``_why_not_ended`` says
    why). No such lease and someone else's raise here."""
    if row is None:
        raise NotFound("no lease with this token", field="token")
    if row.user_id != user.id and user.role != "admin":
        raise Forbidden("this lease belongs to another annotator", field="token")
    if row.ended is None:
        return None
    return LeasePublic(token=row.token, case_id=row.case_id, user_id=row.user_id, created_at=row.created_at,
                       expires_at=row.expires_at, ended_at=row.ended, end_reason=row.ended_reason)


def _why_not_ended(session: Session, token: str) -> NoReturn:
    """Nothing was written: read the lease again (it may have ended after the statement began) and say why."""
    again = session.scalar(select(Lease).where(Lease.token == token).execution_options(populate_existing=True))
    assert again is not None
    if again.ended_at is not None:
        raise LeaseExpired(f"the lease ended ({again.end_reason}) at {again.ended_at.isoformat()}", field="token")
    raise LeaseExpired(f"the lease expired at {again.expires_at.isoformat()}", field="token")


def _why_not_ended_in_own_session(token: str) -> NoReturn:
    with db.new_session() as session:
        _why_not_ended(session, token)


def _end_lease_in_own_session(token: str, user: User, reason: str, skip_reason: str | None) -> LeasePublic:
    with db.session_scope() as session:
        return end_lease(session, token, user, reason, skip_reason)


def lease_public(lease: Lease) -> LeasePublic:
    return LeasePublic(token=lease.token, case_id=lease.case_id, user_id=lease.user_id, created_at=lease.created_at,
                       expires_at=lease.expires_at, ended_at=lease.ended_at, end_reason=lease.end_reason)


def _close(lease: Lease, case: Case, now: dt.datetime, reason: str) -> None:
    lease.ended_at, lease.end_reason = now, reason
    case.lease_id, case.lease_expires_at = None, None


def check_and_end_lease(session: Session, case: Case, user: User) -> Lease | None:
    """Called under the case row lock when a label is uploaded: refuse a foreign live lease, end any lease.

    Returns the live lease this upload completed (ended as "labelled"), or None.
    """
    if case.lease_id is None:
        return None
    now = utcnow()
    lease = session.get(Lease, case.lease_id)
    assert lease is not None
    live = lease.ended_at is None and lease.expires_at > now
    if live and lease.user_id != user.id and user.role != "admin":
        holder = session.get(User, lease.user_id)
        raise Conflict(
            f"case {case.id} is leased by {holder.name if holder else lease.user_id} until "
            f"{lease.expires_at.isoformat()}", field="case_id")
    if lease.ended_at is None:
        _close(lease, case, now if live else min(now, lease.expires_at), "labelled" if live else "expired")
        return lease if live else None
    case.lease_id, case.lease_expires_at = None, None
    return None


def live_leases(session: Session, project_id: int, user_id: int) -> list[tuple[Lease, Case]]:
    """The user's live leases in a project, newest first."""
    now = utcnow()
    rows = session.execute(
        select(Lease, Case).join(Case, Case.lease_id == Lease.id)
        .where(Case.project_id == project_id, Lease.user_id == user_id, Lease.ended_at.is_(None),
               Lease.expires_at > now)
        .order_by(Lease.id.desc())
    )
    return [(lease, case) for lease, case in rows]


def touch(session: Session, case: Case, user: User) -> None:
    """Extend the user's live lease on a case: clients without a heartbeat keep it by using the case."""
    if case.lease_id is None or case.lease_expires_at is None or case.lease_expires_at <= utcnow():
        return
    # Re-read under the row lock: a release or label upload may have ended the lease meanwhile.
    locked = session.get(Case, case.id, with_for_update={"key_share": True}, populate_existing=True)
    if locked is None or locked.lease_id is None or locked.lease_expires_at is None:
        return
    lease = session.get(Lease, locked.lease_id)
    now = utcnow()
    if lease is not None and lease.user_id == user.id and lease.ended_at is None and lease.expires_at > now:
        lease.expires_at = locked.lease_expires_at = now + lease_duration()


def set_queue_flags(session: Session, case: Case, user: User, *, pinned: bool | None, excluded: bool | None) -> None:
    actions = {"pinned": ("queue.pin", "queue.unpin"), "excluded": ("queue.exclude", "queue.include")}
    for name, value in (("pinned", pinned), ("excluded", excluded)):
        if value is not None and getattr(case, name) != value:
            setattr(case, name, value)
            audit.record(session, actions[name][0 if value else 1], user_id=user.id, project_id=case.project_id,
                         case_id=case.id)


def require_reason(reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise InvalidRequest("a skip needs a reason", field="reason")
    return reason.strip()


def pool_counts(session: Session, project_id: int) -> dict[str, int]:
    """Pool cases of a project by queue state: open, leased, labelled, excluded."""
    return repo.count_pool(session, project_id, utcnow())
