"""Retraining cycles, model versions and per-case scores.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "cycles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", name="fk_cycles_project_id_projects"),
                  nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.String(40), nullable=False),
        sa.Column("warm_start", sa.Boolean(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("weights_key", sa.String(200), nullable=True),
        sa.Column("trained_case_ids", sa.JSON(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("ranking_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id", name="fk_cycles_created_by_users"),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cycles"),
    )
    op.create_index("ix_cycles_project_id", "cycles", ["project_id"])
    op.create_index("uq_cycles_one_active", "cycles", ["project_id"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(),
                  sa.ForeignKey("projects.id", name="fk_model_versions_project_id_projects"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cycle_id", sa.Integer(), sa.ForeignKey("cycles.id", name="fk_model_versions_cycle_id_cycles"),
                  nullable=False),
        sa.Column("weights_key", sa.String(200), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("trained_case_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("project_id", "version", name="uq_model_versions_project_version"),
    )
    op.create_index("ix_model_versions_project_id", "model_versions", ["project_id"])
    op.create_table(
        "case_scores",
        sa.Column("cycle_id", sa.Integer(), sa.ForeignKey("cycles.id", name="fk_case_scores_cycle_id_cycles"),
                  nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_case_scores_case_id_cases"),
                  nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("extras", sa.JSON(), nullable=False),
        sa.Column("prediction_key", sa.String(200), nullable=True),
        sa.Column("uncertainty_key", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("cycle_id", "case_id", name="pk_case_scores"),
    )
    op.create_index("ix_case_scores_case_id", "case_scores", ["case_id"])


def downgrade() -> None:
    op.drop_table("case_scores")
    op.drop_table("model_versions")
    op.drop_index("uq_cycles_one_active", "cycles")
    op.drop_table("cycles")
