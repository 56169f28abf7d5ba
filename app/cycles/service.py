"""Starting, watching and cancelling retraining cycles (the worker does the work)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import get_settings
from app.core.errors import Conflict, DomainError, InvalidRequest, NotFound
from app.cycles.schemas import CycleCreate
from app.models import (
    ACTIVE_CYCLE_STATES,
    Case,
    CaseScore,
    Cycle,
    Lease,
    ModelVersion,
    Project,
    ScoreShard,
    User,
    WorkerHeartbeat,
    utcnow,
)

log = logging.getLogger("nextcase.cycles")
TRAINING_FIELDS = ("steps", "epochs", "learning_rate", "lr_schedule", "augment", "flip_axes", "val_every",
                   "batch_size", "patch_size", "mc_passes", "dropout", "dropout_position", "channels", "strides",
                   "samples_per_volume", "sw_overlap", "score_whole_volume_voxels", "score_precision",
                   "score_pass_batch", "query_size", "temperature", "temperature_decay", "seed")


class BrokerUnavailable(DomainError):
    status, type, title = 503, "broker-unavailable", "Task broker unavailable"


def validated_params(body: CycleCreate) -> dict[str, Any]:
    from worker.ml.params import TrainParams

    raw = body.model_dump(include=set(TRAINING_FIELDS), exclude_none=True)
    if isinstance(raw.get("patch_size"), int):
        raw["patch_size"] = [raw["patch_size"]] * 3
    try:
        return TrainParams.from_dict(raw).to_dict()
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc), field="params") from exc


def validate_strategy(name: str) -> None:
    from worker.ml.params import STRATEGY_NAMES

    if name not in STRATEGY_NAMES:
        raise InvalidRequest(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}", field="strategy")


def active_cycle(session: Session, project_id: int) -> Cycle | None:
    fail_stale(session, project_id=project_id)
    return session.scalar(select(Cycle).where(Cycle.project_id == project_id,
                                              Cycle.status.in_(ACTIVE_CYCLE_STATES)))


def create_cycle(session: Session, project: Project, body: CycleCreate, user: User) -> Cycle:
    params = validated_params(body)
    validate_strategy(body.strategy)
    running = active_cycle(session, project.id)
    if running is not None:
        raise Conflict(f"cycle {running.id} is already {running.status} for this project", field="project_id")
    cycle = Cycle(project_id=project.id, params=params, strategy=body.strategy, warm_start=body.warm_start,
                  created_by=user.id)
    session.add(cycle)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request won the race for the one active slot
        raise Conflict("another cycle is already queued or running for this project", field="project_id") from exc
    audit.record(session, "cycle.create", user_id=user.id, project_id=project.id, cycle_id=cycle.id,
                 strategy=body.strategy)
    return cycle


def start(session: Session, project: Project, body: CycleCreate, user: User) -> Cycle:
    """Create, commit, then enqueue; a broker failure marks the cycle failed so it frees the project's slot."""
    cycle = create_cycle(session, project, body, user)
    session.commit()  # enqueue after commit: the worker must find the row
    try:
        enqueue(cycle.id)
    except BrokerUnavailable:
        mark_failed(session, cycle.id, "the task broker was unreachable when the cycle was queued")
        session.commit()
        raise
    return cycle


def enqueue(cycle_id: int) -> None:
    """Send the task chain; called after the cycle row is committed (the worker must find it)."""
    from worker.tasks import cycle_chain

    try:
        cycle_chain(cycle_id).apply_async()
    except Exception as exc:
        log.exception("enqueue failed", extra={"cycle_id": cycle_id})
        raise BrokerUnavailable(f"could not reach the task broker: {type(exc).__name__}") from exc


def get_cycle(session: Session, cycle_id: int) -> Cycle:
    fail_stale(session, cycle_id=cycle_id)
    cycle = session.get(Cycle, cycle_id)
    if cycle is None:
        raise NotFound(f"cycle {cycle_id} does not exist", field="cycle_id")
    return cycle


def list_cycles(session: Session, project_id: int) -> list[Cycle]:
    fail_stale(session, project_id=project_id)
    return list(session.scalars(select(Cycle).where(Cycle.project_id == project_id).order_by(Cycle.id.desc())))


