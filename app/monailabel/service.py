"""MONAI Label concepts mapped onto NextCase: no second store, no second queue.

Image ids handed to a MONAI Label client are ``case<id>-<key>`` where ``key`` is derived from the
live lease's secret token: the id is a capability for that lease, so Slicer's token-less image
download works for the lease holder only, and only while the lease is live. Authenticated calls
also accept the plain ``case<id>``, and, for a volume the user uploaded (Slicer: one opened locally),
the id their client gave it (Slicer: the node name), stored only as a keyed hash.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cases import service as cases
from app.cases.imaging import CanonicalImage
from app.core.db import session_scope
from app.core.errors import Conflict, DomainError, Forbidden, NotFound
from app.core.params import DB_INT_MAX
from app.core.storage import BlobStore
from app.cycles.service import fail_stale
from app.models import ACTIVE_CYCLE_STATES, Case, Cycle, Lease, ModelVersion, Project, User, utcnow
from app.monailabel import repository as repo
from app.projects.service import get_project, lock_project
from app.queue import service as queue

MODEL_NAME = "segmentation"
# The project has one queue; a list of strategy names that all served it was decorative.
QUEUE_STRATEGY = "nextcase"
ID_PATTERN = re.compile(r"^case(?P<case>\d{1,12})(?:-(?P<key>[0-9a-f]{16}))?$")
TASK_STATUS = {"queued": "RUNNING", "running": "RUNNING", "done": "DONE", "failed": "ERROR", "cancelled": "STOPPED"}


class TooManyRequests(DomainError):
    status, type, title = 429, "training-active", "Training already running"


class SessionsNotOffered(DomainError):
    status, type, title = 406, "sessions-not-offered", "Sessions not offered"


@dataclass(frozen=True)
class ImageRef:
    case_id: int
    key: str | None


def lease_key(lease_token: str) -> str:
    return hashlib.sha256(f"monailabel:{lease_token}".encode()).hexdigest()[:16]


def image_id(case_id: int, lease_token: str | None = None) -> str:
    return f"case{case_id}" + (f"-{lease_key(lease_token)}" if lease_token is not None else "")


def parse_image_id(value: str) -> ImageRef:
    match = ID_PATTERN.match(value.strip())
    # An id beyond the integer column would overflow the database driver (a 500): no such case exists.
    if match is None or int(match["case"]) > DB_INT_MAX:
        raise NotFound(f"unknown image id {value[:40]!r}", field="image")
    return ImageRef(int(match["case"]), match["key"])


def case_for(session: Session, project: Project, ref: ImageRef) -> Case:
    case = session.get(Case, ref.case_id)
    if case is None or case.project_id != project.id or case.deleted_at is not None:
        raise NotFound(f"no image case{ref.case_id} in this project", field="image")
    return case


def _alias_hash(project: Project, user: User, image: str) -> str:
    # Keyed, like a patient's external id: a Slicer node name may carry what the file was called.
    return cases.hash_external_id(project.id, f"monailabel-image:{user.id}:{image}")


def resolve(session: Session, project: Project, user: User, image: str) -> Case:
    """The case a client's image id names: an id this user gave an uploaded volume, else a NextCase id.

    Slicer keeps calling a volume it uploaded by its node name, so that name comes first.
    """
    alias = repo.find_alias(session, project.id, user.id, _alias_hash(project, user, image))
    if alias is not None:
        return case_for(session, project, ImageRef(alias.case_id, None))
    return case_for(session, project, parse_image_id(image))


def resolve_case_id(project_id: int, user: User, image: str) -> int:
    """:func:`resolve` in a short transaction of its own, for routes that decode an upload before theirs."""
    with session_scope() as peek:
        return resolve(peek, get_project(peek, project_id), user, image).id


def require_upload_allowed(project: Project, user: User) -> None:
    if user.role != "admin" and not project.annotators_can_upload_cases:
        raise Forbidden("adding a case needs an admin, or the project setting annotators_can_upload_cases "
                        "(an admin sets it with PATCH /api/v1/projects/{id})", field="annotators_can_upload_cases")


def check_upload_allowed(project_id: int, user: User) -> None:
    """Refuse before the upload is decoded, in a short transaction of its own (see cases.decode_label)."""
    with session_scope() as peek:
        require_upload_allowed(get_project(peek, project_id), user)


def add_uploaded_case(
    session: Session, store: BlobStore, project: Project, user: User, image: CanonicalImage, alias: str,
    patient: str | None,
) -> tuple[Case, bool]:
    """A volume uploaded from a client becomes a case (or is the case that already has these voxels).

    Returns the case and whether it is new. The uploader gets the lease on it (they opened it to
    annotate it), and ``alias`` (the client's id for it) names it for this user from now on.
    """
    require_upload_allowed(project, user)  # again: the setting may have changed while the upload was decoded
    case = cases.find_same_image(session, project, image)
    created = case is None
    if case is None:
        # Pseudonymous by construction: nothing from the file or the client names the patient.
        case = cases.ingest_case(session, store, project, patient or f"monailabel-upload-{uuid.uuid4().hex}",
                                 image, user)
    elif case.deleted_at is not None:
        raise Conflict(f"this image was case {case.id} of the project, which has been deleted", field="file")
    if alias:
        repo.save_alias(session, project.id, user.id, _alias_hash(project, user, alias), case.id)
    queue.lease_case(session, case, user)
    return case, created


def case_by_capability(session: Session, project: Project, ref: ImageRef) -> tuple[Case, User] | None:
    """(case, lease holder) if ``ref`` carries the key of the case's live lease (the token-less download)."""
    if ref.key is None:
        return None
    case = session.get(Case, ref.case_id)
    if case is None or case.project_id != project.id or case.deleted_at is not None or case.lease_id is None:
        return None
    lease = session.get(Lease, case.lease_id)
    if lease is None or lease.ended_at is not None or lease.expires_at <= utcnow() or lease_key(lease.token) != ref.key:
        return None
    holder = session.get(User, lease.user_id)
    return None if holder is None else (case, holder)


def next_sample(session: Session, project: Project, user: User) -> dict[str, Any]:
    """Release the holder's current lease (recorded as a skip), then claim the next case.

    The queue hands skipped cases back last, least recently skipped first, so the case just skipped
    comes back only when it is the one case left, and then every time. Slicer cannot load an id it
    already showed; the id carries the new lease's key, so it is a new one.
    """
    lock_project(session, project.id)  # the claim's lock order: project row, then case, then lease
    for lease, _case in queue.live_leases(session, project.id, user.id)[:1]:
        queue.end_lease(session, lease.token, user, "skipped", "next sample requested in MONAI Label client")
    claim = queue.claim_next(session, project.id, user)
    if claim is None:
        return {}
    return {
        "id": image_id(claim.case.id, claim.lease.token),
        "name": f"{image_id(claim.case.id, claim.lease.token)}.nii.gz",
        "checksum": f"SHA256:{claim.case.sha256}",
        "strategy": claim.ranking.strategy,
        "weight": claim.score,
        "rank": claim.rank,
    }


def check_strategy(name: str) -> None:
    if name != QUEUE_STRATEGY:
        raise NotFound(f"unknown strategy {name[:40]!r}: this server offers one, {QUEUE_STRATEGY!r}, the project's "
                       "queue (see /info/)", field="strategy")


def queue_description(session: Session, project: Project) -> str:
    """What Next Sample really does, in the order the queue applies it."""
    return (f"The project's one annotation queue: pinned cases first, then {_ranking_phrase(session, project)}, "
            "then cases added since that ranking, and the cases you skipped last, least recently skipped first.")


def _ranking_phrase(session: Session, project: Project) -> str:
    ranking = queue.current_ranking(session, project)
    if ranking is None or ranking.kind == "cold_start":
        return "a seeded random order (no model yet: cold start)"
    model = session.get(ModelVersion, ranking.model_version_id) if ranking.model_version_id else None
    source = f"model version {model.version}" if model is not None else "the current model"
    return f"the ranking of {source}, scored by {ranking.strategy}"


def label_names(project: Project) -> dict[str, int]:
    return {name: idx for idx, name in enumerate(project.labels) if idx > 0}


def latest_cycle(session: Session, project_id: int) -> Cycle | None:
    fail_stale(session, project_id=project_id)
    return session.scalar(select(Cycle).where(Cycle.project_id == project_id).order_by(Cycle.id.desc()).limit(1))


def latest_model(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.project_id == project_id)
                          .order_by(ModelVersion.version.desc()).limit(1))


