"""Small query helpers for DICOMweb sources, imports and SEG exports."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DicomSegExport, DicomwebImport, DicomwebSource


def sources(session: Session, project_id: int) -> list[DicomwebSource]:
    return list(session.scalars(select(DicomwebSource).where(DicomwebSource.project_id == project_id)
                                .order_by(DicomwebSource.id)))


def newest_source(session: Session, project_id: int) -> DicomwebSource | None:
    return session.scalar(select(DicomwebSource).where(DicomwebSource.project_id == project_id)
                          .order_by(DicomwebSource.id.desc()).limit(1))


def imports(session: Session, project_id: int) -> list[DicomwebImport]:
    return list(session.scalars(select(DicomwebImport).where(DicomwebImport.project_id == project_id)
                                .order_by(DicomwebImport.id.desc())))


def exports(session: Session, case_id: int) -> list[DicomSegExport]:
    return list(session.scalars(select(DicomSegExport).where(DicomSegExport.case_id == case_id)
                                .order_by(DicomSegExport.id.desc())))
