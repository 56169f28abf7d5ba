"""Review and several readers: review states on label versions, review leases, reader agreement, project settings.

Label versions already stored become ``submitted`` (the server default of the new column), which is what
trains under the default ``train_on = submitted``: nothing changes for a project until an admin changes it.

Revision ID: 0009_review
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_review"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs, never a batch table copy: dropping a copied table that rows refer to fails on SQLite.
    op.add_column("projects", sa.Column("train_on", sa.String(16), nullable=False, server_default="submitted"))
    op.add_column("projects", sa.Column("readers_per_case", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("projects", sa.Column("consensus_method", sa.String(16), nullable=False, server_default="staple"))
    op.add_column("label_versions", sa.Column("review_state", sa.String(20), nullable=False,
                                              server_default="submitted"))
    op.add_column("label_versions", sa.Column("review_comment", sa.Text(), nullable=True))
    # No foreign key: SQLite can neither add one to an existing table nor drop a column that has one.
    op.add_column("label_versions", sa.Column("reviewed_by", sa.Integer(), nullable=True))
    op.add_column("label_versions", sa.Column("reviewed_at", sa.DateTime(), nullable=True))
    op.add_column("label_versions", sa.Column("consensus_of", sa.JSON(), nullable=True))
    op.add_column("label_versions", sa.Column("review_lease_id", sa.Integer(), nullable=True))
    op.add_column("label_versions", sa.Column("review_lease_expires_at", sa.DateTime(), nullable=True))
    op.create_index("ix_label_versions_review_state_created", "label_versions", ["review_state", "created_at"])
    op.create_table(
        "review_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("label_version_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_review_leases_label_version_id_label_versions"),
                  nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_review_leases_user_id_users"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_review_leases"),
        sa.UniqueConstraint("token", name="uq_review_leases_token"),
    )
    op.create_index("ix_review_leases_label_version_id", "review_leases", ["label_version_id"])
    op.create_index("ix_review_leases_user_id", "review_leases", ["user_id"])
    op.create_table(
        "reader_agreements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consensus_version_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_reader_agreements_consensus_version_id_label_versions"),
                  nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", name="fk_reader_agreements_case_id_cases"),
                  nullable=False),
        sa.Column("version_a_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_reader_agreements_version_a_id_label_versions"),
                  nullable=False),
        sa.Column("version_b_id", sa.Integer(),
                  sa.ForeignKey("label_versions.id", name="fk_reader_agreements_version_b_id_label_versions"),
                  nullable=False),
        sa.Column("author_a_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_reader_agreements_author_a_id_users"),
                  nullable=False),
        sa.Column("author_b_id", sa.Integer(), sa.ForeignKey("users.id", name="fk_reader_agreements_author_b_id_users"),
                  nullable=False),
        sa.Column("dice", sa.JSON(), nullable=False),
        sa.Column("hd95", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reader_agreements"),
    )
    op.create_index("ix_reader_agreements_consensus_version_id", "reader_agreements", ["consensus_version_id"])
    op.create_index("ix_reader_agreements_case_id", "reader_agreements", ["case_id"])


def downgrade() -> None:
    # Values the code before review does not know: a case waiting for a review counts as labelled again (its
    # versions stay), and reviewers become annotators. Consensus versions stay as the newest versions.
    op.execute("UPDATE cases SET status = 'labelled' WHERE status = 'in_review'")
    op.execute("UPDATE users SET role = 'annotator' WHERE role = 'reviewer'")
    op.drop_table("reader_agreements")
    op.drop_table("review_leases")
    op.drop_index("ix_label_versions_review_state_created", table_name="label_versions")
    # Native DROP COLUMN (SQLite >= 3.35), not a batch table copy.
    for column in ("review_lease_expires_at", "review_lease_id", "consensus_of", "reviewed_at", "reviewed_by",
                   "review_comment", "review_state"):
        op.drop_column("label_versions", column)
    for column in ("consensus_method", "readers_per_case", "train_on"):
        op.drop_column("projects", column)
