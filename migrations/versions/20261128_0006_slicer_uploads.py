"""Slicer uploads: the project setting that lets annotators add cases, and per-user image aliases.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch table copy cannot drop the old projects table of a SQLite database that
    # holds rows (its foreign keys refuse).
    op.add_column("projects", sa.Column("annotators_can_upload_cases", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.create_table(
        "image_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(),
                  sa.ForeignKey("projects.id", name="fk_image_aliases_project_id_projects"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_image_aliases_user_id_users"),
                  nullable=False),
        sa.Column("alias_hash", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_image_aliases_case_id_cases"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_image_aliases"),
        sa.UniqueConstraint("project_id", "user_id", "alias_hash", name="uq_image_aliases_project_user_alias"),
    )


def downgrade() -> None:
    op.drop_table("image_aliases")
    # Native DROP COLUMN (SQLite >= 3.35), not a batch table copy: dropping the copied projects table fails
    # the foreign keys of a database that holds rows.
    op.drop_column("projects", "annotators_can_upload_cases")
