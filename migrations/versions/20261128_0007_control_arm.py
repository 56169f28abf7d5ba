"""Control arm: per-project control fraction, seed and claim counter; the arm and served prediction of each lease.

Existing projects get the default fraction 0.1 and a random seed each; existing leases keep a null arm
(served before the arm was recorded).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Plain ADD / DROP COLUMN, no batch rebuild and no new foreign key: rebuilding ``leases`` or ``projects`` on
# SQLite drops a table other rows reference, which fails on a database in use. SQLite >= 3.35 drops columns
# natively. ``leases.model_version_id`` is a plain integer like ``rankings.model_version_id``.
def upgrade() -> None:
    op.add_column("projects", sa.Column("control_fraction", sa.Float(), nullable=False, server_default="0.1"))
    op.add_column("projects", sa.Column("control_seed", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("projects", sa.Column("claim_count", sa.Integer(), nullable=False, server_default="0"))
    projects = sa.table("projects", sa.column("id", sa.Integer()), sa.column("control_seed", sa.Integer()))
    conn = op.get_bind()
    for (project_id,) in conn.execute(sa.select(projects.c.id)).all():
        # One random seed per project, as new projects get: a shared constant would correlate their draws.
        conn.execute(sa.update(projects).where(projects.c.id == project_id)
                     .values(control_seed=secrets.randbelow(2**31)))
    op.add_column("leases", sa.Column("arm", sa.String(16), nullable=True))
    op.add_column("leases", sa.Column("claim_seq", sa.Integer(), nullable=True))
    op.add_column("leases", sa.Column("model_version_id", sa.Integer(), nullable=True))
    op.add_column("leases", sa.Column("prediction_key", sa.String(200), nullable=True))


def downgrade() -> None:
    for column in ("prediction_key", "model_version_id", "claim_seq", "arm"):
        op.drop_column("leases", column)
    for column in ("claim_count", "control_seed", "control_fraction"):
        op.drop_column("projects", column)
