"""The phases of a retraining cycle, as plain functions of a cycle id.

Each phase re-reads what it needs from the database, runs the ML code in ``worker.ml`` (which
knows nothing of the service), and records progress and outcome in the ``cycles`` row in short
transactions. Nothing becomes visible to annotators until ``publish``, which writes the model
version and the complete ranking in one transaction: a failed or cancelled cycle leaves the
previous model and queue in service.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from app.core import db
from app.core.config import get_settings
from app.core.storage import BlobStore, get_blob_store
from app.models import Case, CaseScore, Cycle, ModelVersion, Project, ScoreShard, utcnow
from app.queue.service import publish_ranking
from app.review import service as review
from worker.data import encode_map_on_case_grid, encode_on_case_grid, load_array
from worker.ml.cancel import Cancelled

log = logging.getLogger("nextcase.worker")
PHASES = ("train", "evaluate", "score", "publish")
CANCEL_CHECK_S = 2.0


class CycleCancelled(Exception):
    pass


class CycleError(Exception):
    """A problem with the cycle's inputs, reported to the admin as is."""


# --- state -------------------------------------------------------------------------------------


def run_phase(cycle_id: int, phase: str, store: BlobStore | None = None) -> None:
    """Run one phase of a cycle and record its outcome; never raises for a cycle-level failure."""
    store = store or get_blob_store()
    if phase == "publish" and _unfinished_shards(cycle_id):
        # Publish sent while shards still run (a score task delivered again after its shards were sent): the shard
        # that finishes last sends publish again.
        log.warning("publish waits: score shards still running", extra={"cycle_id": cycle_id})
        return
    if not _enter(cycle_id, phase):
        return
    started = time.perf_counter()
    try:
        with _heartbeat(cycle_id):
            PHASE_FUNCTIONS[phase](cycle_id, store)
    except (CycleCancelled, Cancelled):
        _finish(cycle_id, "cancelled", f"cancelled by an admin during {phase}")
        log.info("cycle cancelled", extra={"cycle_id": cycle_id, "phase": phase})
        return
    except Exception as exc:
        detail = str(exc) if isinstance(exc, CycleError) else f"{type(exc).__name__}: {exc}"
        _finish(cycle_id, "failed", f"{phase} failed: {detail}")
        log.exception("cycle failed", extra={"cycle_id": cycle_id, "phase": phase})
        return
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        cycle.timings = {**cycle.timings, phase: round(time.perf_counter() - started, 3)}


