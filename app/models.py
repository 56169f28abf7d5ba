"""ORM models shared by the API, the worker and the CLI.

The schema itself is owned by the Alembic migrations in ``migrations/``; these classes must
match them (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def random_seed() -> int:
    return secrets.randbelow(2**31)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use UTC-aware datetimes")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # sha256 of the token: tokens are 256-bit random, so a plain hash cannot be brute-forced.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    modality: Mapped[str] = mapped_column(String(8))
    labels: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    current_ranking_id: Mapped[int | None] = mapped_column(
        ForeignKey("rankings.id", use_alter=True, name="fk_projects_current_ranking_id_rankings"),
        default=None,
    )
    # Admins always may add cases; annotators (from Slicer, a volume opened locally) only when this is set.
    annotators_can_upload_cases: Mapped[bool] = mapped_column(Boolean, default=False)
    # The random control arm: the probability that a claim is served from a seeded random order instead of
    # the ranking, the seed of that draw, and the number of claims so far (claim n draws from (seed, n)).
    control_fraction: Mapped[float] = mapped_column(Float, default=0.1)
    control_seed: Mapped[int] = mapped_column(Integer, default=random_seed)
    claim_count: Mapped[int] = mapped_column(Integer, default=0)
    # Review and several readers (app.review): which label versions count as labelled (submitted | approved),
    # how many distinct annotators read each case, and how their readings are combined (staple | majority_vote).
    train_on: Mapped[str] = mapped_column(String(16), default="submitted")
    readers_per_case: Mapped[int] = mapped_column(Integer, default=1)
    consensus_method: Mapped[str] = mapped_column(String(16), default="staple")


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("project_id", "external_id_hash", name="uq_patients_project_external"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(32), unique=True)
    # HMAC-SHA256(secret_key, external id): the hospital id itself is never stored.
    external_id_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256", name="uq_cases_project_sha256"),
        Index("ix_cases_project_created", "project_id", "created_at"),
        Index("ix_cases_project_pinned", "project_id", "pinned"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(200))
    shape: Mapped[list[Any]] = mapped_column(JSON)
    spacing: Mapped[list[Any]] = mapped_column(JSON)
    origin: Mapped[list[Any]] = mapped_column(JSON)
    direction: Mapped[list[Any]] = mapped_column(JSON)
    dtype: Mapped[str] = mapped_column(String(16))
    source_format: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="unlabelled", index=True)
    split: Mapped[str] = mapped_column(String(16), default="pool", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Queue state lives on the case row so that one row lock guards a claim (see queue service).
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_id: Mapped[int | None] = mapped_column(
        ForeignKey("leases.id", use_alter=True, name="fk_cases_lease_id_leases"), default=None
    )
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ImageAlias(Base):
    """The id a MONAI Label client gave an uploaded volume (Slicer: its node name), for that user only.

    Only a keyed hash of the id is stored: a node name may carry what the file was called.
    """

    __tablename__ = "image_aliases"
    __table_args__ = (
        UniqueConstraint("project_id", "user_id", "alias_hash", name="uq_image_aliases_project_user_alias"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    alias_hash: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


REVIEW_STATES = ("submitted", "approved", "changes_requested")


class LabelVersion(Base):
    __tablename__ = "label_versions"
    __table_args__ = (
        UniqueConstraint("case_id", "version", name="uq_label_versions_case_version"),
        Index("ix_label_versions_review_state_created", "review_state", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # submitted (on upload) -> approved | changes_requested, by a reviewer other than the author (app.review).
    review_state: Mapped[str] = mapped_column(String(20), default="submitted", server_default="submitted")
    review_comment: Mapped[str | None] = mapped_column(Text, default=None)
    # A user id; no foreign key because SQLite cannot add one to an existing table (migration 0009_review).
    reviewed_by: Mapped[int | None] = mapped_column(Integer, default=None)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # A consensus version (author: the system user 'consensus'): {"method", "version_ids"} of the readers'
    # versions it combines; null on a reader's own version.
    consensus_of: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The live review lease, on the version row so that one row lock guards a review claim (as cases.lease_id).
    review_lease_id: Mapped[int | None] = mapped_column(Integer, default=None)
    review_lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    action: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), default=None, index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), default=None, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Ranking(Base):
    """An immutable, published ordering of a project's cases from one scoring run."""

    __tablename__ = "rankings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "cold_start" | "model"
    strategy: Mapped[str] = mapped_column(String(40))
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    model_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RankingEntry(Base):
    __tablename__ = "ranking_entries"
    __table_args__ = (Index("ix_ranking_entries_ranking_rank", "ranking_id", "rank"),)
    ranking_id: Mapped[int] = mapped_column(ForeignKey("rankings.id"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True, index=True)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)


