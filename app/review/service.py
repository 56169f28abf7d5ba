"""Review of label versions, the review queue, and several readers per case (agreement and consensus).

Which versions count follows two project settings:
- ``train_on``: ``submitted`` counts submitted and approved versions (as before review existed; a version a
  reviewer sent back does not count), ``approved`` counts approved ones only.
- ``readers_per_case``: with 1, a case's newest version replaces older ones (a correction); with several, each
  annotator's newest version is their reading, and a case with two or more counted readings trains on their
  consensus, a label version authored by the system user ``consensus``.

``refresh_case`` keeps ``cases.status`` in step after every upload, review and settings change:
``unlabelled`` while the case needs readers (claimable by those who have not read it), ``in_review`` when
every reader has read it but a reading does not count yet (awaiting review, or sent back), else ``labelled``.
Consensus and agreement are computed there, synchronously: cheap for the small volumes of the tests and
tens of milliseconds for a 128^3 mask, but a large multi-reader project would want them on the light queue.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth import service as auth
from app.cases.imaging import read_nifti, write_nifti
from app.cases.schemas import LabelVersionPublic
from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidRequest, LeaseExpired, NotFound
from app.core.storage import BlobStore
from app.models import Case, LabelVersion, Project, ReaderAgreement, ReviewLease, User, utcnow
from app.projects import service as projects
from app.review import agreement
from app.review import repository as repo
from app.review.schemas import (
    AnnotatorAgreement,
    CaseAgreement,
    PairAgreement,
    ProjectAgreement,
    Reading,
    ReviewNote,
)

REVIEWER_ROLES = ("reviewer", "admin")
CONSENSUS_USER = "consensus"
COUNTED_STATES = {"submitted": ("submitted", "approved"), "approved": ("approved",)}


# --- which versions count --------------------------------------------------------------------------


def _per_reader(versions: Sequence[LabelVersion], readers_per_case: int) -> list[LabelVersion]:
    """The newest version of each reader (of the case, with one reader per case), oldest first."""
    human = sorted((v for v in versions if v.consensus_of is None), key=lambda v: v.version)
    if not human:
        return []
    if readers_per_case <= 1:
        return [human[-1]]
    newest = {v.author_id: v for v in human}
    return sorted(newest.values(), key=lambda v: v.version)


def current_readings(versions: Sequence[LabelVersion], project: Project) -> list[LabelVersion]:
    return _per_reader(versions, project.readers_per_case)


def counted_readings(versions: Sequence[LabelVersion], project: Project) -> list[LabelVersion]:
    """Per reader, the newest version that counts under ``train_on`` (an older approved one while a newer waits)."""
    states = COUNTED_STATES[project.train_on]
    return _per_reader([v for v in versions if v.review_state in states], project.readers_per_case)


def case_status(versions: Sequence[LabelVersion], project: Project) -> str:
    current = current_readings(versions, project)
    if len(current) < project.readers_per_case:
        return "unlabelled"
    states = COUNTED_STATES[project.train_on]
    return "labelled" if all(v.review_state in states for v in current) else "in_review"


def _spec(project: Project, inputs: Sequence[LabelVersion]) -> dict[str, Any]:
    return {"method": project.consensus_method, "version_ids": sorted(v.id for v in inputs)}


def _consensus_for(versions: Sequence[LabelVersion], spec: dict[str, Any]) -> LabelVersion | None:
    """The newest consensus version, if it combines exactly these readings with this method."""
    made = [v for v in versions if v.consensus_of is not None]
    return made[-1] if made and made[-1].consensus_of == spec else None


# --- keeping a case in step ------------------------------------------------------------------------


def after_new_version(session: Session, store: BlobStore, case: Case) -> None:
    """Called by the label upload in its transaction, once the new version is added."""
    refresh_case(session, store, case, projects.get_project(session, case.project_id))


def refresh_case(session: Session, store: BlobStore, case: Case, project: Project) -> None:
    session.flush()
    versions = repo.versions_of(session, case.id)
    case.status = case_status(versions, project)
    sync_consensus(session, store, case, project, versions)


def refresh_project(session: Session, store: BlobStore, project: Project) -> None:
    """Re-derive every labelled case after a settings change (statuses, consensus versions).

    Each case row is locked first, as label uploads and reviews do: a version uploaded meanwhile is then either
    seen here or waits, never numbered twice or overwritten by a stale status.
    """
    for case, _ in repo.versions_of_project(session, project.id):
        refresh_case(session, store, _locked(session, case), project)


def _locked(session: Session, case: Case) -> Case:
    locked = session.get(Case, case.id, with_for_update={"key_share": True}, populate_existing=True)
    assert locked is not None
    return locked


def sync_consensus(
    session: Session, store: BlobStore, case: Case, project: Project, versions: Sequence[LabelVersion]
) -> LabelVersion | None:
    """The case's consensus version of its counted readings, stored now if missing (None: not a multi-reader case)."""
    inputs = counted_readings(versions, project)
    if project.readers_per_case < 2 or len(inputs) < 2:
        return None
    spec = _spec(project, inputs)
    existing = _consensus_for(versions, spec)
    if existing is not None:
        return existing
    masks = [read_nifti(store.read(v.blob_key)) for v in inputs]
    combined = agreement.consensus(masks, project.consensus_method)
    blob = store.put(write_nifti(combined), "nii.gz")
    author = _consensus_user(session)
    made = LabelVersion(case_id=case.id, version=max(v.version for v in versions) + 1, author_id=author.id,
                        sha256=blob.sha256, blob_key=blob.key, consensus_of=spec,
                        review_state="approved" if all(v.review_state == "approved" for v in inputs) else "submitted")
    session.add(made)
    session.flush()
    _store_agreement(session, case, project, made, inputs, masks)
    audit.record(session, "label.consensus", user_id=None, project_id=case.project_id, case_id=case.id,
                 version=made.version, **spec)
    return made


