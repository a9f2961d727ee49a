"""app_meta: installation-wide facts, first of all a verifier of the secret that encrypts stored keys.

Without it, two processes on one PostgreSQL database started from different folders each made their
own secret.key and stored keys the other could never decrypt; now the first secret is recorded as a
Fernet token of a constant, and a process with another secret refuses to start.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_app_meta"),
    )


def downgrade() -> None:
    op.drop_table("app_meta")
