"""Scale: worker heartbeats (for /metrics), score shards (scoring spread over workers), training checkpoints, and
a partial index of skipped leases (a claim reads an annotator's skips, not their whole lease history).

Revision ID: 0011
Revises: 0010_dicomweb
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010_dicomweb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_worker_heartbeats"),
    )
    op.create_table(
        "score_shards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cycle_id", sa.Integer(), sa.ForeignKey("cycles.id", name="fk_score_shards_cycle_id_cycles"),
                  nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("case_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_score_shards"),
        sa.UniqueConstraint("cycle_id", "index", name="uq_score_shards_cycle_index"),
    )
    op.create_index("ix_score_shards_cycle_id", "score_shards", ["cycle_id"])
    op.add_column("cycles", sa.Column("checkpoint_key", sa.String(200), nullable=True))
    skipped = sa.text("end_reason = 'skipped'")
    op.create_index("ix_leases_user_skipped", "leases", ["user_id", "case_id", "ended_at"],
                    postgresql_where=skipped, sqlite_where=skipped)


def downgrade() -> None:
    op.drop_index("ix_leases_user_skipped", table_name="leases")
    op.drop_column("cycles", "checkpoint_key")
    op.drop_index("ix_score_shards_cycle_id", table_name="score_shards")
    op.drop_table("score_shards")
    op.drop_table("worker_heartbeats")