def cancel(session: Session, cycle: Cycle, user: User, force: bool = False) -> Cycle:
    """A queued cycle is cancelled at once; a running one at its next check (within seconds).

    ``force`` ends a running cycle now, without waiting for its worker: for a worker that hangs or
    is gone. A worker that still runs it sees the cancel at its next check and the next phase never starts.
    """
    if cycle.status not in ACTIVE_CYCLE_STATES:
        raise Conflict(f"cycle {cycle.id} is already {cycle.status}", field="cycle_id")
    cycle.cancel_requested = True
    if cycle.status == "queued":
        cycle.status, cycle.error, cycle.finished_at = "cancelled", "cancelled by an admin before it started", utcnow()
    elif force:
        cycle.status, cycle.finished_at = "cancelled", utcnow()
        cycle.error = f"force-cancelled by an admin during {cycle.phase}; the previous model and queue stay in service"
    audit.record(session, "cycle.cancel", user_id=user.id, project_id=cycle.project_id, cycle_id=cycle.id,
                 force=force)
    return cycle


# A shard sent to another worker this many times is not sent again: its cycle fails like one whose worker went
# silent (a case that kills every worker that scores it must not take them all down in turn). Likewise a cycle
# whose phases were taken over this many times.
MAX_SHARD_ATTEMPTS = 3
MAX_PHASE_TAKEOVERS = 2


def take_over_lost_work(session: Session, *, project_id: int | None = None, cycle_id: int | None = None) -> int:
    """Send again the work of workers that went silent mid-task (see the two functions it calls); how many tasks.

    Called wherever stale cycles are checked (API reads) and on every worker's heartbeat tick, so the surviving
    workers rescue a dead one's work. Not for the embedded worker: it is the API's own process. In a savepoint: if
    the broker refuses a task, nothing is marked as sent again, the caller (a GET, a worker's heartbeat) goes on,
    and the next check tries again.
    """
    if get_settings().embedded_worker:
        return 0
    try:
        with session.begin_nested():
            return (_take_over_lost_shards(session, project_id, cycle_id)
                    + _take_over_lost_phases(session, project_id, cycle_id))
    except Exception:
        log.warning("lost work not sent again: the broker or the database refused; the next check retries",
                    exc_info=True)
        return 0


def _silent_cycles(project_id: int | None, cycle_id: int | None) -> Any:
    cutoff = utcnow() - dt.timedelta(seconds=get_settings().cycle_heartbeat_timeout_s)
    query = select(Cycle).where(Cycle.status == "running", or_(
        Cycle.heartbeat_at < cutoff, and_(Cycle.heartbeat_at.is_(None), Cycle.started_at < cutoff)))
    if project_id is not None:
        query = query.where(Cycle.project_id == project_id)
    if cycle_id is not None:
        query = query.where(Cycle.id == cycle_id)
    return query


def _take_over_lost_phases(session: Session, project_id: int | None, cycle_id: int | None) -> int:
    """Send again, from its current phase on, each running cycle whose worker went silent mid-phase; how many.

    Train, evaluate, publish, or a score phase that had not made its shards yet: as for a shard, the message of a
    worker host lost whole would come back only after the visibility timeout. Every phase is safe to run again
    (training resumes from its last checkpoint); the old message, if it comes back, finds the cycle moved on. The
    takeovers are listed in the cycle's ``metrics.taken_over``; after ``MAX_PHASE_TAKEOVERS`` the cycle is left to
    :func:`fail_stale`.
    """
    from worker.tasks import cycle_chain

    moved: list[tuple[int, str]] = []
    for cycle in session.scalars(_silent_cycles(project_id, cycle_id).with_for_update(skip_locked=True)):
        taken = list(cycle.metrics.get("taken_over", []))
        if cycle.phase is None or cycle.phase in cycle.timings or len(taken) >= MAX_PHASE_TAKEOVERS:
            continue  # between phases the next task waits in the broker; no worker is missing
        if cycle.phase == "score" and session.scalar(select(func.count()).select_from(ScoreShard)
                                                     .where(ScoreShard.cycle_id == cycle.id)):
            continue  # its shards are taken over one by one
        taken.append({"phase": cycle.phase, "previous_worker": cycle.worker, "at": utcnow().isoformat()})
        cycle.metrics, cycle.heartbeat_at = {**cycle.metrics, "taken_over": taken}, utcnow()
        moved.append((cycle.id, cycle.phase))
        log.warning("cycle phase sent to another worker: its worker went silent",
                    extra={"cycle_id": cycle.id, "phase": cycle.phase, "previous_worker": cycle.worker})
    session.flush()
    for moved_id, phase in moved:
        cycle_chain(moved_id, phase).apply_async()
    return len(moved)


