"""Ingest of case images and label masks, and the case lifecycle.

Order of work for every upload: validate fully in memory → write the blob → add rows. A failure
before the rows are flushed deletes a blob this request created, so a rejected upload leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pydicom
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.cases import repository as repo
from app.cases.imaging import (
    CanonicalImage,
    DicomReferences,
    Geometry,
    UploadedFile,
    read_case_upload,
    read_dicom_datasets,
    read_label_upload,
)
from app.cases.schemas import CasePublic, LabelVersionPublic
from app.cases.slicer_segmentation import read_slicer_segmentation
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidRequest, ModalityMismatch, NotFound, UploadTooLarge
from app.core.secret_key import patient_key
from app.core.storage import BlobStore, StoredBlob
from app.models import Case, DicomReference, LabelVersion, Lease, Patient, Project, User, utcnow
from app.review import service as review

SPLITS = ("pool", "validation", "test")


def check_upload_size(files: list[UploadedFile]) -> None:
    limit = get_settings().max_upload_bytes
    total = sum(len(f.data) for f in files)
    if total > limit:
        raise UploadTooLarge(
            f"upload is {total / 2**20:.1f} MiB; the limit is NEXTCASE_MAX_UPLOAD_MB={get_settings().max_upload_mb}",
            field="file",
        )


def hash_external_id(project_id: int, external_id: str) -> str:
    key = patient_key()
    return hmac.new(key, f"{project_id}:{external_id}".encode(), "sha256").hexdigest()


def get_or_create_patient(session: Session, project: Project, external_id: str) -> Patient:
    external_id = external_id.strip()
    if not external_id:
        raise InvalidRequest("patient must not be empty", field="patient")
    digest = hash_external_id(project.id, external_id)
    patient = repo.find_patient(session, project.id, digest)
    if patient is None:
        patient = Patient(project_id=project.id, external_id_hash=digest, pseudonym=f"PT-{secrets.token_hex(5)}")
        try:
            with session.begin_nested():  # a concurrent upload may create the same patient
                session.add(patient)
        except IntegrityError:
            patient = repo.find_patient(session, project.id, digest)
            assert patient is not None
    return patient


@contextmanager
def _blob_rolled_back_on_error(session: Session, store: BlobStore, blob: StoredBlob) -> Iterator[None]:
    """If the rows of a blob this request wrote are not stored, remove the blob once the transaction is over.

    Blobs are content-addressed, so a concurrent request with the same content may own it too: the
    blob is removed only if no committed row uses it, checked after the rollback (on SQLite a second
    transaction could not start while this one holds the write lock).
    """
    try:
        yield
    except BaseException as exc:
        if blob.created:
            event.listen(session, "after_rollback", lambda _: _discard_unreferenced(store, blob.key), once=True)
        if isinstance(exc, IntegrityError):  # a concurrent request stored the same row first
            raise Conflict("a concurrent upload stored the same data first; reload and retry", field="file") from exc
        raise


def _discard_unreferenced(store: BlobStore, key: str) -> None:
    with session_scope() as other:
        used = other.scalar(select(Case.id).where(Case.blob_key == key).limit(1)) or other.scalar(
            select(LabelVersion.id).where(LabelVersion.blob_key == key).limit(1))
    if not used:
        store.delete(key)


def decode_case(files: list[UploadedFile]) -> CanonicalImage:
    """Validate and canonicalise an upload; touches no database (call it before opening a transaction)."""
    check_upload_size(files)
    return read_case_upload(files)


def decode_dicom_series(datasets: list[pydicom.Dataset]) -> CanonicalImage:
    """Like :func:`decode_case` for the slices of one series already parsed (a PACS import)."""
    limit = get_settings().max_upload_bytes
    total = sum(len(ds.PixelData) for ds in datasets if "PixelData" in ds)
    if total > limit:
        raise UploadTooLarge(f"the series holds {total / 2**20:.1f} MiB of pixel data; the limit is "
                             f"NEXTCASE_MAX_UPLOAD_MB={get_settings().max_upload_mb}", field="file")
    return read_dicom_datasets(datasets)


def check_modality(project: Project, image: CanonicalImage, allow_mismatch: bool) -> bool:
    """Refuse a DICOM series of another modality than the project's; True when a mismatch was allowed.

    Training and inference normalise intensities by the project's modality (a CT window, or MR
    z-scores), so an MR series in a CT project would be silently mis-normalised. Volume files
    (NIfTI, NRRD, MHA) carry no modality and are not checked.
    """
    if image.source_format != "dicom" or image.modality == project.modality:
        return False
    if allow_mismatch:
        return True
    override = "send allow_modality_mismatch=true to ingest it anyway"
    if image.modality is None:
        raise ModalityMismatch("the DICOM series has no Modality (0008,0060), so it cannot be checked against "
                               f"project modality {project.modality}; {override}", field="file")
    raise ModalityMismatch(f"series modality {image.modality} does not match project modality {project.modality}; "
                           f"{override}", field="file")


def ingest_case(
    session: Session, store: BlobStore, project: Project, patient_external_id: str, image: CanonicalImage,
    user: User, *, allow_modality_mismatch: bool = False,
) -> Case:
    if not patient_external_id.strip():
        raise InvalidRequest("patient must not be empty", field="patient")
    overridden = check_modality(project, image, allow_modality_mismatch)  # before the blob: a refusal leaves nothing
    blob = store.put(image.nifti, "nii.gz")
    with _blob_rolled_back_on_error(session, store, blob):
        existing = repo.find_case_by_sha(session, project.id, blob.sha256)
        if existing is not None:
            raise Conflict(f"this image is already case {existing.id} of the project", field="file")
        patient = get_or_create_patient(session, project, patient_external_id)
        geo = image.geometry
        case = Case(
            project_id=project.id, patient_id=patient.id, sha256=blob.sha256, blob_key=blob.key,
            shape=list(geo.shape), spacing=list(geo.spacing), origin=list(geo.origin),
            direction=list(geo.direction), dtype=image.dtype, source_format=image.source_format,
        )
        session.add(case)
        session.flush()
        if image.references is not None:
            _add_references(session, case, image.references)
        audit.record(session, "case.create", user_id=user.id, project_id=project.id, case_id=case.id,
                     source_format=image.source_format, **({"series_modality": image.modality} if overridden else {}))
        return case


def _add_references(session: Session, case: Case, refs: DicomReferences) -> None:
    """Keep what a SEG of the case must reference; a series already in the project is refused (409)."""
    existing = repo.case_of_series(session, case.project_id, refs.series_instance_uid)
    if existing is not None:
        raise Conflict(f"this DICOM series is already case {existing} of the project", field="file")
    session.add(DicomReference(
        case_id=case.id, project_id=case.project_id, study_instance_uid=refs.study_instance_uid,
        series_instance_uid=refs.series_instance_uid, frame_of_reference_uid=refs.frame_of_reference_uid,
        sop_class_uid=refs.sop_class_uid, instances=list(refs.instances), positions=[list(p) for p in refs.positions],
        orientation=list(refs.orientation), pixel_spacing=list(refs.pixel_spacing),
    ))
    session.flush()


def dicom_references(session: Session, case: Case) -> DicomReference | None:
    """The DICOM origin of a case, for the SEG export and admins only (never in an annotator's response)."""
    return repo.dicom_reference(session, case.id)


def case_of_series(session: Session, project_id: int, series_instance_uid: str) -> int | None:
    """The project's case made from this DICOM series, if any (a series imported twice is one case)."""
    return repo.case_of_series(session, project_id, series_instance_uid)


def find_same_image(session: Session, project: Project, image: CanonicalImage) -> Case | None:
    """The project's case (deleted ones too) whose stored image has exactly these canonical bytes."""
    return repo.find_case_by_sha(session, project.id, hashlib.sha256(image.nifti).hexdigest())


def case_geometry(case: Case) -> Geometry:
    return Geometry(
        shape=(int(case.shape[0]), int(case.shape[1]), int(case.shape[2])),
        spacing=(float(case.spacing[0]), float(case.spacing[1]), float(case.spacing[2])),
        origin=(float(case.origin[0]), float(case.origin[1]), float(case.origin[2])),
        direction=tuple(float(v) for v in case.direction),
    )


def get_case(session: Session, case_id: int, *, for_update: bool = False) -> Case:
    case = repo.get_case(session, case_id, for_update=for_update)
    if case is None:
        raise NotFound(f"case {case_id} does not exist", field="case_id")
    return case


# Runs under the case row lock before the version is added; returns the lease the upload completed, if any.
LabelHook = Callable[[Session, Case, User], Lease | None]


@dataclass(frozen=True)
class StoredLabel:
    case: Case
    version: LabelVersion
    lease: Lease | None  # the live lease this upload completed


def decode_label(case_id: int, upload: UploadedFile) -> bytes:
    """Validate a mask against its case in a short transaction of its own, then outside any transaction.

    On SQLite every transaction holds the write lock; decoding a large mask must not hold it.
    """
    geometry, labels = _label_target(case_id, upload)
    return read_label_upload(upload, geometry, len(labels))


def decode_slicer_segmentation(case_id: int, upload: UploadedFile) -> bytes:
    """Like :func:`decode_label` for a Slicer .seg.nrrd, which may be cropped to its segments' extent."""
    geometry, labels = _label_target(case_id, upload)
    return read_slicer_segmentation(upload, geometry, labels)


def _label_target(case_id: int, upload: UploadedFile) -> tuple[Geometry, list[str]]:
    """The case's geometry and the project's labels, read in a short transaction of its own."""
    check_upload_size([upload])
    with session_scope() as peek:
        case = get_case(peek, case_id)
        project = peek.get(Project, case.project_id)
        assert project is not None
        return case_geometry(case), list(project.labels)


def upload_label(
    session: Session, store: BlobStore, case_id: int, data: bytes, user: User, before_save: LabelHook | None = None,
) -> StoredLabel:
    """Store an already validated mask (see decode_label) as a new label version.

    ``before_save`` lets the queue refuse or end a lease in the same transaction.
    """
    blob = store.put(data, "nii.gz")
    with _blob_rolled_back_on_error(session, store, blob):
        case = get_case(session, case_id, for_update=True)  # serialise concurrent uploads of one case
        lease = before_save(session, case, user) if before_save is not None else None
        latest = repo.latest_versions(session, [case.id]).get(case.id, 0)
        version = LabelVersion(case_id=case.id, version=latest + 1, author_id=user.id, sha256=blob.sha256,
                               blob_key=blob.key)
        session.add(version)
        session.flush()
        audit.record(session, "label.upload", user_id=user.id, project_id=case.project_id, case_id=case.id,
                     version=version.version)
        # The case's status (needs readers, in review, labelled) and, with several readers, their consensus.
        review.after_new_version(session, store, case)
        return StoredLabel(case, version, lease)


def set_split(session: Session, case: Case, split: str, user: User) -> Case:
    if split not in SPLITS:
        raise InvalidRequest(f"split must be one of {', '.join(SPLITS)}, got {split!r}", field="split")
    if case.split != split:
        audit.record(session, "case.split", user_id=user.id, project_id=case.project_id, case_id=case.id,
                     old=case.split, new=split)
        case.split = split
    return case


def delete_case(session: Session, case: Case, user: User) -> None:
    """Soft delete: the image and its labels stay stored (data once accepted is never lost)."""
    case.deleted_at = utcnow()
    audit.record(session, "case.delete", user_id=user.id, project_id=case.project_id, case_id=case.id)


def label_bytes(session: Session, store: BlobStore, case: Case, version: int | None) -> tuple[LabelVersion, bytes]:
    lv = repo.label_version(session, case.id, version)
    if lv is None:
        what = f"label version {version}" if version is not None else "label yet"
        raise NotFound(f"case {case.id} has no {what}", field="version")
    return lv, store.read(lv.blob_key)


def to_public(session: Session, cases: list[Case]) -> list[CasePublic]:
    names = repo.pseudonyms(session, {c.patient_id for c in cases})
    versions = repo.latest_versions(session, [c.id for c in cases])
    return [public_view(c, names[c.patient_id], versions.get(c.id)) for c in cases]


def public_view(c: Any, patient: str, latest_label_version: int | None) -> CasePublic:
    """The public view of a case (an ORM object, or a row with the ``cases`` columns), given its patient's pseudonym."""
    return CasePublic(
        id=c.id, project_id=c.project_id, patient=patient, shape=c.shape, spacing=c.spacing,
        origin=c.origin, direction=c.direction, dtype=c.dtype, sha256=c.sha256, source_format=c.source_format,
        status=c.status, split=c.split, pinned=c.pinned, excluded=c.excluded,
        latest_label_version=latest_label_version, created_at=c.created_at,
    )


def versions_public(session: Session, case_id: int) -> list[LabelVersionPublic]:
    return review.case_versions_public(session, case_id)


def version_public(session: Session, version: LabelVersion) -> LabelVersionPublic:
    return review.versions_public(session, [version])[0]