class Lease(Base):
    """History of claims; the live one is also referenced from ``cases.lease_id``."""

    __tablename__ = "leases"
    # A claim looks up the cases its annotator skipped: through this index it reads their skips only, not every
    # lease they ever held, so a claim does not slow down as an annotator's history grows.
    __table_args__ = (Index("ix_leases_user_skipped", "user_id", "case_id", "ended_at",
                            postgresql_where=text("end_reason = 'skipped'"),
                            sqlite_where=text("end_reason = 'skipped'")),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    ranking_id: Mapped[int | None] = mapped_column(ForeignKey("rankings.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    skip_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # How the claim was served (pinned | ranked | control | cold_start | unranked | skipped; None before
    # telemetry), its number in the project's claim sequence, and the model prediction the annotator starts
    # from: fixed at claim time, so the effort record compares the mask with exactly what was served.
    arm: Mapped[str | None] = mapped_column(String(16), default=None)
    claim_seq: Mapped[int | None] = mapped_column(Integer, default=None)
    model_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    prediction_key: Mapped[str | None] = mapped_column(String(200), default=None)


ACTIVE_CYCLE_STATES = ("queued", "running")


class Cycle(Base):
    """One retraining cycle: train → evaluate → score → publish. The job state lives here."""

    __tablename__ = "cycles"
    __table_args__ = (
        # At most one queued or running cycle per project, enforced by the database itself.
        Index("uq_cycles_one_active", "project_id", unique=True,
              postgresql_where=text("status IN ('queued', 'running')"),
              sqlite_where=text("status IN ('queued', 'running')")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str | None] = mapped_column(String(16), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    strategy: Mapped[str] = mapped_column(String(40))
    warm_start: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    weights_key: Mapped[str | None] = mapped_column(String(200), default=None)
    trained_case_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The latest training checkpoint of a running train phase: a redelivered phase resumes from it.
    checkpoint_key: Mapped[str | None] = mapped_column(String(200), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    # Written every few seconds by the worker while a phase runs: a silent worker is a dead one.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    model_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    ranking_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_model_versions_project_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycles.id"))
    weights_key: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    trained_case_ids: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CaseScore(Base):
    """What one cycle's scoring produced for one case; published rankings are built from these."""

    __tablename__ = "case_scores"
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycles.id"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prediction_key: Mapped[str | None] = mapped_column(String(200), default=None)
    uncertainty_key: Mapped[str | None] = mapped_column(String(200), default=None)


EFFORT_STATES = ("pending", "done", "no_prediction", "failed")


class LabelEffort(Base):
    """What one label version cost and how far it is from the prediction its author started from.

    Written with the label version: ``pending`` when there is a prediction to compare (the comparison runs
    after the upload's response, see app.campaign.service), else ``no_prediction`` with the reason in ``note``.
    Dice and voxel counts are keyed by class name; Dice is null for a class absent from both masks.
    """

    __tablename__ = "label_efforts"
    __table_args__ = (Index("ix_label_efforts_project_status", "project_id", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_version_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    lease_id: Mapped[int | None] = mapped_column(ForeignKey("leases.id"), default=None)
    arm: Mapped[str | None] = mapped_column(String(16), default=None)
    model_version_id: Mapped[int | None] = mapped_column(Integer, default=None)
    prediction_key: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(300), default=None)
    # Claim to upload of the lease (renewals included); null without a lease of the author.
    working_s: Mapped[float | None] = mapped_column(Float, default=None)
    dice: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    predicted_voxels: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    label_voxels: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    voxels_changed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    voxels_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    computed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class WorkerHeartbeat(Base):
    """When each Celery worker last reported itself alive (for /metrics; the container check uses a file)."""

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReviewLease(Base):
    """History of review claims; the live one is also referenced from ``label_versions.review_lease_id``."""

    __tablename__ = "review_leases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    label_version_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(16), default=None)  # reviewed | released | expired


class ReaderAgreement(Base):
    """Agreement of two readers of one case, computed with the consensus version that combined their readings.

    Dice and the 95th-percentile Hausdorff distance (mm) are keyed by class name (background left out); null
    where a class is absent from one or both masks.
    """

    __tablename__ = "reader_agreements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consensus_version_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    version_a_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"))
    version_b_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"))
    author_a_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author_b_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dice: Mapped[dict[str, Any]] = mapped_column(JSON)
    hd95: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ScoreShard(Base):
    """A slice of one cycle's unlabelled cases, scored by one task; the shards of a cycle feed its publish.

    ``worker`` is the last worker process that ran it; ``attempts`` counts deliveries (a redelivered shard
    scores only the cases that have no score yet); ``heartbeat_at`` is written while it runs, so a shard whose
    worker host went silent is sent to another worker (``app.cycles.service.take_over_lost_work``).
    """

    __tablename__ = "score_shards"
    __table_args__ = (UniqueConstraint("cycle_id", "index", name="uq_score_shards_cycle_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycles.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    case_ids: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done | stopped
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    scored: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class DicomReference(Base):
    """What a DICOM SEG of a DICOM-born case must reference (PACS imports and DICOM uploads alike).

    A table of its own so that no annotator-facing query reads it: only the SEG export and admins do.
    UIDs are identifiers of objects, kept on purpose; names, ids and dates of the source headers are not
    stored anywhere. ``instances`` and ``positions`` follow the case's slice order (index k is slice z = k).
    """

    __tablename__ = "dicom_references"
    __table_args__ = (
        UniqueConstraint("project_id", "series_instance_uid", name="uq_dicom_references_project_series"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instances: Mapped[list[Any]] = mapped_column(JSON)
    positions: Mapped[list[Any]] = mapped_column(JSON)
    orientation: Mapped[list[Any]] = mapped_column(JSON)
    pixel_spacing: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DicomwebSource(Base):
    """A project's DICOMweb endpoint (a PACS). Credentials are stored encrypted and never returned."""

    __tablename__ = "dicomweb_sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    base_url: Mapped[str] = mapped_column(String(500))
    auth: Mapped[str] = mapped_column(String(8))  # none | basic | bearer
    # Fernet token of the credentials' JSON, keyed from the secret key (app.dicomweb.credentials).
    credentials: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


JOB_STATES = ("queued", "running", "done", "failed")


class DicomwebImport(Base):
    """One PACS import (one case per series); its state, progress and per-series results live here."""

    __tablename__ = "dicomweb_imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("dicomweb_sources.id"))
    query: Mapped[dict[str, Any]] = mapped_column(JSON)
    allow_modality_mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    series_total: Mapped[int | None] = mapped_column(Integer, default=None)
    series_done: Mapped[int] = mapped_column(Integer, default=0)
    results: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class DicomSegExport(Base):
    """One label version sent to the project's DICOMweb source as a DICOM SEG (STOW-RS), and how it went."""

    __tablename__ = "dicom_seg_exports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    label_version_id: Mapped[int] = mapped_column(ForeignKey("label_versions.id"))
    source_id: Mapped[int] = mapped_column(ForeignKey("dicomweb_sources.id"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
