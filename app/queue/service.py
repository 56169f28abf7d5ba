"""The "annotate next" queue: rankings, claims and leases.

A lease is live while ``ended_at`` is unset, ``expires_at`` is in the future and the case still
points at it. Expiry is a comparison with the clock at claim time, so no sweeper is needed.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.campaign import draw
from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidRequest, LeaseExpired, NotFound
from app.models import Case, Lease, Project, Ranking, RankingEntry, User, utcnow
from app.projects import service as projects
from app.queue import repository as repo
from app.review import service as review


@dataclass(frozen=True)
class Claim:
    case: Case
    lease: Lease
    rank: int | None
    score: float | None
    ranking: Ranking
    tier: str = "ranked"  # returned: a reviewer sent the claimant's reading of this case back


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


def claim_next(session: Session, project: Project, user: User) -> Claim | None:
    """Lease the next case; the claim's number in the project's sequence decides whether it is a control claim.

    The project row is locked first, so claim numbers are handed out one at a time and without gaps (a
    claim that finds nothing gives its number back); case rows are locked after it, as before.
    """
    project = projects.lock_project(session, project.id)
    ranking = _current_ranking(session, project)
    now = utcnow()
    number = project.claim_count + 1
    readers = repo.ReaderRules(returned=review.returned_to(user.id, project.readers_per_case),
                               returned_at=review.returned_since(user.id), read_by=review.read_by(user.id))
    picked = repo.pick_next(session, project.id, ranking.id, now, user.id,
                            control=_control_draw(project, ranking, number), readers=readers)
    if picked is None:
        return None
    project.claim_count = number
    case, entry = picked.case, picked.entry
    # The lease starts when the case row is locked, not when the claim began: the pick may have waited for
    # the previous holder's release to commit, and a start before that release would overlap it on record.
    granted = utcnow()
    _end_stale_lease(session, case, granted)
    lease = _grant(session, case, user, ranking.id, granted, arm=_arm(picked.tier, ranking), claim_seq=number,
                   **_served_prediction(session, ranking, case.id))
    return Claim(case, lease, entry.rank if entry else None, entry.score if entry else None, ranking, picked.tier)


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


def _control_draw(project: Project, ranking: Ranking, number: int) -> Callable[[int], int] | None:
    """The control tier's position function for this claim, or None when the claim follows the ranking.

    A cold-start ranking is already a seeded random order with no model behind it: nothing to control for.
    """
    if ranking.kind == "cold_start" or not draw.is_control(project.control_seed, number, project.control_fraction):
        return None
    seed = project.control_seed
    return lambda open_cases: draw.control_position(seed, number, open_cases)


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


def end_lease(session: Session, token: str, user: User, reason: str, skip_reason: str | None = None) -> Lease:
    now = utcnow()
    lease, case = _live_lease(session, token, user, now)
    _close(lease, case, now, reason)
    lease.skip_reason = skip_reason
    audit.record(session, f"lease.{reason}", user_id=user.id, project_id=case.project_id, case_id=case.id,
                 lease_id=lease.id, **({"reason": skip_reason} if skip_reason else {}))
    return lease


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