# Slicer draws one bar, epoch / total_epochs, for a whole training run. A cycle runs four phases, so
# each gets a share of 100 "epochs" (training dominates; scoring every unlabelled case comes next)
# and the bar reaches 100 only when the cycle is done: counting training steps alone showed 100 %
# from the end of training while evaluation and scoring still ran.
PHASE_SHARES = {"train": (0, 60), "evaluate": (60, 65), "score": (65, 98), "publish": (98, 99)}
PHASE_WORDS = {"train": "training", "evaluate": "evaluating", "score": "scoring", "publish": "publishing"}


def _fraction(count: Any, total: Any) -> float:
    return min(1.0, int(count or 0) / int(total)) if total else 0.0


def phase_done(cycle: Cycle) -> float:
    """How much of its current phase the cycle has done (0..1), from the progress the worker records."""
    if cycle.phase == "train":
        return _fraction(cycle.progress.get("step"), cycle.progress.get("steps"))
    if cycle.phase == "score":
        return _fraction(cycle.progress.get("scored"), cycle.progress.get("total"))
    return 0.0  # evaluate and publish record no finer progress


def cycle_percent(cycle: Cycle) -> int:
    if cycle.status == "done":
        return 100
    if cycle.phase not in PHASE_SHARES:
        return 0
    start, end = PHASE_SHARES[cycle.phase]
    return int(start + (end - start) * phase_done(cycle))


