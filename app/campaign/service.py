"""Label efforts and the campaign report.

When and where the comparison runs: the effort row is written in the label upload's own transaction
(``pending`` when there is a prediction to compare), and the comparison itself runs as a FastAPI background
task of that request, after its transaction has committed and its response has been sent, in the API
process. Not in the worker: the embedded worker consumes one queue with one process, so an effort would
wait behind a training cycle for minutes to hours, and the report would lag by as much. The cost of the
background task is that the API process may stop before it runs; the row then stays ``pending`` in the
database and reading the campaign report computes it (``catch_up``), so no effort is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import SimpleITK as sitk
from sqlalchemy.orm import Session

from app.campaign import effort as metrics
from app.campaign import report
from app.campaign import repository as repo
from app.campaign.schemas import CampaignReport
from app.cases.imaging import read_nifti
from app.cases.service import StoredLabel
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.storage import BlobStore, get_blob_store
from app.models import LabelEffort, LabelVersion, Lease, Project, utcnow

log = logging.getLogger("nextcase.campaign")

NO_LEASE = ("no live lease of the author: uploaded without a claim, after the lease ended, or over another "
            "annotator's lease")
COLD_START = "no model was in service when the case was claimed (cold start)"
UNSCORED = "the model in service had not scored this case (it arrived after the ranking was published)"
UNRECORDED = "claimed before the served prediction was recorded"


def after_label_upload(session: Session, stored: StoredLabel) -> int | None:
    """Record the effort of a label just stored; returns its id when a comparison is to run after commit."""
    effort = record_upload(session, stored.version, stored.lease, stored.case.project_id)
    return effort.id if effort.status == "pending" else None


def record_upload(session: Session, version: LabelVersion, lease: Lease | None, project_id: int) -> LabelEffort:
    """Write the effort row of a new label version, in the upload's transaction."""
    effort = LabelEffort(label_version_id=version.id, project_id=project_id, case_id=version.case_id,
                         user_id=version.author_id, status="no_prediction")
    if lease is None or lease.user_id != version.author_id:
        effort.note = NO_LEASE
    else:
        _from_lease(effort, lease)
    session.add(effort)
    session.flush()
    return effort


def _from_lease(effort: LabelEffort, lease: Lease) -> None:
    assert lease.ended_at is not None  # the upload has just ended it
    effort.lease_id, effort.arm = lease.id, lease.arm
    effort.model_version_id, effort.prediction_key = lease.model_version_id, lease.prediction_key
    effort.working_s = (lease.ended_at - lease.created_at).total_seconds()
    if lease.prediction_key is not None:
        effort.status = "pending"
    elif lease.arm is None:
        effort.note = UNRECORDED
    else:
        effort.note = COLD_START if lease.model_version_id is None else UNSCORED


def compute_effort(effort_id: int, store: BlobStore | None = None) -> bool:
    """Compare a pending effort's prediction with its mask; True when this call stored the result.

    Reads in one short transaction, computes outside any (on SQLite a transaction holds the write lock),
    stores in another. A missing or unreadable blob marks the effort failed; a database error leaves it
    pending for ``catch_up``.
    """
    store = store or get_blob_store()
    with session_scope() as session:
        inputs = repo.pending_inputs(session, effort_id)
    if inputs is None:
        return False
    started = time.perf_counter()
    values = _compared(store, inputs)
    with session_scope() as session:
        stored = repo.finish(session, effort_id, {**values, "computed_at": utcnow()})
    log.info("label effort computed", extra={"effort_id": effort_id, "status": values["status"],
                                             "ms": round((time.perf_counter() - started) * 1000, 1)})
    return stored


def _compared(store: BlobStore, inputs: repo.PendingInputs) -> dict[str, Any]:
    try:
        result = metrics.compare(_array(store, inputs.prediction_key), _array(store, inputs.label_key),
                                 len(inputs.classes))
    except (OSError, ValueError, RuntimeError) as exc:  # missing blob, unreadable NIfTI, other grid
        return {"status": "failed", "note": f"{type(exc).__name__}: {exc}"[:300]}
    names = inputs.classes
    return {"status": "done", "dice": dict(zip(names, result.dice, strict=True)),
            "predicted_voxels": dict(zip(names, result.predicted, strict=True)),
            "label_voxels": dict(zip(names, result.labelled, strict=True)),
            "voxels_changed": result.changed, "voxels_total": result.total}


def _array(store: BlobStore, key: str) -> np.ndarray:
    return sitk.GetArrayFromImage(read_nifti(store.read(key)))


def catch_up(project_id: int, store: BlobStore | None = None) -> int:
    """Compute efforts left pending longer than NEXTCASE_EFFORT_RETRY_AFTER_S (their background job was lost).

    Call it outside any open transaction. Returns how many this call stored.
    """
    settings = get_settings()
    before = utcnow() - dt.timedelta(seconds=settings.effort_retry_after_s)
    with session_scope() as session:
        ids = repo.stale_pending(session, project_id, before, settings.effort_catch_up)
    return sum(compute_effort(effort_id, store) for effort_id in ids)


def campaign_report(session: Session, project: Project) -> CampaignReport:
    return report.build(project, repo.efforts(session, project.id))


def campaign_csv(result: CampaignReport) -> str:
    return report.to_csv(result)
