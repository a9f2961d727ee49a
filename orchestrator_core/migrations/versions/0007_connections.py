"""Connections, key pools and model groups (issue 10).

``connections`` holds named endpoints of a kind; the seeded connection of each kind (named after it, so
every model id of today keeps its prefix) needs no row until it is edited. ``api_keys.provider`` keeps its
name and now holds the key's connection name, which for every key stored so far is the seeded connection
of its provider: no row changes. ``api_keys`` gains the per-key pool state; ``model_groups`` is new.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_AREAS = ("connections", "groups")  # cache_generations rows, frozen as of this revision


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_url", sa.String(1000), nullable=True),
        sa.Column("options", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("key_mode", sa.String(16), nullable=False, server_default="ordered"),
        sa.Column("seeded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        sa.UniqueConstraint("name", name="uq_connections_name"),
    )
    op.create_table(
        "model_groups",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("members", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_model_groups"),
    )
    op.add_column("api_keys", sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.add_column("api_keys", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("api_keys", sa.Column("fault", sa.String(16), nullable=True))
    op.add_column("api_keys", sa.Column("cooling_until", sa.DateTime(), nullable=True))
    generations = sa.table("cache_generations", sa.column("area", sa.String), sa.column("generation", sa.BigInteger))
    op.bulk_insert(generations, [{"area": area, "generation": 0} for area in NEW_AREAS])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM cache_generations WHERE area IN ('connections', 'groups')"))
    with op.batch_alter_table("api_keys") as batch:
        for column in ("cooling_until", "fault", "last_error", "last_used_at", "position"):
            batch.drop_column(column)
    op.drop_table("model_groups")
    op.drop_table("connections")
