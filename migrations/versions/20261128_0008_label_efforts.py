"""Label efforts: per label version, the served prediction's Dice against the submitted mask and the working time.

Label versions uploaded before this revision get no effort row (their prediction was never recorded).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_efforts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_version_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_label_efforts_label_version_id_label_versions"),
                  nullable=False),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", name="fk_label_efforts_project_id_projects"),
                  nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_label_efforts_case_id_cases"),
                  nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_label_efforts_user_id_users"),
                  nullable=False),
        sa.Column("lease_id", sa.Integer(), sa.ForeignKey("leases.id", name="fk_label_efforts_lease_id_leases"),
                  nullable=True),
        sa.Column("arm", sa.String(16), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("prediction_key", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.String(300), nullable=True),
        sa.Column("working_s", sa.Float(), nullable=True),
        sa.Column("dice", sa.JSON(), nullable=True),
        sa.Column("predicted_voxels", sa.JSON(), nullable=True),
        sa.Column("label_voxels", sa.JSON(), nullable=True),
        sa.Column("voxels_changed", sa.BigInteger(), nullable=True),
        sa.Column("voxels_total", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_label_efforts"),
        sa.UniqueConstraint("label_version_id", name="uq_label_efforts_label_version_id"),
    )
    op.create_index("ix_label_efforts_project_status", "label_efforts", ["project_id", "status"])
    op.create_index("ix_label_efforts_case_id", "label_efforts", ["case_id"])
    op.create_index("ix_label_efforts_user_id", "label_efforts", ["user_id"])


def downgrade() -> None:
    op.drop_table("label_efforts")