def _consensus_user(session: Session) -> User:
    user = auth.get_or_create_system_user(session, CONSENSUS_USER)
    if user.role != auth.SYSTEM_ROLE:  # a person took the name: never let consensus versions pass as theirs
        raise Conflict(f"the user name {CONSENSUS_USER!r} belongs to a person; rename that user", field="name")
    return user


def _store_agreement(session: Session, case: Case, project: Project, made: LabelVersion,
                     inputs: Sequence[LabelVersion], masks: Sequence[sitk.Image]) -> None:
    classes = list(project.labels)[1:]
    spacing_zyx = [float(s) for s in reversed(case.spacing)]  # arrays are (z, y, x); ITK spacing is (x, y, z)
    arrays = [sitk.GetArrayFromImage(m) for m in masks]
    for (va, a), (vb, b) in itertools.combinations(zip(inputs, arrays, strict=True), 2):
        dice, hd95 = agreement.pair_metrics(np.asarray(a), np.asarray(b), len(project.labels), spacing_zyx)
        session.add(ReaderAgreement(consensus_version_id=made.id, case_id=case.id, version_a_id=va.id,
                                    version_b_id=vb.id, author_a_id=va.author_id, author_b_id=vb.author_id,
                                    dice=dict(zip(classes, dice, strict=True)),
                                    hd95=dict(zip(classes, hd95, strict=True))))


def training_labels(session: Session, store: BlobStore, project: Project, split: str) -> list[tuple[Case, str]]:
    """(case, label blob key) of every labelled case of the split, in case id order: what cycles train and evaluate
    on and what a training-set export writes.

    Only cases whose readings are complete count (status ``labelled``: every reader has read it and, with
    ``train_on=approved``, been approved); a case still waiting for readers or a review does not train. One reader
    per case: its counted version. Several readers: their consensus version, made now (under the case row lock)
    if an upload raced its creation.
    """
    pairs: list[tuple[Case, str]] = []
    for case, versions in repo.versions_of_project(session, project.id, split):
        if case.status != "labelled" or not counted_readings(versions, project):
            continue
        if project.readers_per_case >= 2:
            case = _locked(session, case)
            versions = repo.versions_of(session, case.id)
        inputs = counted_readings(versions, project)
        made = sync_consensus(session, store, case, project, versions)
        pairs.append((case, made.blob_key if made is not None else inputs[-1].blob_key))
    return pairs