@contextmanager
def _heartbeat(cycle_id: int, shard: int | None = None) -> Iterator[None]:
    """Write the cycle's heartbeat (and the shard's, when one is scored) from a thread while a phase runs.

    The API fails a running cycle whose heartbeat is older than NEXTCASE_CYCLE_HEARTBEAT_TIMEOUT_S,
    so a killed worker frees its project long before the broker would redeliver the task; a shard whose
    heartbeat is that old is sent to another worker instead (``app.cycles.service.take_over_lost_work``).
    A thread, not the progress callbacks: one epoch or one scored case can take longer than the bound.
    """
    stop = threading.Event()
    interval = get_settings().cycle_heartbeat_interval_s

    def beat() -> None:
        while not stop.wait(interval):
            try:
                _beat(cycle_id, shard)
            except Exception:  # a missed beat is retried; it must not kill the phase
                log.warning("cycle heartbeat not written", extra={"cycle_id": cycle_id}, exc_info=True)

    thread = threading.Thread(target=beat, name=f"cycle-{cycle_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 60)


def _beat(cycle_id: int, shard: int | None) -> None:
    with db.session_scope() as session:
        now = utcnow()
        session.execute(update(Cycle).where(Cycle.id == cycle_id, Cycle.status == "running").values(heartbeat_at=now))
        if shard is not None:
            session.execute(update(ScoreShard).where(ScoreShard.cycle_id == cycle_id, ScoreShard.index == shard,
                                                     ScoreShard.status == "running").values(heartbeat_at=now))


def _get(session: Any, cycle_id: int) -> Cycle:
    cycle = session.get(Cycle, cycle_id)
    if cycle is None:
        raise CycleError(f"cycle {cycle_id} does not exist")
    return cycle


def _enter(cycle_id: int, phase: str) -> bool:
    """Mark the phase started; False when the cycle must not run it (finished, cancelled, out of order).

    A phase delivered again after it had started (its worker process was killed, and Celery requeued the
    unacknowledged message) runs again: every phase is safe to repeat. Training resumes from its last
    checkpoint, scoring scores only the cases that have no score yet, publish is one transaction.
    """
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        if cycle is None or cycle.status not in ("queued", "running"):
            return False
        if cycle.cancel_requested:
            _mark_finished(cycle, "cancelled", f"cancelled by an admin before {phase}")
            return False
        if cycle.phase == phase:
            log.warning("phase delivered again: its previous worker stopped; running it again",
                        extra={"cycle_id": cycle_id, "phase": phase, "previous_worker": cycle.worker})
            redelivered = [*cycle.metrics.get("redelivered", []), {"phase": phase, "previous_worker": cycle.worker}]
            cycle.metrics = {**cycle.metrics, "redelivered": redelivered}
        elif cycle.phase is not None and PHASES.index(phase) != PHASES.index(cycle.phase) + 1:
            return False
        if cycle.status == "queued":
            cycle.status, cycle.started_at = "running", utcnow()
        cycle.phase, cycle.worker = phase, _worker_name()
        cycle.heartbeat_at = utcnow()
        return True


def _unfinished_shards(cycle_id: int) -> int:
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        if cycle is None or cycle.status != "running":
            return 0
        return int(session.scalar(select(func.count()).select_from(ScoreShard).where(
            ScoreShard.cycle_id == cycle_id, ScoreShard.status.in_(("queued", "running")))) or 0)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _mark_finished(cycle: Cycle, status: str, error: str | None) -> None:
    cycle.status, cycle.error, cycle.finished_at = status, error, utcnow()


def _finish(cycle_id: int, status: str, error: str | None) -> None:
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        if cycle.status in ("queued", "running"):
            _mark_finished(cycle, status, error)


def _progress(cycle_id: int, **values: Any) -> bool:
    """Record progress; returns whether an admin asked to cancel."""
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        cycle.progress = {**cycle.progress, **values}
        return bool(cycle.cancel_requested)


def _cancel_checker(cycle_id: int) -> Callable[[], bool]:
    """A ``should_stop`` for the ML loops: reads the cancel flag at most every CANCEL_CHECK_S seconds.

    The loops poll it at every training step and every sliding window, so a cancel acts within about
    CANCEL_CHECK_S plus one window, while the database sees one small query per interval.
    """
    last = [0.0]

    def should_stop() -> bool:
        if time.monotonic() - last[0] < CANCEL_CHECK_S:
            return False
        last[0] = time.monotonic()
        with db.session_scope() as session:
            return bool(_get(session, cycle_id).cancel_requested)

    return should_stop


# --- inputs ------------------------------------------------------------------------------------


def _context(cycle_id: int) -> tuple[Cycle, Project]:
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        project = session.get(Project, cycle.project_id)
        assert project is not None
        return cycle, project


def _labelled(session: Any, store: BlobStore, project: Project, split: str) -> list[tuple[Case, str]]:
    """(case, label blob key) per case of the split whose label counts (project settings train_on, readers_per_case).

    The review domain decides: the newest counted version, or the consensus of several readers (stored now if
    a settings change left it missing).
    """
    return review.training_labels(session, store, project, split)


def _arrays(store: BlobStore, pairs: list[tuple[Case, str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [load_array(store, case.blob_key).astype(np.float32) for case, _ in pairs]
    labels = [load_array(store, key).astype(np.int64) for _, key in pairs]
    return images, labels


def _params(cycle: Cycle) -> Any:
    from worker.ml.params import TrainParams

    return TrainParams.from_dict(cycle.params)


# --- phases ------------------------------------------------------------------------------------


def train(cycle_id: int, store: BlobStore) -> None:
    from worker.ml.checkpoint import save_model
    from worker.ml.train import TrainingCancelled, train_model

    cycle, project = _context(cycle_id)
    params = _params(cycle)
    with db.session_scope() as session:
        pairs = _labelled(session, store, project, "pool")
        validation = _labelled(session, store, project, "validation")
        init_state = _warm_start_state(session, store, project.id) if cycle.warm_start else None
    if not pairs:
        raise CycleError("no labelled case in the pool split: label at least one case before training")
    images, labels = _arrays(store, pairs)
    val_images, val_labels = _arrays(store, validation)
    steps = params.steps_for(len(pairs))
    inputs = _inputs_digest(pairs, validation)
    resume = _resume_point(store, cycle, inputs)
    _progress(cycle_id, step=resume.step if resume else 0, steps=steps, loss=None, train_cases=len(pairs))

    def on_step(step: int, loss: float) -> None:
        _progress(cycle_id, step=step, loss=round(loss, 5))

    try:
        # The checkpoint kept is the one with the best validation Dice (the last one without validation cases).
        result = train_model(images, labels, len(project.labels), project.modality, params, init_state=init_state,
                             progress=on_step, should_stop=_cancel_checker(cycle_id), val_images=val_images,
                             val_labels=val_labels, resume=resume,
                             checkpoint=_checkpoint_saver(cycle_id, store, inputs),
                             checkpoint_every_s=get_settings().train_checkpoint_every_s)
    except TrainingCancelled as exc:
        raise CycleCancelled from exc
    if result.resumed_from:
        _store_metrics(cycle_id, {"train_resumed_from": result.resumed_from,
                                  "train_steps_after_resume": result.steps - result.resumed_from})
    with tempfile.TemporaryDirectory(prefix="nextcase-model-") as tmp:
        path = Path(tmp) / "model.pt"
        save_model(path, result.state_dict, len(project.labels), project.modality, params)
        blob = store.put(path.read_bytes(), "pt")
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        cycle.weights_key, cycle.trained_case_ids = blob.key, [case.id for case, _ in pairs]
        checkpoint, cycle.checkpoint_key = cycle.checkpoint_key, None
    if checkpoint is not None:
        store.delete(checkpoint)
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        cycle.metrics = {**cycle.metrics, "train_loss": result.epoch_losses[-1] if result.epoch_losses else None,
                         "train_steps": result.steps, "kept_step": result.best_step,
                         "validation_history": result.validation}


def _inputs_digest(pairs: list[tuple[Case, str]], validation: list[tuple[Case, str]]) -> str:
    """What a checkpoint was trained on: the training and validation cases and their label versions."""
    text = json.dumps([[(case.id, key) for case, key in pairs], [(case.id, key) for case, key in validation]])
    return hashlib.sha256(text.encode()).hexdigest()


def _resume_point(store: BlobStore, cycle: Cycle, inputs: str) -> Any:
    """The checkpoint a redelivered train phase continues from, if it was made on the same inputs."""
    from worker.ml.train import TrainCheckpoint

    if cycle.checkpoint_key is None:
        return None
    if cycle.progress.get("checkpoint_inputs") != inputs:
        log.warning("training starts over: the labelled cases changed since the checkpoint",
                    extra={"cycle_id": cycle.id})
        return None
    try:
        checkpoint = TrainCheckpoint.from_bytes(store.read(cycle.checkpoint_key))
    except Exception:  # a missing or torn checkpoint: starting over loses time, not data
        log.warning("training starts over: its checkpoint could not be read", extra={"cycle_id": cycle.id},
                    exc_info=True)
        return None
    log.info("training resumes from its checkpoint", extra={"cycle_id": cycle.id, "step": checkpoint.step})
    return checkpoint


def _checkpoint_saver(cycle_id: int, store: BlobStore, inputs: str) -> Callable[[Any], None]:
    def save(checkpoint: Any) -> None:
        key = store.put(checkpoint.to_bytes(), "pt").key
        with db.session_scope() as session:
            cycle = _get(session, cycle_id)
            previous, cycle.checkpoint_key = cycle.checkpoint_key, key
            cycle.progress = {**cycle.progress, "checkpoint_step": checkpoint.step, "checkpoint_inputs": inputs}
        if previous not in (None, key):
            store.delete(previous)

    return save


def _warm_start_state(session: Any, store: BlobStore, project_id: int) -> dict[str, Any] | None:
    import torch

    previous = session.scalar(select(ModelVersion).where(ModelVersion.project_id == project_id)
                              .order_by(ModelVersion.version.desc()).limit(1))
    if previous is None:
        return None
    payload = torch.load(store.path(previous.weights_key), map_location="cpu", weights_only=True)
    return dict(payload["state_dict"])


def _load_model(store: BlobStore, cycle: Cycle) -> Any:
    from worker.ml.checkpoint import load_model

    if cycle.weights_key is None:
        raise CycleError("the cycle has no trained weights")
    return load_model(store.path(cycle.weights_key))


def evaluate(cycle_id: int, store: BlobStore) -> None:
    """Dice per class on the validation split (top-level metrics) and on the test split (``test``)."""
    cycle, project = _context(cycle_id)
    model, meta = _load_model(store, cycle)
    should_stop = _cancel_checker(cycle_id)
    validation = _dice_on(store, model, meta, project, "validation", should_stop)
    metrics: dict[str, Any] = {"validation_cases": validation.pop("cases"), **validation}
    test = _dice_on(store, model, meta, project, "test", should_stop)
    if test["cases"]:
        metrics["test"] = test
    _store_metrics(cycle_id, metrics)


def _dice_on(
    store: BlobStore, model: Any, meta: Any, project: Project, split: str, should_stop: Callable[[], bool]
) -> dict[str, Any]:
    from worker.ml.inference import evaluate as evaluate_model

    with db.session_scope() as session:
        pairs = _labelled(session, store, project, split)
    if not pairs:
        return {"cases": 0, "per_class": {}, "mean_dice": None, "note": f"no labelled case in the {split} split"}
    images, labels = _arrays(store, pairs)
    result = evaluate_model(model, images, labels, project.modality, meta.params, should_stop=should_stop)
    per_case = [{"case_id": case.id, "mean_dice": scores["mean_dice"],
                 "per_class": dict(zip(project.labels, scores["per_class"], strict=True))}
                for (case, _), scores in zip(pairs, result["per_case"], strict=True)]
    return {"cases": len(pairs), "per_class": dict(zip(project.labels, result["per_class"], strict=True)),
            "mean_dice": result["mean_dice"], "per_case": per_case}


def _store_metrics(cycle_id: int, metrics: dict[str, Any]) -> None:
    with db.session_scope() as session:
        cycle = _get(session, cycle_id)
        cycle.metrics = {**cycle.metrics, **metrics}


def score(cycle_id: int, store: BlobStore) -> None:
    """The score phase in this process: every shard in turn (the Celery path spreads them, see worker.tasks)."""
    for index in prepare_shards(cycle_id):
        case_ids = _claim_shard(cycle_id, index)
        if case_ids is None:
            return
        _score_cases(cycle_id, case_ids, store)
        _complete_shard(cycle_id, index)


def start_scoring(cycle_id: int) -> list[int]:
    """Enter the score phase and return the shards still to score; [] when the cycle must not go on."""
    if not _enter(cycle_id, "score"):
        return []
    try:
        return prepare_shards(cycle_id)
    except Exception as exc:
        _finish(cycle_id, "failed", f"score failed: {type(exc).__name__}: {exc}")
        log.exception("cycle failed", extra={"cycle_id": cycle_id, "phase": "score"})
        return []


def prepare_shards(cycle_id: int) -> list[int]:
    """Split the unlabelled pool cases into shards, once per cycle; the indices of the shards not done yet.

    A score phase delivered again keeps the shards it made (and the scores they wrote): the ranking is built from
    the cases chosen when the phase first started.
    """
    size = get_settings().score_shard_cases
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        assert cycle is not None
        shards = list(session.scalars(select(ScoreShard).where(ScoreShard.cycle_id == cycle_id)
                                      .order_by(ScoreShard.index)))
        if not shards:
            session.execute(delete(CaseScore).where(CaseScore.cycle_id == cycle_id))
            case_ids = list(session.scalars(select(Case.id).where(
                Case.project_id == cycle.project_id, Case.split == "pool", Case.status == "unlabelled",
                Case.deleted_at.is_(None)).order_by(Case.id)))
            shards = [ScoreShard(cycle_id=cycle_id, index=i, case_ids=case_ids[start: start + size])
                      for i, start in enumerate(range(0, len(case_ids), size))]
            session.add_all(shards)
            cycle.progress = {**cycle.progress, "scored": 0, "total": len(case_ids), "shards": len(shards),
                              "score_started": utcnow().isoformat()}
        return [shard.index for shard in shards if shard.status != "done"]


def run_shard(cycle_id: int, index: int, store: BlobStore | None = None) -> bool:
    """Score one shard (a Celery task); records cancellation or failure on the cycle, never raises for them.

    Delivered again after its worker process died, or sent again after its worker host went silent, it scores only
    the cases without a score. True when this run finished the cycle's last shard: the caller starts publish.
    """
    store = store or get_blob_store()
    try:
        case_ids = _claim_shard(cycle_id, index)
        if case_ids is None:
            return False
        with _heartbeat(cycle_id, index):
            _score_cases(cycle_id, case_ids, store)
        return _complete_shard(cycle_id, index)
    except (CycleCancelled, Cancelled):
        _finish(cycle_id, "cancelled", "cancelled by an admin during score")
        _stop_shard(cycle_id, index)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, CycleError) else f"{type(exc).__name__}: {exc}"
        _finish(cycle_id, "failed", f"score failed (shard {index}): {detail}")
        _stop_shard(cycle_id, index)
        log.exception("cycle failed", extra={"cycle_id": cycle_id, "phase": "score", "shard": index})
    return False


def scoring_complete(cycle_id: int) -> bool:
    """Whether the cycle is in its score phase with every shard done (or none to score): publish may start."""
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        if cycle is None or cycle.status != "running" or cycle.phase != "score":
            return False
        return not session.scalar(select(func.count()).select_from(ScoreShard).where(
            ScoreShard.cycle_id == cycle_id, ScoreShard.status != "done"))


def _stop_shard(cycle_id: int, index: int) -> None:
    with db.session_scope() as session:
        shard = session.scalar(select(ScoreShard).where(ScoreShard.cycle_id == cycle_id, ScoreShard.index == index))
        if shard is not None and shard.status == "running":
            shard.status, shard.finished_at = "stopped", utcnow()


def _claim_shard(cycle_id: int, index: int) -> list[int] | None:
    """Mark a shard running by this process; its case ids, or None when the cycle or the shard is over."""
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        if cycle is None or cycle.status != "running" or cycle.phase != "score":
            return None
        if cycle.cancel_requested:
            _mark_finished(cycle, "cancelled", "cancelled by an admin during score")
            return None
        shard = session.scalar(select(ScoreShard).where(ScoreShard.cycle_id == cycle_id, ScoreShard.index == index))
        if shard is None or shard.status == "done":
            return None
        if shard.status == "running":
            log.warning("score shard delivered again: its previous worker stopped",
                        extra={"cycle_id": cycle_id, "shard": index, "previous_worker": shard.worker})
        shard.status, shard.worker, shard.attempts = "running", _worker_name(), shard.attempts + 1
        shard.started_at = shard.started_at or utcnow()
        cycle.heartbeat_at = shard.heartbeat_at = utcnow()
        return [int(c) for c in shard.case_ids]


def _complete_shard(cycle_id: int, index: int) -> bool:
    """Mark the shard done; True when that finished the score phase (the one call that then starts publish: two
    deliveries of one shard, or of the last two, are serialised by the cycle row's lock)."""
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        assert cycle is not None
        shards = list(session.scalars(select(ScoreShard).where(ScoreShard.cycle_id == cycle_id)))
        scored = _scored_count(session, cycle_id)
        was_done = all(shard.status == "done" for shard in shards)
        for shard in shards:
            if shard.index == index:
                shard.status, shard.finished_at, shard.scored = "done", utcnow(), len(shard.case_ids)
        cycle.progress = {**cycle.progress, "scored": scored}
        cycle.heartbeat_at = utcnow()
        if was_done or cycle.status != "running":
            return False
        if all(shard.status == "done" for shard in shards):
            started = dt.datetime.fromisoformat(cycle.progress.get("score_started", utcnow().isoformat()))
            seconds = max((utcnow() - started).total_seconds(), 1e-3)
            cycle.timings = {**cycle.timings, "score": round(seconds, 3)}
            cycle.progress = {**cycle.progress, "scored_per_s": round(scored / seconds, 4),
                              "score_worker": _worker_name(),
                              "score_workers": sorted({s.worker for s in shards if s.worker})}
            return True
        return False


def _scored_count(session: Any, cycle_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(CaseScore).where(CaseScore.cycle_id == cycle_id)) or 0)


def _score_cases(cycle_id: int, case_ids: list[int], store: BlobStore) -> None:
    from worker.ml.scoring import score_case
    from worker.ml.transforms import normalise

    cycle, project = _context(cycle_id)
    with db.session_scope() as session:
        done = set(session.scalars(select(CaseScore.case_id).where(CaseScore.cycle_id == cycle_id,
                                                                   CaseScore.case_id.in_(case_ids))))
        cases = list(session.scalars(select(Case).where(Case.id.in_([c for c in case_ids if c not in done]))
                                     .order_by(Case.id)))
    if not cases:
        return
    model, meta = _load_model(store, cycle)
    _progress(cycle_id, score_dtype=_score_dtype(meta.params.score_precision),
              score_passes_per_call=_passes_per_call(meta.params))
    should_stop = _cancel_checker(cycle_id)
    # Encoding and storing a case's prediction and map runs beside the next case's scoring, not before it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cycle-{cycle_id}-writer") as writer:
        pending: list[Future[None]] = []
        for case in cases:
            if should_stop():
                raise CycleCancelled
            image = normalise(load_array(store, case.blob_key).astype(np.float32), project.modality)
            result = score_case(model, image, cycle.strategy, meta.params, case_key=case.id, should_stop=should_stop)
            pending.append(writer.submit(_store_score, store, cycle_id, case, result))
            _raise_failed_writes(pending)
        for future in pending:
            future.result()


def _score_dtype(precision: str) -> str:
    """What this worker's score passes compute in (``TrainParams.score_precision``), for the cycle's progress."""
    from worker.ml.inference import default_device, score_dtype

    return str(score_dtype(default_device(), precision)).removeprefix("torch.")


def _passes_per_call(params: Any) -> int:
    """How many MC passes this worker runs together (``TrainParams.score_pass_batch``), at most: a GPU that runs out
    of memory halves it."""
    from worker.ml.inference import default_device
    from worker.ml.scoring import pass_group_size

    return pass_group_size(params, default_device())


def _raise_failed_writes(pending: list[Future[None]]) -> None:
    for future in [f for f in pending if f.done()]:
        future.result()  # a failed write fails the phase now, not after every case is scored
        pending.remove(future)


def _store_score(store: BlobStore, cycle_id: int, case: Case, result: Any) -> None:
    assert result.prediction is not None and result.embedding is not None
    extras: dict[str, Any] = {**result.extras, "embedding": [round(float(v), 6) for v in result.embedding]}
    row = CaseScore(cycle_id=cycle_id, case_id=case.id, score=float(result.score), extras=extras,
                    prediction_key=store.put(encode_on_case_grid(result.prediction, case), "nii.gz").key)
    if result.voxel_map is not None:
        row.uncertainty_key = store.put(encode_map_on_case_grid(result.voxel_map, case), "nii.gz").key
    try:
        with db.session_scope() as session:
            if session.get(CaseScore, (cycle_id, case.id)) is None:  # a redelivered shard meets its earlier rows
                session.add(row)
    except IntegrityError:  # scored meanwhile by a duplicate delivery of the shard: the first score stays
        log.info("case already scored", extra={"cycle_id": cycle_id, "case_id": case.id})
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None
        cycle.progress = {**cycle.progress, "scored": _scored_count(session, cycle_id)}


def publish(cycle_id: int, store: BlobStore) -> None:
    """One transaction: model version, complete ranking, switch, cycle done."""
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        assert cycle is not None
        if cycle.status != "running" or cycle.phase != "publish":
            return  # published by a second delivery of publish that held the lock first
        if cycle.cancel_requested:
            raise CycleCancelled
        if cycle.weights_key is None:
            raise CycleError("the cycle has no trained weights")
        unscored = session.scalar(select(func.count()).select_from(ScoreShard).where(
            ScoreShard.cycle_id == cycle_id, ScoreShard.status != "done"))
        if unscored:
            raise CycleError(f"{unscored} score shard(s) did not finish; the ranking would be incomplete")
        latest = session.scalar(select(func.max(ModelVersion.version)).where(
            ModelVersion.project_id == cycle.project_id)) or 0
        version = ModelVersion(project_id=cycle.project_id, version=latest + 1, cycle_id=cycle.id,
                               weights_key=cycle.weights_key, params={**cycle.params, "strategy": cycle.strategy},
                               metrics=cycle.metrics, trained_case_ids=cycle.trained_case_ids)
        session.add(version)
        session.flush()
        rows = list(session.execute(select(CaseScore.case_id, CaseScore.score, CaseScore.extras)
                                    .where(CaseScore.cycle_id == cycle.id)))
        order = _annotation_order(cycle, rows, round_index=latest)
        ranking = publish_ranking(session, cycle.project_id, [(cid, s) for cid, s, _ in rows], kind="model",
                                  strategy=cycle.strategy, seed=cycle.params.get("seed"), model_version_id=version.id,
                                  order=order)
        cycle.model_version_id, cycle.ranking_id = version.id, ranking.id
        _mark_finished(cycle, "done", None)


def _annotation_order(cycle: Cycle, rows: list[Any], round_index: int) -> list[int]:
    """The strategy's annotate-first order of the scored cases (batch-aware strategies reorder scores)."""
    from worker.ml.scoring import ScoreResult, rank_cases

    results = []
    for case_id, score_value, extras in rows:
        embedding = extras.get("embedding")
        plain = {k: float(v) for k, v in extras.items() if k != "embedding"}
        results.append((int(case_id), ScoreResult(score=float(score_value), extras=plain,
                                                  embedding=None if embedding is None else np.asarray(embedding))))
    return rank_cases(cycle.strategy, results, _params(cycle), round_index=round_index)


PHASE_FUNCTIONS: dict[str, Callable[[int, BlobStore], None]] = {
    "train": train, "evaluate": evaluate, "score": score, "publish": publish,
}


def run_cycle(cycle_id: int, store: BlobStore | None = None) -> None:
    """All phases in order in this process (used by tests and by `nextcase simulate --in-process`)."""
    for phase in PHASES:
        run_phase(cycle_id, phase, store)