def phase_detail(cycle: Cycle) -> str:
    """E.g. "scoring: 3 of 10 cases" for the phase a running cycle is in."""
    word = PHASE_WORDS.get(cycle.phase or "", "waiting for a worker")
    if cycle.phase == "train" and cycle.progress.get("steps"):
        return f"{word}: step {int(cycle.progress.get('step') or 0)} of {int(cycle.progress['steps'])}"
    if cycle.phase == "score" and cycle.progress.get("total") is not None:
        return f"{word}: {int(cycle.progress.get('scored') or 0)} of {int(cycle.progress['total'])} cases"
    return word


def train_stats(session: Session, project_id: int) -> dict[str, Any]:
    cycle = latest_cycle(session, project_id)
    model = latest_model(session, project_id)
    best = model.metrics.get("mean_dice") if model else None
    stats: dict[str, Any] = {"epoch": 0, "total_epochs": 0, "best_metric": float(best or 0.0), "start_ts": 0}
    if cycle is not None:
        stats.update(epoch=cycle_percent(cycle), total_epochs=100, phase=cycle.phase,
                     start_ts=int((cycle.started_at or cycle.created_at).timestamp()))
        if cycle.finished_at is not None:
            stats["total_time"] = round((cycle.finished_at - (cycle.started_at or cycle.created_at)).total_seconds(), 1)
    return stats


def models(session: Session, project: Project) -> dict[str, Any]:
    """The inference model, listed only once a cycle has published one.

    Slicer auto-segments every new sample with each listed segmentation model; listing one before
    it exists made every Next Sample end in an "inference failed (404)" dialog.
    """
    model = latest_model(session, project.id)
    if model is None:
        return {}
    return {MODEL_NAME: {"type": "segmentation", "labels": label_names(project), "dimension": 3,
                         "description": f"MONAI 3D U-Net with MC dropout, model version {model.version} "
                                        "(retrained by NextCase cycles)", "config": {}}}


def info(session: Session, project: Project) -> dict[str, Any]:
    from worker.ml.params import TrainParams

    total = session.scalar(select(func.count()).select_from(Case).where(
        Case.project_id == project.id, Case.deleted_at.is_(None))) or 0
    completed = session.scalar(select(func.count()).select_from(Case).where(
        Case.project_id == project.id, Case.deleted_at.is_(None), Case.status == "labelled")) or 0
    defaults = TrainParams()
    names = label_names(project)
    return {
        "name": project.name,
        "description": f"NextCase project {project.name} ({project.modality}): cases ranked by active learning",
        "version": "nextcase-0.1.0",
        "labels": list(names),
        "models": models(session, project),
        "trainers": {MODEL_NAME: {"description": "start a NextCase retraining cycle",
                                  "config": {"steps": defaults.steps, "mc_passes": defaults.mc_passes}}},
        "strategies": {QUEUE_STRATEGY: {"description": queue_description(session, project)}},
        "scoring": {},
        "train_stats": {MODEL_NAME: train_stats(session, project.id)},
        "datastore": {"total": int(total), "completed": int(completed), "label_tags": {"final": int(completed)}},
    }


def task_json(cycle: Cycle) -> dict[str, Any]:
    running = cycle.status in ACTIVE_CYCLE_STATES
    details = [f"cycle {cycle.id}: {cycle.status}"
               + (f" ({phase_detail(cycle)}; {cycle_percent(cycle)} % of the cycle)" if running else "")]
    if cycle.error:
        details.append(cycle.error)
    return {
        "id": str(cycle.id),
        "name": MODEL_NAME,
        "status": TASK_STATUS[cycle.status],
        "start_ts": int((cycle.started_at or cycle.created_at).timestamp()),
        **({"end_ts": int(cycle.finished_at.timestamp())} if cycle.finished_at else {}),
        "details": details,
        "request": {**cycle.params, "strategy": cycle.strategy},
        "result": {"metrics": cycle.metrics},
    }


def active_cycle(session: Session, project_id: int) -> Cycle | None:
    fail_stale(session, project_id=project_id)
    return session.scalar(select(Cycle).where(Cycle.project_id == project_id,
                                              Cycle.status.in_(ACTIVE_CYCLE_STATES)))


def prediction_array(session: Session, store: Any, case: Case, project: Project) -> Any:
    """The current model's label map for a case: from its last scoring run, else computed now."""
    from app.models import CaseScore
    from worker.data import load_array

    model = latest_model(session, project.id)
    if model is None:
        raise NotFound("no trained model yet: start a training cycle first", field="model")
    key = session.scalar(select(CaseScore.prediction_key).where(
        CaseScore.case_id == case.id, CaseScore.cycle_id == model.cycle_id))
    if key is not None:
        return load_array(store, key)
    from worker.predict import predict_case

    return predict_case(store, case, project.modality, model.weights_key)