# --- reviews ---------------------------------------------------------------------------------------


def require_reviewer(user: User) -> None:
    if user.role not in REVIEWER_ROLES:
        raise Forbidden(f"reviewing needs the reviewer or admin role; {user.name!r} is {user.role}")


def review(session: Session, store: BlobStore, version_id: int, reviewer: User, decision: str,
           comment: str | None) -> LabelVersion:
    """Approve a submitted version or send it back to its author with a comment."""
    require_reviewer(reviewer)
    found = repo.get_version(session, version_id)
    if found is None:
        raise NotFound(f"label version {version_id} does not exist", field="id")
    # Lock order as everywhere: the case row (label uploads take it), then the version row.
    case = session.get(Case, found.case_id, with_for_update={"key_share": True}, populate_existing=True)
    version = repo.get_version(session, version_id, for_update=True)
    assert case is not None and version is not None
    project = projects.get_project(session, case.project_id)
    _check_reviewable(session, version, reviewer, project)
    comment = (comment or "").strip() or None
    if decision == "changes_requested" and comment is None:
        raise InvalidRequest("changes_requested needs a comment saying what to change", field="comment")
    now = utcnow()
    _end_review_lease_of(session, version, reviewer, now)
    version.review_state, version.review_comment = decision, comment
    version.reviewed_by, version.reviewed_at = reviewer.id, now
    audit.record(session, "label.review", user_id=reviewer.id, project_id=case.project_id, case_id=case.id,
                 label_version_id=version.id, version=version.version, decision=decision, comment=comment)
    refresh_case(session, store, case, project)
    return version


def _check_reviewable(session: Session, version: LabelVersion, reviewer: User, project: Project) -> None:
    if version.consensus_of is not None:
        raise Conflict("a consensus version is derived from the readers' versions: review those", field="id")
    if version.author_id == reviewer.id:
        raise Forbidden("nobody reviews their own label version", field="id")
    if version.review_state != "submitted":
        raise Conflict(f"label version {version.id} is already {version.review_state}", field="id")
    if version not in current_readings(repo.versions_of(session, version.case_id), project):
        raise Conflict(f"label version {version.id} is superseded by a newer version of its case", field="id")


def _end_review_lease_of(session: Session, version: LabelVersion, reviewer: User, now: dt.datetime) -> None:
    """Refuse a version another reviewer holds; end any lease on it ("reviewed" for the reviewer's own)."""
    if version.review_lease_id is None:
        return
    lease = session.get(ReviewLease, version.review_lease_id)
    assert lease is not None
    live = lease.ended_at is None and lease.expires_at > now
    if live and lease.user_id != reviewer.id:
        holder = session.get(User, lease.user_id)
        raise Conflict(f"label version {version.id} is leased for review by "
                       f"{holder.name if holder else lease.user_id} until {lease.expires_at.isoformat()}", field="id")
    if lease.ended_at is None:
        lease.ended_at, lease.end_reason = (now, "reviewed") if live else (min(now, lease.expires_at), "expired")
    version.review_lease_id, version.review_lease_expires_at = None, None


def returned_note(session: Session, case_id: int, author_id: int, readers_per_case: int) -> ReviewNote | None:
    """The review that sent the author's current reading of the case back, if one did."""
    version = repo.returned_version(session, case_id, author_id, readers_per_case)
    if version is None:
        return None
    names = repo.user_names(session, {version.reviewed_by} if version.reviewed_by else set())
    return ReviewNote(label_version_id=version.id, version=version.version, decision=version.review_state,
                      comment=version.review_comment, reviewer=names.get(version.reviewed_by or 0),
                      reviewed_at=version.reviewed_at)


# --- conditions the annotation queue applies -------------------------------------------------------


def returned_to(user_id: int | ColumnElement[int], readers_per_case: int | ColumnElement[int]) -> Any:
    """SQL on ``cases``: the user's current reading of the case was sent back for changes."""
    return exists().where(LabelVersion.case_id == Case.id, LabelVersion.author_id == user_id,
                          LabelVersion.review_state == "changes_requested", LabelVersion.consensus_of.is_(None),
                          repo.is_current(readers_per_case))


