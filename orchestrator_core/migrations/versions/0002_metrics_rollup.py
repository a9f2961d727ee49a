"""Per-minute and per-hour rollups of call_metrics for the charts, backfilled from the rows already stored.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of store.tables.HISTOGRAM_BOUNDS_MS as of this revision: a migration must keep building
# the same schema when the code moves on (tests/store/test_rollup.py checks the two still agree).
BOUNDS_MS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500,
             10000, 15000, 20000, 30000, 60000, 120000)
LATENCY_BUCKETS = [f"lat_b{i:02d}" for i in range(len(BOUNDS_MS) + 1)]
TTFT_BUCKETS = [f"ttft_b{i:02d}" for i in range(len(BOUNDS_MS) + 1)]
DIMENSIONS = ["model", "provider", "outcome", "error_kind", "fallback_from", "streamed"]
SUMS = ["calls", "latency_ms_sum", "ttft_count", "ttft_ms_sum", "prompt_tokens_sum", "completion_tokens_sum",
        "first_attempts", *LATENCY_BUCKETS, *TTFT_BUCKETS]


def upgrade() -> None:
    for name, period in (("call_metrics_minute", "minute"), ("call_metrics_hour", "hour")):
        _create_rollup(name, period)
    op.execute(_backfill_minutes())
    op.execute(_backfill_hours())


def _create_rollup(name: str, period: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(period, sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_kind", sa.String(64), nullable=False),
        sa.Column("fallback_from", sa.String(255), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("ttft_count", sa.Integer(), nullable=False),
        sa.Column("ttft_ms_sum", sa.Float(), nullable=False),
        sa.Column("prompt_tokens_sum", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens_sum", sa.BigInteger(), nullable=False),
        sa.Column("first_attempts", sa.Integer(), nullable=False),
        *(sa.Column(column, sa.Integer(), nullable=False) for column in LATENCY_BUCKETS + TTFT_BUCKETS),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        sa.UniqueConstraint(period, *DIMENSIONS, name=f"uq_{name}_key"),
    )
    op.create_index(f"ix_{name}_{period}", name, [period])


def _backfill_minutes() -> sa.Insert:
    """INSERT ... SELECT ... GROUP BY over every stored call_metrics row, in SQL only."""
    raw = sa.table(
        "call_metrics",
        *(sa.column(name) for name in ("ts", "model", "provider", "outcome", "error_kind", "fallback_from",
                                       "streamed", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens")),
    )
    fallback_from = sa.func.coalesce(raw.c.fallback_from, "")
    rows = sa.select(
        (_floor(raw.c.ts / 60) * 60).label("minute"),
        raw.c.model,
        raw.c.provider,
        raw.c.outcome,
        sa.func.coalesce(raw.c.error_kind, "").label("error_kind"),
        fallback_from.label("fallback_from"),
        raw.c.streamed,
        raw.c.latency_ms,
        raw.c.ttft_ms,
        raw.c.prompt_tokens,
        raw.c.completion_tokens,
        sa.case((fallback_from == "", 1), else_=0).label("first"),
        _bucket(raw.c.latency_ms).label("lat_b"),
        _bucket(raw.c.ttft_ms).label("ttft_b"),  # NULL when the row has no ttft: counted in no bucket
    ).subquery()
    keys = [rows.c.minute, *(rows.c[name] for name in DIMENSIONS)]

    def total(value: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(value), 0)

    def in_bucket(column: Any, index: int) -> Any:
        return sa.func.sum(sa.case((column == index, 1), else_=0))

    sums = [
        sa.func.count().label("calls"),
        total(rows.c.latency_ms).label("latency_ms_sum"),
        sa.func.count(rows.c.ttft_ms).label("ttft_count"),
        total(rows.c.ttft_ms).label("ttft_ms_sum"),
        total(rows.c.prompt_tokens).label("prompt_tokens_sum"),
        total(rows.c.completion_tokens).label("completion_tokens_sum"),
        sa.func.sum(rows.c.first).label("first_attempts"),
        *(in_bucket(rows.c.lat_b, i).label(name) for i, name in enumerate(LATENCY_BUCKETS)),
        *(in_bucket(rows.c.ttft_b, i).label(name) for i, name in enumerate(TTFT_BUCKETS)),
    ]
    return _insert("call_metrics_minute", "minute", sa.select(*keys, *sums).group_by(*keys))


def _backfill_hours() -> sa.Insert:
    """The hour rollup as the sum of the minute rollup just built."""
    minutes = sa.table("call_metrics_minute", sa.column("minute", sa.BigInteger()),
                       *(sa.column(name) for name in [*DIMENSIONS, *SUMS]))
    # // is integer division on both backends; in a subquery so GROUP BY names the hour column instead
    # of repeating an expression whose parameters PostgreSQL would not see as the same.
    rows = sa.select((minutes.c.minute // 3600 * 3600).label("hour"), *(minutes.c[c] for c in DIMENSIONS + SUMS))
    source = rows.subquery()
    keys = [source.c.hour, *(source.c[name] for name in DIMENSIONS)]
    query = sa.select(*keys, *(sa.func.sum(source.c[name]).label(name) for name in SUMS)).group_by(*keys)
    return _insert("call_metrics_hour", "hour", query)


def _insert(name: str, period: str, query: sa.Select[Any]) -> sa.Insert:
    columns = [period, *DIMENSIONS, *SUMS]
    return sa.insert(sa.table(name, *(sa.column(c) for c in columns))).from_select(columns, query)


def _bucket(value: Any) -> Any:
    """Index of the first bound >= value, as store.rollup.bucket_index computes it in Python."""
    whens = [(value <= bound, i) for i, bound in enumerate(BOUNDS_MS)]
    return sa.case(*whens, (value.is_not(None), len(BOUNDS_MS)), else_=None)


def _floor(value: Any) -> Any:
    # SQLite's CAST truncates (the same as floor for the non-negative epoch times stored here) and old
    # SQLite builds have no FLOOR; PostgreSQL's CAST rounds, so it needs FLOOR first.
    if op.get_context().dialect.name == "sqlite":
        return sa.cast(value, sa.BigInteger)
    return sa.cast(sa.func.floor(value), sa.BigInteger)


def downgrade() -> None:
    for name, period in (("call_metrics_hour", "hour"), ("call_metrics_minute", "minute")):
        op.drop_index(f"ix_{name}_{period}", table_name=name)
        op.drop_table(name)
