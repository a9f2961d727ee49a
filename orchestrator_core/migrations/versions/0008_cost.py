"""Cost of every call: cost columns on call_metrics, cost sums on the rollups, price overrides and budgets.

Rows stored before this revision keep a NULL cost ("unknown"): their prices at the time are not known here,
and a guess would rewrite history. The rollups' new sums start at 0 for the same rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies as of this revision (store/tables.py COST_SUMS, store/generations.py AREAS).
COST_SUMS = ("cost_usd_sum", "priced_calls", "requested_cost_usd_sum", "compared_cost_usd_sum")
NEW_AREAS = ("pricing", "spend")
ROLLUPS = ("call_metrics_minute", "call_metrics_hour")


def upgrade() -> None:
    with op.batch_alter_table("call_metrics") as batch:
        for name in ("input_cost_usd", "output_cost_usd", "cost_usd"):
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("price_source", sa.String(64), nullable=True))
        batch.add_column(sa.Column("requested_cost_usd", sa.Float(), nullable=True))
    for table in ROLLUPS:
        # The server default fills the rows already stored (and the writer always sets every sum). Adding
        # columns is a plain ALTER TABLE on SQLite too: no table copy, however many rows there are.
        with op.batch_alter_table(table) as batch:
            for name in COST_SUMS:
                kind = sa.Integer() if name == "priced_calls" else sa.Float()
                batch.add_column(sa.Column(name, kind, nullable=False, server_default="0"))
    op.create_table(
        "price_overrides",
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("input_per_mtok", sa.Float(), nullable=False),
        sa.Column("output_per_mtok", sa.Float(), nullable=False),
        sa.Column("cached_input_per_mtok", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_price_overrides"),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.UniqueConstraint("scope", "period", name="uq_budgets_scope_period"),
    )
    generations = sa.table("cache_generations", sa.column("area", sa.String()),
                           sa.column("generation", sa.BigInteger()))
    op.bulk_insert(generations, [{"area": area, "generation": 0} for area in NEW_AREAS])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM cache_generations WHERE area IN ('pricing', 'spend')"))
    op.drop_table("budgets")
    op.drop_table("price_overrides")
    for table in ROLLUPS:
        with op.batch_alter_table(table) as batch:
            for name in COST_SUMS:
                batch.drop_column(name)
    with op.batch_alter_table("call_metrics") as batch:
        for name in ("requested_cost_usd", "price_source", "cost_usd", "output_cost_usd", "input_cost_usd"):
            batch.drop_column(name)
