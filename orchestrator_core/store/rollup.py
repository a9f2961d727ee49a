"""The call-metric rollups: rows summed per minute and per hour, written with the rows, read by the charts.

The metrics writer calls ``write_batch`` inside one transaction, so call_metrics, call_metrics_minute
and call_metrics_hour always change together: a failed transaction is retried whole and they never
diverge. Each rollup row holds sums and histogram counts per key (its minute or hour, model, provider,
outcome, error kind, fallback source, streamed). Latency and TTFT are counted per log-spaced bucket
(``tables.HISTOGRAM_BOUNDS_MS``, upper bounds inclusive), from which ``estimate_percentile``
interpolates a percentile for any set of summed rows.

``covering`` answers a time range at minute granularity from as few rows as possible: the whole hours
inside it from call_metrics_hour (a week is ~170 hours), only the minutes at its edges from
call_metrics_minute. On SQLite with a million calls over a week, that is tens of thousands of rows
instead of the ~300,000 minute rows of the week.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Subquery, Table, and_, insert, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite

from .tables import (
    HISTOGRAM_BOUNDS_MS,
    LATENCY_BUCKETS,
    ROLLUP_DIMENSIONS,
    ROLLUP_SUMS,
    TTFT_BUCKETS,
    CallMetric,
    call_metrics_hour,
    call_metrics_minute,
)

# Both dialects' Insert share on_conflict_do_update / excluded; typed as Any so either fits.
_UPSERT_DIALECTS: dict[str, Any] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class Tier:
    """One rollup table: rows per period of `seconds`, keyed by the period's start in column `period`."""

    table: Table
    period: str
    seconds: int

    def start(self, ts: float) -> int:
        """Epoch seconds of the start of ts's period (floor, as the migration computes it in SQL)."""
        return math.floor(ts / self.seconds) * self.seconds

    def end(self, ts: float) -> int:
        """ts rounded up to a period boundary."""
        return -self.start(-ts)


MINUTE = Tier(call_metrics_minute, "minute", 60)
HOUR = Tier(call_metrics_hour, "hour", 3600)
_MINUTE_KEY = ("minute", *ROLLUP_DIMENSIONS)


