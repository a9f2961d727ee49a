"""Change counters for the in-memory caches: one row per area, bumped in the same transaction as every write.

Processes keep the failure cache, the stored keys and the model registry in memory and read these few
rows at most every 250 ms to learn whether another process changed one of them (store/generations.py).

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of store.generations.AREAS as of this revision.
AREAS = ("failures", "keys", "registry")


def upgrade() -> None:
    table = op.create_table(
        "cache_generations",
        sa.Column("area", sa.String(32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("area", name="pk_cache_generations"),
    )
    op.bulk_insert(table, [{"area": area, "generation": 0} for area in AREAS])


def downgrade() -> None:
    op.drop_table("cache_generations")
