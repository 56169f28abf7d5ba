"""Small query helpers for cases, patients and label versions."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Case, DicomReference, LabelVersion, Patient


def get_case(session: Session, case_id: int, *, for_update: bool = False) -> Case | None:
    stmt = select(Case).where(Case.id == case_id, Case.deleted_at.is_(None))
    if for_update:
        # populate_existing: the row read under the lock must replace a copy this session loaded
        # earlier, or a lease taken meanwhile by another transaction would be invisible here.
        stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
    return session.scalar(stmt)


def find_case_by_sha(session: Session, project_id: int, sha256: str) -> Case | None:
    return session.scalar(select(Case).where(Case.project_id == project_id, Case.sha256 == sha256))


def find_patient(session: Session, project_id: int, external_id_hash: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(Patient.project_id == project_id, Patient.external_id_hash == external_id_hash)
    )


def pseudonyms(session: Session, patient_ids: set[int]) -> dict[int, str]:
    if not patient_ids:
        return {}
    rows = session.execute(select(Patient.id, Patient.pseudonym).where(Patient.id.in_(patient_ids)))
    return {pid: pseudo for pid, pseudo in rows}


def latest_versions(session: Session, case_ids: list[int]) -> dict[int, int]:
    if not case_ids:
        return {}
    rows = session.execute(
        select(LabelVersion.case_id, func.max(LabelVersion.version))
        .where(LabelVersion.case_id.in_(case_ids))
        .group_by(LabelVersion.case_id)
    )
    return {cid: int(v) for cid, v in rows}


def list_cases(
    session: Session, project_id: int, status: str | None, split: str | None, limit: int, offset: int
) -> tuple[list[Case], int]:
    where = [Case.project_id == project_id, Case.deleted_at.is_(None)]
    if status:
        where.append(Case.status == status)
    if split:
        where.append(Case.split == split)
    total = session.scalar(select(func.count()).select_from(Case).where(*where)) or 0
    items = session.scalars(select(Case).where(*where).order_by(Case.id).limit(limit).offset(offset))
    return list(items), int(total)


def label_version(session: Session, case_id: int, version: int | None) -> LabelVersion | None:
    stmt = select(LabelVersion).where(LabelVersion.case_id == case_id)
    if version is not None:
        return session.scalar(stmt.where(LabelVersion.version == version))
    return session.scalar(stmt.order_by(LabelVersion.version.desc()).limit(1))


def dicom_reference(session: Session, case_id: int) -> DicomReference | None:
    return session.scalar(select(DicomReference).where(DicomReference.case_id == case_id))


def case_of_series(session: Session, project_id: int, series_instance_uid: str) -> int | None:
    """The case (deleted ones too) made from this DICOM series in the project."""
    return session.scalar(select(DicomReference.case_id).where(
        DicomReference.project_id == project_id, DicomReference.series_instance_uid == series_instance_uid))