def read_by(user_id: int | ColumnElement[int]) -> Any:
    """SQL on ``cases``: the user authored a version of the case (nobody is handed a case twice)."""
    return exists().where(LabelVersion.case_id == Case.id, LabelVersion.author_id == user_id)


def returned_since(user_id: int | ColumnElement[int]) -> Any:
    """SQL: when the user's reading of the case was sent back (to order returned cases, oldest first)."""
    return (select(func.max(LabelVersion.reviewed_at))
            .where(LabelVersion.case_id == Case.id, LabelVersion.author_id == user_id,
                   LabelVersion.review_state == "changes_requested")
            .scalar_subquery())


# --- the review queue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewClaim:
    version: LabelVersion
    case: Case
    lease: ReviewLease


def lease_duration() -> dt.timedelta:
    return dt.timedelta(minutes=get_settings().lease_minutes)  # the annotation lease's TTL


def claim_review(session: Session, project_id: int, reviewer: User) -> ReviewClaim | None:
    """Lease the oldest submitted version of the project that the reviewer did not author."""
    require_reviewer(reviewer)
    project = projects.get_project(session, project_id)
    now = utcnow()
    version = repo.pick_submitted(session, project.id, reviewer.id, project.readers_per_case, now)
    if version is None:
        return None
    if version.review_lease_id is not None:
        stale = session.get(ReviewLease, version.review_lease_id)
        if stale is not None and stale.ended_at is None:
            stale.ended_at, stale.end_reason = min(stale.expires_at, now), "expired"
    lease = ReviewLease(token=secrets.token_urlsafe(24), label_version_id=version.id, user_id=reviewer.id,
                        created_at=now, expires_at=now + lease_duration())
    session.add(lease)
    session.flush()
    version.review_lease_id, version.review_lease_expires_at = lease.id, lease.expires_at
    case = session.get(Case, version.case_id)
    assert case is not None
    audit.record(session, "review.claim", user_id=reviewer.id, project_id=project.id, case_id=case.id,
                 label_version_id=version.id, review_lease_id=lease.id)
    return ReviewClaim(version, case, lease)


def _live_review_lease(session: Session, token: str, user: User, now: dt.datetime) -> tuple[ReviewLease, LabelVersion]:
    lease = repo.lease_by_token(session, token)
    if lease is None:
        raise NotFound("no review lease with this token", field="token")
    if lease.user_id != user.id and user.role != "admin":
        raise Forbidden("this review lease belongs to another reviewer", field="token")
    version = repo.get_version(session, lease.label_version_id, for_update=True)  # version row, then lease row
    assert version is not None
    session.refresh(lease, with_for_update={"key_share": True})
    if lease.ended_at is not None:
        raise LeaseExpired(f"the review lease ended ({lease.end_reason}) at {lease.ended_at.isoformat()}",
                           field="token")
    if lease.expires_at <= now or version.review_lease_id != lease.id:
        raise LeaseExpired(f"the review lease expired at {lease.expires_at.isoformat()}", field="token")
    return lease, version


def renew_review_lease(session: Session, token: str, user: User) -> ReviewLease:
    now = utcnow()
    lease, version = _live_review_lease(session, token, user, now)
    lease.expires_at = version.review_lease_expires_at = now + lease_duration()
    return lease


def release_review_lease(session: Session, token: str, user: User) -> ReviewLease:
    now = utcnow()
    lease, version = _live_review_lease(session, token, user, now)
    lease.ended_at, lease.end_reason = now, "released"
    version.review_lease_id, version.review_lease_expires_at = None, None
    audit.record(session, "review.release", user_id=user.id, label_version_id=version.id, review_lease_id=lease.id)
    return lease


# --- project settings ------------------------------------------------------------------------------


def update_settings(
    session: Session, store: BlobStore, project_id: int, user: User, *, train_on: str | None = None,
    readers_per_case: int | None = None, consensus_method: str | None = None,
) -> Project:
    """Change what trains and how many read each case; every labelled case is re-derived at once."""
    project = projects.lock_project(session, project_id)
    wanted = {"train_on": train_on, "readers_per_case": readers_per_case, "consensus_method": consensus_method}
    changes = {k: v for k, v in wanted.items() if v is not None and getattr(project, k) != v}
    for name, value in changes.items():
        setattr(project, name, value)
    if changes:
        audit.record(session, "project.review_settings", user_id=user.id, project_id=project.id, changes=changes)
        refresh_project(session, store, project)
    return project