def _take_over_lost_shards(session: Session, project_id: int | None, cycle_id: int | None) -> int:
    """Send again the score shards whose worker stopped writing their heartbeat; how many were sent.

    A worker host lost whole (its main process too) leaves its shard's message unacknowledged in Redis until the
    visibility timeout (``NEXTCASE_TASK_VISIBILITY_TIMEOUT_S``, 12 h): without this the shard would hold up its
    cycle until the heartbeat bound failed it. The shard goes back to ``queued`` and a new task carries it to any
    worker; it scores only the cases without a score. If the old message comes back after all, it finds the shard
    done.
    """
    from worker.tasks import send_shard

    cutoff = utcnow() - dt.timedelta(seconds=get_settings().cycle_heartbeat_timeout_s)
    query = (select(ScoreShard).join(Cycle, Cycle.id == ScoreShard.cycle_id)
             .where(Cycle.status == "running", Cycle.phase == "score", ScoreShard.status == "running",
                    ScoreShard.attempts < MAX_SHARD_ATTEMPTS,
                    or_(ScoreShard.heartbeat_at < cutoff,
                        and_(ScoreShard.heartbeat_at.is_(None), ScoreShard.started_at < cutoff)))
             .with_for_update(of=ScoreShard, skip_locked=True))
    if project_id is not None:
        query = query.where(Cycle.project_id == project_id)
    if cycle_id is not None:
        query = query.where(Cycle.id == cycle_id)
    lost = list(session.scalars(query))
    for shard in lost:
        shard.status, shard.heartbeat_at = "queued", None
        session.execute(update(Cycle).where(Cycle.id == shard.cycle_id).values(heartbeat_at=utcnow()))
        log.warning("score shard sent to another worker: its worker went silent",
                    extra={"cycle_id": shard.cycle_id, "shard": shard.index, "previous_worker": shard.worker})
    session.flush()
    for shard in lost:
        send_shard(shard.cycle_id, shard.index)  # before commit is fine: the task waits for the shard's row lock
    return len(lost)


def fail_stale(session: Session, *, project_id: int | None = None, cycle_id: int | None = None) -> int:
    """Fail running cycles whose worker stopped writing its heartbeat (killed, host lost).

    Checked lazily whenever cycles are read or started: without it a dead worker's cycle stays
    ``running`` until the broker redelivers its task (the 12 h visibility timeout), and the
    project's one active-cycle slot stays taken. A cycle between phases (its last phase finished,
    the next still in the broker) has no worker to hear from and is left alone. With a broker of its own
    (not the embedded worker) the lost work is first sent to other workers (:func:`take_over_lost_work`);
    what is failed here is what was taken over too often.
    """
    take_over_lost_work(session, project_id=project_id, cycle_id=cycle_id)
    bound = get_settings().cycle_heartbeat_timeout_s
    stale = [c for c in session.scalars(_silent_cycles(project_id, cycle_id)) if c.phase is not None
             and c.phase not in c.timings and not _shards_waiting(session, c)]
    for cycle in stale:
        cycle.status, cycle.finished_at, cycle.cancel_requested = "failed", utcnow(), True
        cycle.error = (f"no heartbeat for over {bound:g} s from the worker running {cycle.phase} ({cycle.worker}): "
                       "it was killed or lost; the previous model and queue stay in service")
        log.warning("cycle failed: worker silent", extra={"cycle_id": cycle.id, "phase": cycle.phase})
    return len(stale)


def _shards_waiting(session: Session, cycle: Cycle) -> bool:
    """A sharded score phase with no shard running is waiting in the broker for free workers, not stalled; but
    not for ever: with no shard started or finished for NEXTCASE_SCORE_QUEUE_WAIT_S, its messages are lost."""
    if cycle.phase != "score" or cycle.heartbeat_at is None:
        return False
    if cycle.heartbeat_at < utcnow() - dt.timedelta(seconds=get_settings().score_queue_wait_s):
        return False
    shards = list(session.scalars(select(ScoreShard.status).where(ScoreShard.cycle_id == cycle.id)))
    return bool(shards) and "running" not in shards


