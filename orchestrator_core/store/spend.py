"""Spend: the SQL behind the cost charts and the budgets, read from the rollups' cost sums (store/rollup.py).

Rows whose cost is unknown add nothing to ``cost_usd_sum`` and are not counted in ``priced_calls``, so a
sum is what the priced calls cost and "cost per 1,000 calls" is over priced calls only. Ranges work on whole
minutes, as the other chart queries do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, literal, select

from ..errors import InputError
from . import rollup
from .db import Database
from .metrics import _floor

SpendKey = Literal["model", "provider"]
Period = Literal["day", "week", "month"]


def spend_by_provider(db: Database, since: float) -> dict[str, float]:
    """USD spent since a time, per connection (the provider column: the prefix of the model id)."""
    rows = rollup.covering(["provider", "cost_usd_sum"], since, None, lambda t: [t.c.cost_usd_sum > 0])
    query = select(rows.c.provider, func.sum(rows.c.cost_usd_sum)).group_by(rows.c.provider)
    with db.engine.connect() as conn:
        return {provider: float(total) for provider, total in conn.execute(query)}


def spend_total(db: Database, since: float, until: float | None = None) -> float:
    """USD spent by every priced call in [since, until)."""
    rows = rollup.covering(["cost_usd_sum"], since, until)
    with db.engine.connect() as conn:
        return float(conn.execute(select(func.coalesce(func.sum(rows.c.cost_usd_sum), 0.0))).scalar_one())


def spend_series(
    db: Database, since: float | None, until: float | None, bucket_s: float, by: SpendKey = "model"
) -> list[dict[str, Any]]:
    """Per time bucket and model (or connection): USD spent and the priced calls behind it."""
    if bucket_s <= 0:
        raise InputError(f"The time bucket must be positive; got {bucket_s} s.")
    whole_hours = float(bucket_s).is_integer() and int(bucket_s) % rollup.HOUR.seconds == 0
    rows = rollup.covering([by, "cost_usd_sum", "priced_calls"], since, until, lambda t: [t.c.priced_calls > 0],
                           hours=whole_hours)
    size = literal(float(bucket_s))
    source = select((_floor(db, rows.c.start / size) * size).label("bucket"), rows.c[by].label("key"),
                    rows.c.cost_usd_sum, rows.c.priced_calls).subquery()
    keys = (source.c.bucket, source.c.key)
    query = (select(*keys, func.sum(source.c.cost_usd_sum), func.sum(source.c.priced_calls))
             .group_by(*keys).order_by(*keys))
    with db.engine.connect() as conn:
        return [{"bucket": float(bucket), by: key, "cost_usd": float(cost), "priced_calls": int(calls)}
                for bucket, key, cost, calls in conn.execute(query)]


def spend_by_model(db: Database, since: float | None, until: float | None = None) -> list[dict[str, Any]]:
    """Per model, most spent first: attempts made, priced ones, USD, and USD per 1,000 priced attempts."""
    rows = rollup.covering(["model", "provider", "calls", "priced_calls", "cost_usd_sum"], since, until,
                           lambda t: [t.c.outcome != "skipped"])
    keys = (rows.c.model, rows.c.provider)
    query = select(*keys, func.sum(rows.c.calls), func.sum(rows.c.priced_calls),
                   func.sum(rows.c.cost_usd_sum)).group_by(*keys)
    with db.engine.connect() as conn:
        found = [
            {"model": model, "provider": provider, "calls": int(calls), "priced_calls": int(priced),
             "cost_usd": float(cost) if priced else None,
             "cost_per_1k_calls_usd": float(cost) * 1000 / int(priced) if priced else None}
            for model, provider, calls, priced, cost in conn.execute(query)
        ]
    return sorted(found, key=lambda r: (-(r["cost_usd"] or 0.0), r["model"]))


def fallback_costs(db: Database, since: float | None, until: float | None = None) -> list[dict[str, Any]]:
    """Answers given by a fallback, priced on both sides: what they cost and what the requested model would have.

    Per (the model it fell back from, the model that answered); saved_usd is positive when the fallback was
    cheaper.
    """
    rows = rollup.covering(["fallback_from", "model", "calls", "requested_cost_usd_sum", "compared_cost_usd_sum"],
                           since, until, lambda t: [t.c.fallback_from != "", t.c.outcome == "ok"])
    keys = (rows.c.fallback_from, rows.c.model)
    query = (select(*keys, func.sum(rows.c.calls), func.sum(rows.c.compared_cost_usd_sum),
                    func.sum(rows.c.requested_cost_usd_sum)).group_by(*keys).order_by(*keys))
    with db.engine.connect() as conn:
        return [
            {"source": source, "target": target, "answers": int(calls), "cost_usd": float(cost),
             "requested_cost_usd": float(requested), "saved_usd": float(requested) - float(cost)}
            for source, target, calls, cost, requested in conn.execute(query)
        ]


def period_start(period: Period, now: float) -> float:
    """Epoch seconds of the start of the current UTC day, ISO week (Monday) or calendar month."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.timestamp()
    if period == "week":
        return day.timestamp() - day.weekday() * 86400
    return day.replace(day=1).timestamp()