# --- public views ----------------------------------------------------------------------------------


def versions_public(session: Session, versions: Sequence[LabelVersion]) -> list[LabelVersionPublic]:
    ids = {v.author_id for v in versions} | {v.reviewed_by for v in versions if v.reviewed_by is not None}
    names = repo.user_names(session, ids)
    return [LabelVersionPublic(
        id=v.id, case_id=v.case_id, version=v.version, author=names.get(v.author_id, str(v.author_id)),
        sha256=v.sha256, created_at=v.created_at, review_state=v.review_state, review_comment=v.review_comment,
        reviewer=names.get(v.reviewed_by) if v.reviewed_by is not None else None, reviewed_at=v.reviewed_at,
        consensus_of=list(v.consensus_of["version_ids"]) if v.consensus_of else None,
    ) for v in versions]


def get_version_public(session: Session, version_id: int) -> LabelVersionPublic:
    version = repo.get_version(session, version_id)
    if version is None:
        raise NotFound(f"label version {version_id} does not exist", field="id")
    return versions_public(session, [version])[0]


def case_versions_public(session: Session, case_id: int) -> list[LabelVersionPublic]:
    return versions_public(session, repo.versions_of(session, case_id))


def case_agreement(session: Session, case: Case) -> CaseAgreement:
    project = projects.get_project(session, case.project_id)
    versions = repo.versions_of(session, case.id)
    inputs = counted_readings(versions, project)
    made = _consensus_for(versions, _spec(project, inputs)) if project.readers_per_case > 1 else None
    rows = repo.agreements(session, [made.id]) if made is not None else []
    by_id = {v.id: v for v in versions}
    names = repo.user_names(session, {v.author_id for v in inputs})
    return CaseAgreement(
        case_id=case.id, method=project.consensus_method,
        readers=[Reading(reader=names[v.author_id], version=v.version, review_state=v.review_state) for v in inputs],
        consensus_version=made.version if made is not None else None,
        pairs=[PairAgreement(reader_a=names[r.author_a_id], reader_b=names[r.author_b_id],
                             version_a=by_id[r.version_a_id].version, version_b=by_id[r.version_b_id].version,
                             dice=r.dice, hd95=r.hd95) for r in rows],
    )


def project_agreement(session: Session, project_id: int) -> ProjectAgreement:
    """Per annotator: the mean agreement with the other readers of the cases they read (current consensus only)."""
    project = projects.get_project(session, project_id)
    current: list[int] = []
    for _, versions in repo.versions_of_project(session, project.id):
        made = _consensus_for(versions, _spec(project, counted_readings(versions, project)))
        if project.readers_per_case > 1 and made is not None:
            current.append(made.id)
    rows = repo.agreements(session, current)
    classes = list(project.labels)[1:]
    sums: dict[int, dict[str, dict[str, list[float]]]] = defaultdict(lambda: {"dice": defaultdict(list),
                                                                               "hd95": defaultdict(list)})
    cases: dict[int, set[int]] = defaultdict(set)
    pairs: dict[int, int] = defaultdict(int)
    for row in rows:
        for author in (row.author_a_id, row.author_b_id):
            cases[author].add(row.case_id)
            pairs[author] += 1
            for metric, values in (("dice", row.dice), ("hd95", row.hd95)):
                for name, value in values.items():
                    if value is not None:
                        sums[author][metric][name].append(float(value))
    names = repo.user_names(session, set(cases))

    def means(author: int, metric: str) -> dict[str, float | None]:
        found = sums[author][metric]
        return {c: (float(np.mean(found[c])) if found.get(c) else None) for c in classes}

    return ProjectAgreement(project_id=project.id, annotators=[
        AnnotatorAgreement(annotator=names[a], cases=len(cases[a]), pairs=pairs[a], mean_dice=means(a, "dice"),
                           mean_hd95=means(a, "hd95"))
        for a in sorted(cases, key=lambda a: names[a])])