# -- writing ------------------------------------------------------------------------------------------
def bucket_index(value_ms: float) -> int:
    """The histogram bucket of a value: the first bound >= value, or the overflow bucket past the last."""
    return bisect_left(HISTOGRAM_BOUNDS_MS, value_ms)


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Minute rollup rows summing `rows` (MetricRow.as_values() dicts); raises on a malformed row."""
    zeros = dict.fromkeys(ROLLUP_SUMS, 0)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        error_kind, fallback_from = row.get("error_kind") or "", row.get("fallback_from") or ""
        key = (MINUTE.start(row["ts"]), row["model"], row["provider"], row["outcome"], error_kind, fallback_from,
               bool(row.get("streamed")))
        sums = groups.get(key)
        if sums is None:
            sums = groups[key] = {**dict(zip(_MINUTE_KEY, key, strict=True)), **zeros}
        latency = float(row["latency_ms"])
        sums["calls"] += 1
        sums["latency_ms_sum"] += latency
        sums[LATENCY_BUCKETS[bucket_index(latency)]] += 1
        ttft = row.get("ttft_ms")
        if ttft is not None:
            ttft = float(ttft)
            sums["ttft_count"] += 1
            sums["ttft_ms_sum"] += ttft
            sums[TTFT_BUCKETS[bucket_index(ttft)]] += 1
        sums["prompt_tokens_sum"] += int(row.get("prompt_tokens") or 0)
        sums["completion_tokens_sum"] += int(row.get("completion_tokens") or 0)
        sums["first_attempts"] += 0 if fallback_from else 1
        _add_cost(sums, row.get("cost_usd"), row.get("requested_cost_usd"))
    return list(groups.values())


def _add_cost(sums: dict[str, Any], cost: Any, requested: Any) -> None:
    """Unknown costs (None) add nothing and are not priced calls: a sum is what the priced calls cost."""
    if cost is None:
        return
    sums["cost_usd_sum"] += float(cost)
    sums["priced_calls"] += 1
    if requested is not None:  # a fallback answer priced on both sides
        sums["requested_cost_usd_sum"] += float(requested)
        sums["compared_cost_usd_sum"] += float(cost)


def to_hours(minutes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hour rollup rows summing minute rollup rows."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in minutes:
        hour = HOUR.start(entry["minute"])
        key = (hour, *(entry[d] for d in ROLLUP_DIMENSIONS))
        sums = groups.get(key)
        if sums is None:
            groups[key] = {"hour": hour, **{c: entry[c] for c in ROLLUP_DIMENSIONS + ROLLUP_SUMS}}
            continue
        for column in ROLLUP_SUMS:
            sums[column] += entry[column]
    return list(groups.values())


def write_batch(conn: Connection, rows: list[dict[str, Any]], minutes: list[dict[str, Any]] | None = None) -> None:
    """Insert the raw rows and add them to both rollups, inside the caller's transaction on conn.

    minutes: ``aggregate(rows)`` when the caller has it already.
    """
    minutes = aggregate(rows) if minutes is None else minutes
    conn.execute(insert(CallMetric), rows)
    upsert(conn, MINUTE, minutes)
    upsert(conn, HOUR, to_hours(minutes))


def upsert(conn: Connection, tier: Tier, sums: list[dict[str, Any]]) -> None:
    """Add rollup rows to the stored ones: insert new keys, increment every sum of existing keys."""
    if not sums:
        return
    dialect_insert = _UPSERT_DIALECTS.get(conn.dialect.name)
    if dialect_insert is None:
        _update_then_insert(conn, tier, sums)
        return
    conn.execute(_upsert_statement(conn.dialect.name, tier), sums)


@functools.cache
def _upsert_statement(dialect: str, tier: Tier) -> Any:
    # Built once per dialect and tier: building its ~60 column updates cost more per batch than writing it,
    # and the metrics writer holds the GIL against the calling threads while it builds.
    table = tier.table
    statement = _UPSERT_DIALECTS[dialect](table)
    return statement.on_conflict_do_update(
        index_elements=[table.c[tier.period], *(table.c[d] for d in ROLLUP_DIMENSIONS)],
        set_={name: table.c[name] + statement.excluded[name] for name in ROLLUP_SUMS},
    )


def _update_then_insert(conn: Connection, tier: Tier, sums: list[dict[str, Any]]) -> None:
    # Other dialects have no portable upsert: increment the row, and insert it when none matched. If
    # another process inserts the same key in between, the unique constraint fails this transaction;
    # the writer then writes the batch row by row, and the update finds the row.
    table = tier.table
    for entry in sums:
        match = and_(*(table.c[k] == entry[k] for k in (tier.period, *ROLLUP_DIMENSIONS)))
        increment = update(table).where(match).values({n: table.c[n] + entry[n] for n in ROLLUP_SUMS})
        if not conn.execute(increment).rowcount:
            conn.execute(insert(table), [entry])


# -- reading ------------------------------------------------------------------------------------------
Where = Callable[[Table], Sequence[ColumnElement[bool]]]


def spans(since: float | None, until: float | None, *, hours: bool = True) -> list[tuple[Tier, int | None, int | None]]:
    """Which rollup covers which part of [since, until), widened to whole minutes (None: unbounded).

    Whole hours come from HOUR, the minutes before the first and after the last whole hour from MINUTE;
    with hours=False everything comes from MINUTE.
    """
    low = None if since is None else MINUTE.start(since)
    high = None if until is None else MINUTE.end(until)
    first_hour = None if low is None else HOUR.end(low)
    last_hour = None if high is None else HOUR.start(high)
    if not hours or (first_hour is not None and last_hour is not None and first_hour >= last_hour):
        return [(MINUTE, low, high)]
    parts: list[tuple[Tier, int | None, int | None]] = [(HOUR, first_hour, last_hour)]
    if low is not None and first_hour is not None and low < first_hour:
        parts.append((MINUTE, low, first_hour))
    if high is not None and last_hour is not None and last_hour < high:
        parts.append((MINUTE, last_hour, high))
    return parts


def covering(
    columns: Sequence[str], since: float | None, until: float | None, where: Where = lambda _: (), *, hours: bool = True
) -> Subquery:
    """Rollup rows covering [since, until) as one subquery: "start" (their minute or hour) and `columns`."""
    parts = []
    for tier, low, high in spans(since, until, hours=hours):
        table = tier.table
        start = table.c[tier.period]
        conditions = list(where(table))
        if low is not None:
            conditions.append(start >= low)
        if high is not None:
            conditions.append(start < high)
        parts.append(select(start.label("start"), *(table.c[c] for c in columns)).where(*conditions))
    return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()


def estimate_percentile(counts: Sequence[int], p: float) -> float | None:
    """The p-th percentile from bucket counts, interpolated linearly inside its bucket (None if empty).

    The estimate lies in the bucket that holds the exact nearest-rank value. A percentile in the
    overflow bucket is reported as the last bound: the histogram only knows it is at least that.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = p / 100 * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(HISTOGRAM_BOUNDS_MS):
                return float(HISTOGRAM_BOUNDS_MS[-1])
            low, high = bucket_edges(index)
            return low + (high - low) * max(rank - seen, 0.0) / count
        seen += count
    return float(HISTOGRAM_BOUNDS_MS[-1])  # only for p > 100


def bucket_edges(index: int) -> tuple[float, float]:
    """(start, end) in ms of a histogram bucket; the overflow bucket is given the width of its start."""
    low = float(HISTOGRAM_BOUNDS_MS[index - 1]) if index else 0.0
    high = float(HISTOGRAM_BOUNDS_MS[index]) if index < len(HISTOGRAM_BOUNDS_MS) else 2 * low
    return low, high
