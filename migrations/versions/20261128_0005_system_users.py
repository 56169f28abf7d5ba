"""System users: the bulk importer's account becomes role 'system' (no login, not an admin).

Before this revision `import-msd` created user 'importer' with the admin role, so a database
imported before its first start had an "admin" nobody could log in as, and `serve` bootstrapped none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only the account the importer created itself: one that was ever given a token is a person's.
    op.execute("UPDATE users SET role = 'system' WHERE name = 'importer' AND role = 'admin' "
               "AND NOT EXISTS (SELECT 1 FROM api_tokens WHERE api_tokens.user_id = users.id)")


def downgrade() -> None:
    op.execute("UPDATE users SET role = 'admin' WHERE role = 'system'")
