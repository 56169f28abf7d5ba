"""Queue: rankings, ranking entries, leases; lease and queue flags on cases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rankings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", name="fk_rankings_project_id_projects"),
                  nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(40), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rankings"),
    )
    op.create_index("ix_rankings_project_id", "rankings", ["project_id"])
    op.create_table(
        "ranking_entries",
        sa.Column("ranking_id", sa.Integer(),
                  sa.ForeignKey("rankings.id", name="fk_ranking_entries_ranking_id_rankings"), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_ranking_entries_case_id_cases"),
                  nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("ranking_id", "case_id", name="pk_ranking_entries"),
    )
    op.create_index("ix_ranking_entries_case_id", "ranking_entries", ["case_id"])
    op.create_index("ix_ranking_entries_ranking_rank", "ranking_entries", ["ranking_id", "rank"])
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_leases_case_id_cases"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_leases_user_id_users"), nullable=False),
        sa.Column("ranking_id", sa.Integer(), sa.ForeignKey("rankings.id", name="fk_leases_ranking_id_rankings"),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("token", name="uq_leases_token"),
    )
    op.create_index("ix_leases_case_id", "leases", ["case_id"])
    op.create_index("ix_leases_user_id", "leases", ["user_id"])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("current_ranking_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_projects_current_ranking_id_rankings", "rankings", ["current_ranking_id"], ["id"])
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("excluded", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("lease_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch.create_foreign_key("fk_cases_lease_id_leases", "leases", ["lease_id"], ["id"])
    op.create_index("ix_cases_project_created", "cases", ["project_id", "created_at"])
    op.create_index("ix_cases_project_pinned", "cases", ["project_id", "pinned"])


def downgrade() -> None:
    op.drop_index("ix_cases_project_pinned", "cases")
    op.drop_index("ix_cases_project_created", "cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_constraint("fk_cases_lease_id_leases", type_="foreignkey")
        for column in ("lease_expires_at", "lease_id", "excluded", "pinned"):
            batch.drop_column(column)
    with op.batch_alter_table("projects") as batch:
        batch.drop_constraint("fk_projects_current_ranking_id_rankings", type_="foreignkey")
        batch.drop_column("current_ranking_id")
    for table in ("leases", "ranking_entries", "rankings"):
        op.drop_table(table)
