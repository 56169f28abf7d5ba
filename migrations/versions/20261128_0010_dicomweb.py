"""DICOMweb interop: PACS sources, imports, SEG exports, and the DICOM references of DICOM-born cases.

``dicom_references`` holds what a DICOM SEG must reference (Study/Series/SOP Instance UIDs, Frame of
Reference UID, slice positions and order). It cannot be backfilled for DICOM cases ingested before this
revision: their headers were stripped at upload and never stored, so those cases have no DICOM origin
for SEG export (the API answers 409); re-import the series from the PACS to export SEG for them.

Revision ID: 0010_dicomweb
Revises: 0009_review
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_dicomweb"
down_revision = "0009_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_references",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_dicom_references_case_id_cases"),
                  nullable=False),
        sa.Column("project_id", sa.Integer(),
                  sa.ForeignKey("projects.id", name="fk_dicom_references_project_id_projects"), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("frame_of_reference_uid", sa.String(64), nullable=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("positions", sa.JSON(), nullable=False),
        sa.Column("orientation", sa.JSON(), nullable=False),
        sa.Column("pixel_spacing", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dicom_references"),
        sa.UniqueConstraint("case_id", name="uq_dicom_references_case_id"),
        sa.UniqueConstraint("project_id", "series_instance_uid", name="uq_dicom_references_project_series"),
    )
    op.create_table(
        "dicomweb_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(),
                  sa.ForeignKey("projects.id", name="fk_dicomweb_sources_project_id_projects"), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("auth", sa.String(8), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id", name="fk_dicomweb_sources_created_by_users"),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dicomweb_sources"),
    )
    op.create_index("ix_dicomweb_sources_project_id", "dicomweb_sources", ["project_id"])
    op.create_table(
        "dicomweb_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(),
                  sa.ForeignKey("projects.id", name="fk_dicomweb_imports_project_id_projects"), nullable=False),
        sa.Column("source_id", sa.Integer(),
                  sa.ForeignKey("dicomweb_sources.id", name="fk_dicomweb_imports_source_id_dicomweb_sources"),
                  nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("allow_modality_mismatch", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("series_total", sa.Integer(), nullable=True),
        sa.Column("series_done", sa.Integer(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id", name="fk_dicomweb_imports_created_by_users"),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dicomweb_imports"),
    )
    op.create_index("ix_dicomweb_imports_project_id", "dicomweb_imports", ["project_id"])
    op.create_table(
        "dicom_seg_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_dicom_seg_exports_case_id_cases"),
                  nullable=False),
        sa.Column("label_version_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_dicom_seg_exports_label_version_id_label_versions"),
                  nullable=False),
        sa.Column("source_id", sa.Integer(),
                  sa.ForeignKey("dicomweb_sources.id", name="fk_dicom_seg_exports_source_id_dicomweb_sources"),
                  nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(),
                  sa.ForeignKey("users.id", name="fk_dicom_seg_exports_created_by_users"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dicom_seg_exports"),
    )
    op.create_index("ix_dicom_seg_exports_case_id", "dicom_seg_exports", ["case_id"])


def downgrade() -> None:
    op.drop_table("dicom_seg_exports")
    op.drop_table("dicomweb_imports")
    op.drop_table("dicomweb_sources")
    op.drop_table("dicom_references")