def mark_failed(session: Session, cycle_id: int, reason: str) -> None:
    cycle = session.get(Cycle, cycle_id)
    if cycle is not None and cycle.status in ACTIVE_CYCLE_STATES:
        cycle.status, cycle.error, cycle.finished_at = "failed", reason, utcnow()


def fail_interrupted(session: Session) -> int:
    """At start-up of the embedded service: cycles that were running died with the old process."""
    stale = list(session.scalars(select(Cycle).where(Cycle.status == "running")))
    for cycle in stale:
        cycle.status, cycle.finished_at = "failed", utcnow()
        cycle.error = f"interrupted during {cycle.phase}: the service restarted; the previous model stays in service"
    return len(stale)


def list_models(session: Session, project_id: int) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id)
                                .order_by(ModelVersion.version.desc())))


def get_model(session: Session, model_id: int) -> ModelVersion:
    model = session.get(ModelVersion, model_id)
    if model is None:
        raise NotFound(f"model version {model_id} does not exist", field="model_id")
    return model


def leased_prediction(session: Session, case_id: int, user_id: int) -> str | None:
    """The prediction served with the user's live lease on the case: what their effort record compares with.

    A newer model may be published while they work; they keep the map they started from.
    """
    return session.scalar(
        select(Lease.prediction_key).join(Case, Case.lease_id == Lease.id)
        .where(Case.id == case_id, Lease.user_id == user_id, Lease.ended_at.is_(None), Lease.expires_at > utcnow(),
               Lease.prediction_key.is_not(None)))


def latest_case_output(session: Session, case_id: int, kind: str) -> str:
    """Blob key of the newest published prediction or uncertainty map for a case."""
    column = CaseScore.prediction_key if kind == "prediction" else CaseScore.uncertainty_key
    key = session.scalar(
        select(column).join(Cycle, Cycle.id == CaseScore.cycle_id)
        .where(CaseScore.case_id == case_id, Cycle.status == "done", column.is_not(None))
        .order_by(Cycle.id.desc()).limit(1)
    )
    if key is None:
        raise NotFound(f"case {case_id} has no {kind} yet: it is made when a cycle scores the case "
                       "(unlabelled pool cases)", field="case_id")
    return key


def operator_figures(session: Session) -> dict[str, dict[tuple[str, ...], float]]:
    """Figures for /metrics: cycles per project and status, the last finished cycle's phase durations per
    project, the last scoring rate of each worker, and each worker's last heartbeat (Unix seconds)."""
    cycles: dict[tuple[str, ...], float] = {}
    for project_id, status, count in session.execute(
            select(Cycle.project_id, Cycle.status, func.count()).group_by(Cycle.project_id, Cycle.status)):
        cycles[(str(project_id), status)] = float(count)
    phases: dict[tuple[str, ...], float] = {}
    rates: dict[tuple[str, ...], float] = {}
    finished = select(Cycle).where(Cycle.finished_at.is_not(None)).order_by(Cycle.finished_at.desc()).limit(200)
    for cycle in session.scalars(finished):
        for phase, seconds in cycle.timings.items():
            phases.setdefault((str(cycle.project_id), phase), float(seconds))
        rate, worker = cycle.progress.get("scored_per_s"), cycle.progress.get("score_worker")
        if rate is not None and worker:
            rates.setdefault((str(worker),), float(rate))
    beats: dict[tuple[str, ...], float] = {(row.name,): row.last_seen.replace(tzinfo=dt.UTC).timestamp()
             for row in session.scalars(select(WorkerHeartbeat))}
    return {"cycles": cycles, "phase_seconds": phases, "scoring_rate": rates, "heartbeats": beats}


def record_worker_heartbeat(session: Session, name: str) -> None:
    """Upsert a worker's heartbeat (one row per worker name)."""
    row = session.get(WorkerHeartbeat, name)
    if row is None:
        session.add(WorkerHeartbeat(name=name, last_seen=utcnow()))
    else:
        row.last_seen = utcnow()
