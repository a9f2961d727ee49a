"""The per-minute and per-hour rollups: kept equal to the raw rows by the writer and the migration, read by the charts."""

from __future__ import annotations

import importlib
import math
import random
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, event, func, insert, select

from orchestrator_core.errors import InputError
from orchestrator_core.store import Database, MetricRow, MetricsRecorder, metrics, rollup
from orchestrator_core.store.db import alembic_config, current_revision, head_revision
from orchestrator_core.store.tables import HISTOGRAM_BOUNDS_MS, LATENCY_BUCKETS, TTFT_BUCKETS, CallMetric

T0 = 1_700_000_000.0  # 22:13:20 UTC: neither on a minute nor on an hour
MODELS = ("openai:a", "ollama:b", "google:c")
KEY = ("model", "provider", "outcome", "error_kind", "fallback_from", "streamed")


def _bucket(value: float) -> int:
    """The bucket by plain comparison, independent of rollup's bisect."""
    return next((i for i, bound in enumerate(HISTOGRAM_BOUNDS_MS) if value <= bound), len(HISTOGRAM_BOUNDS_MS))


def _mixed_rows(count: int, start: float = T0, span_s: float = 3 * 3600, seed: int = 1) -> list[MetricRow]:
    """Successes, errors, skips and fallbacks, some streamed with a TTFT, latencies from 0 to 200 s."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        outcome = rng.choice(("ok", "ok", "ok", "ok", "error", "skipped"))
        streamed = rng.random() < 0.5
        rows.append(MetricRow(
            model=rng.choice(MODELS), outcome=outcome, latency_ms=rng.choice((rng.uniform(0, 300), rng.uniform(0, 2e5))),
            request_id=f"r{i}", ts=start + rng.uniform(0, span_s), streamed=streamed,
            error_kind=None if outcome == "ok" else rng.choice(("timeout", "rate_limit")),
            ttft_ms=rng.uniform(0, 900) if streamed and rng.random() < 0.8 else None,
            prompt_tokens=rng.choice((None, rng.randint(1, 500))), completion_tokens=rng.choice((None, 7)),
            fallback_from=(fallback := rng.choice((None, None, "openai:a"))),
            # Unknown (None) costs too: they must add nothing to the sums and not count as priced.
            cost_usd=(cost := rng.choice((None, round(rng.uniform(0, 0.02), 6)))),
            requested_cost_usd=rng.uniform(0, 0.05) if cost is not None and fallback and rng.random() < 0.7 else None,
        ))
    return rows


def _edge_rows() -> list[MetricRow]:
    """Values exactly on bucket bounds (upper bounds are inclusive), zero, and past the last bound."""
    return [MetricRow(model="openai:a", outcome="ok", latency_ms=value, ttft_ms=value, ts=T0 + i, request_id=f"e{i}",
                      streamed=True) for i, value in enumerate((0.0, 5.0, 5.000001, 35.0, 120000.0, 120000.5, 9e9))]


def _expected(raw: list[dict[str, Any]], period_s: int) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollup computed the obvious way from raw call_metrics rows."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for row in raw:
        values = {**row, "error_kind": row["error_kind"] or "", "fallback_from": row["fallback_from"] or ""}
        entry = sums[(math.floor(row["ts"] / period_s) * period_s, *(values[k] for k in KEY))]
        entry["calls"] += 1
        entry["latency_ms_sum"] += row["latency_ms"]
        entry[LATENCY_BUCKETS[_bucket(row["latency_ms"])]] += 1
        if row["ttft_ms"] is not None:
            entry["ttft_count"] += 1
            entry["ttft_ms_sum"] += row["ttft_ms"]
            entry[TTFT_BUCKETS[_bucket(row["ttft_ms"])]] += 1
        entry["prompt_tokens_sum"] += row["prompt_tokens"] or 0
        entry["completion_tokens_sum"] += row["completion_tokens"] or 0
        entry["first_attempts"] += 0 if row["fallback_from"] else 1
        if row["cost_usd"] is not None:
            entry["cost_usd_sum"] += row["cost_usd"]
            entry["priced_calls"] += 1
            if row["requested_cost_usd"] is not None:
                entry["requested_cost_usd_sum"] += row["requested_cost_usd"]
                entry["compared_cost_usd_sum"] += row["cost_usd"]
    return {key: {c: v for c, v in entry.items() if v} for key, entry in sums.items()}


def _stored(db: Database, tier: rollup.Tier) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollup rows as {key: {sum column: value}}, leaving out the zero counts."""
    table = tier.table
    key_columns = (tier.period, *KEY)
    with db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(table))]
    return {
        tuple(row[k] for k in key_columns): {c: v for c, v in row.items() if c not in (*key_columns, "id") and v}
        for row in rows
    }


def _assert_rollups_match(db: Database, raw: list[dict[str, Any]]) -> None:
    for tier in (rollup.MINUTE, rollup.HOUR):
        stored, expected = _stored(db, tier), _expected(raw, tier.seconds)
        assert stored.keys() == expected.keys()
        for key, sums in expected.items():
            assert stored[key] == pytest.approx(sums), key
            assert sum(stored[key].get(c, 0) for c in LATENCY_BUCKETS) == stored[key]["calls"]
            assert sum(stored[key].get(c, 0) for c in TTFT_BUCKETS) == stored[key].get("ttft_count", 0)


def _raw(db: Database) -> list[dict[str, Any]]:
    return list(metrics.iter_export(db))


def _rollup_calls(db: Database) -> tuple[int, int]:
    """Calls summed over the minute rollup and over the hour rollup."""
    with db.engine.connect() as conn:
        minute, hour = (conn.execute(select(func.sum(t.c.calls))).scalar_one() for t in (rollup.MINUTE.table,
                                                                                          rollup.HOUR.table))
    return minute, hour


@pytest.fixture
def recorder(db: Database) -> Any:
    rec = MetricsRecorder(db, first_backoff_s=0.001)
    yield rec
    rec.close()


def test_rollups_equal_the_raw_rows_after_a_flush(db: Database, recorder: MetricsRecorder) -> None:
    for row in _mixed_rows(600) + _edge_rows():
        recorder.record(row)
    assert recorder.flush()
    raw = _raw(db)
    assert len(raw) == 607
    _assert_rollups_match(db, raw)
    assert _rollup_calls(db) == (607, 607)


def test_bucket_upper_bounds_are_inclusive(db: Database, recorder: MetricsRecorder) -> None:
    for row in _edge_rows():
        recorder.record(row)
    assert recorder.flush()
    [sums] = _stored(db, rollup.MINUTE).values()
    lat = {c: n for c, n in sums.items() if c in LATENCY_BUCKETS}
    ttft = {c.replace("ttft", "lat"): n for c, n in sums.items() if c in TTFT_BUCKETS}
    # 0 and 5 in [0, 5] | 5.000001 in (5, 10] | 35 in (20, 35] | 120000 in (60000, 120000] | the rest overflow
    assert lat == ttft == {"lat_b00": 2, "lat_b01": 1, "lat_b03": 1, "lat_b25": 1, "lat_b26": 2}


def test_a_second_batch_increments_the_rows_of_the_same_minute(db: Database, recorder: MetricsRecorder) -> None:
    for latency in (3.0, 400.0):
        recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms=latency, ts=T0, prompt_tokens=5))
        assert recorder.flush()  # two transactions, one key
    [row] = _stored(db, rollup.MINUTE).values()
    assert row == {"calls": 2, "latency_ms_sum": 403.0, "prompt_tokens_sum": 10, "first_attempts": 2,
                   "lat_b00": 1, "lat_b10": 1}  # 3 ms in [0, 5], 400 ms in (300, 400]


def test_eight_recorders_writing_at_once_lose_no_call_in_the_rollups(db_url: str, db: Database) -> None:
    def produce(thread: int) -> None:
        own_db = Database.open(db_url)  # its own engine and writer: upserts of one key race each other
        with MetricsRecorder(own_db, first_backoff_s=0.001) as own:
            for i in range(250):
                own.record(MetricRow(model=MODELS[i % 2], outcome="ok", latency_ms=float(i), ts=T0 + i % 3,
                                     request_id=f"{thread}-{i}", streamed=bool(thread % 2)))
            assert own.flush(timeout=20)
        own_db.dispose()

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    raw = _raw(db)
    assert len(raw) == 2000
    assert _rollup_calls(db) == (2000, 2000)
    assert len(_stored(db, rollup.MINUTE)) == 4  # 2 models x streamed or not, all in one minute
    _assert_rollups_match(db, raw)


def test_a_failed_transaction_is_retried_whole_so_raw_and_rollups_stay_equal(
    db: Database, recorder: MetricsRecorder
) -> None:
    failures = {"left": 3}

    def locked(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The hour upsert runs last: the raw rows and minute rows of that transaction are written by then.
        if statement.startswith("INSERT INTO call_metrics_hour") and failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")

    event.listen(db.engine, "before_cursor_execute", locked)
    for row in _mixed_rows(50):
        recorder.record(row)
    assert recorder.flush(timeout=10)
    assert failures["left"] == 0
    raw = _raw(db)
    assert len(raw) == 50 and _rollup_calls(db) == (50, 50)
    _assert_rollups_match(db, raw)


def test_a_row_rollup_cannot_sum_is_skipped_alone(db: Database, recorder: MetricsRecorder) -> None:
    recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms=10.0, ts=T0))
    # SQLite would store the text in the REAL column, but it is no latency: neither table gets it.
    recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms="fast", ts=T0))  # type: ignore[arg-type]
    recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms=20.0, ts=T0))
    assert recorder.flush()
    assert [r["latency_ms"] for r in _raw(db)] == [10.0, 20.0]
    assert _rollup_calls(db) == (2, 2)


def test_other_dialects_update_then_insert(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollup, "_UPSERT_DIALECTS", {})  # as on a database without INSERT ... ON CONFLICT
    rows = [r.as_values() for r in _mixed_rows(30, span_s=300)]
    for _ in range(2):  # the first batch inserts every key, the second finds and increments each one
        with db.engine.begin() as conn:
            rollup.write_batch(conn, rows)
    raw = _raw(db)
    assert len(raw) == 60 and _rollup_calls(db) == (60, 60)
    _assert_rollups_match(db, raw)


def test_migration_0002_backfills_a_database_created_at_0001(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'at-0001.db'}"  # an empty file, not the migrated template
    command.upgrade(alembic_config(url=db_url), "0001")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(CallMetric), [_at_0001(r.as_values()) for r in _mixed_rows(500) + _edge_rows()])
    engine.dispose()

    db = Database.open(db_url)  # upgrades to head: 0002 builds and fills the rollups in SQL
    with db.engine.connect() as conn:
        assert current_revision(conn) == head_revision()  # 0002 and every later step
    _assert_rollups_match(db, _raw(db))
    with MetricsRecorder(db) as recorder:  # new rows land on the backfilled minutes and hours
        for row in _mixed_rows(100, seed=2):
            recorder.record(row)
    raw = _raw(db)
    assert len(raw) == 607
    _assert_rollups_match(db, raw)
    db.dispose()


def _at_0001(values: dict[str, Any]) -> dict[str, Any]:
    """A row as revision 0001 stores it: no cost columns yet (migration 0008), so their costs are unknown."""
    return {k: v for k, v in values.items() if k not in COST_COLUMNS}


COST_COLUMNS = ("input_cost_usd", "output_cost_usd", "cost_usd", "price_source", "requested_cost_usd")


def test_migration_keeps_the_bucket_bounds_of_the_tables() -> None:
    migration = importlib.import_module("orchestrator_core.migrations.versions.0002_metrics_rollup")
    assert tuple(migration.BOUNDS_MS) == HISTOGRAM_BOUNDS_MS
    assert tuple(migration.LATENCY_BUCKETS) == LATENCY_BUCKETS and tuple(migration.TTFT_BUCKETS) == TTFT_BUCKETS


def test_spans_read_whole_hours_from_the_hour_rollup_and_the_edges_from_minutes() -> None:
    hour = 1_700_002_800  # a whole hour (472223 * 3600)
    minute, hour_t = rollup.MINUTE, rollup.HOUR
    assert rollup.spans(hour - 90, hour + 7200 + 30) == [
        (hour_t, hour, hour + 7200), (minute, hour - 120, hour), (minute, hour + 7200, hour + 7260)
    ]  # since floored to its minute, until ceiled to its minute
    assert rollup.spans(hour, hour + 3600) == [(hour_t, hour, hour + 3600)]
    assert rollup.spans(hour + 60, hour + 3600) == [(minute, hour + 60, hour + 3600)]  # no whole hour inside
    assert rollup.spans(None, hour + 61) == [(hour_t, None, hour), (minute, hour, hour + 120)]
    assert rollup.spans(hour - 1, None) == [(hour_t, hour, None), (minute, hour - 60, hour)]
    assert rollup.spans(None, None) == [(hour_t, None, None)]
    assert rollup.spans(hour - 90, hour + 7200, hours=False) == [(minute, hour - 120, hour + 7200)]


def _widened(raw: list[dict[str, Any]], since: float | None, until: float | None) -> list[dict[str, Any]]:
    """The raw rows of every minute the range touches."""
    low = -math.inf if since is None else math.floor(since / 60) * 60
    high = math.inf if until is None else math.ceil(until / 60) * 60
    return [r for r in raw if low <= r["ts"] < high]


RANGES = [(None, None), (T0 + 1234.5, T0 + 9000.2), (T0 - 10, T0 + 3 * 3600), (T0 + 4000, None), (None, T0 + 100)]


def test_counting_queries_equal_the_raw_rows_of_the_minutes_in_range(db: Database, recorder: MetricsRecorder) -> None:
    for row in _mixed_rows(400):
        recorder.record(row)
    assert recorder.flush()
    raw = _raw(db)
    for since, until in RANGES:
        _check_counting_queries(db, _widened(raw, since, until), since, until)


def _check_counting_queries(db: Database, rows: list[dict[str, Any]], since: float | None, until: float | None) -> None:

    outcomes: dict[tuple[str, str, str | None], int] = defaultdict(int)
    flows: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        outcomes[(r["model"], r["outcome"], r["error_kind"])] += 1
        if r["fallback_from"]:
            flows[(r["fallback_from"], r["model"], r["outcome"])] += 1
    assert metrics.calls_by_outcome(db, since, until) == [
        {"model": m, "outcome": o, "error_kind": k, "calls": n} for (m, o, k), n in sorted(outcomes.items())
    ]
    assert metrics.fallback_flows(db, since, until) == [
        {"source": s, "target": t, "outcome": o, "calls": n} for (s, t, o), n in sorted(flows.items())
    ]
    ok = [r for r in rows if r["outcome"] == "ok"]
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
    for r in ok:
        counts[r["model"]][_bucket(r["latency_ms"])] += 1
    used = [i for i in range(len(LATENCY_BUCKETS)) if any(c[i] for c in counts.values())]
    assert metrics.latency_histogram(db, since, until) == [
        {"model": m, "bin_start_ms": rollup.bucket_edges(i)[0], "bin_end_ms": rollup.bucket_edges(i)[1],
         "count": counts[m][i]}
        for m in sorted(counts) for i in range(used[0], used[-1] + 1)
    ]
    if until is None:
        assert metrics.summary(db, since) == {
            "calls": sum(r["outcome"] != "skipped" for r in rows), "ok": len(ok),
            "errors": sum(r["outcome"] == "error" for r in rows), "skipped": sum(r["outcome"] == "skipped" for r in rows),
            "requests": sum(not r["fallback_from"] for r in rows),
            "fallbacks": len({r["request_id"] for r in ok if r["fallback_from"]}),
        }


def test_series_count_the_raw_rows_of_each_bucket(db: Database, recorder: MetricsRecorder) -> None:
    for row in _mixed_rows(400):
        recorder.record(row)
    assert recorder.flush()
    since, until = T0 + 1234.5, T0 + 3 * 3600 - 10  # whole hours in the middle, part minutes at the edges
    rows = _widened(_raw(db), since, until)
    for bucket_s in (60, 1800, 3600, 10800):  # 3600 and 10800 read whole hours from the hour rollup
        _check_series(db, rows, since, until, bucket_s)


def _check_series(db: Database, rows: list[dict[str, Any]], since: float, until: float, bucket_s: int) -> None:
    for series, column, wanted in (
        (metrics.latency_series(db, since, until, bucket_s), "latency_ms", lambda r: r["outcome"] == "ok"),
        (metrics.ttft_series(db, since, until, bucket_s), "ttft_ms", lambda r: r["ttft_ms"] is not None),
    ):
        groups: dict[tuple[float, str], list[float]] = defaultdict(list)
        for r in rows:
            if wanted(r):
                groups[(math.floor(math.floor(r["ts"] / 60) * 60 / bucket_s) * bucket_s, r["model"])].append(r[column])
        assert [(p["bucket"], p["model"], p["calls"]) for p in series] == [
            (bucket, model, len(values)) for (bucket, model), values in sorted(groups.items())
        ]
        for point in series:
            values = sorted(groups[(point["bucket"], point["model"])])
            for p, key in ((50, "p50_ms"), (95, "p95_ms")):
                exact = values[max(1, math.ceil(p * len(values) / 100)) - 1]  # nearest rank
                low, high = rollup.bucket_edges(rollup.bucket_index(exact))
                assert low <= point[key] <= high


def test_estimate_percentile_lands_in_the_bucket_of_the_exact_nearest_rank_value() -> None:
    rng = random.Random(5)
    for _ in range(200):
        values = sorted(rng.lognormvariate(5, 2) for _ in range(rng.randint(1, 60)))
        counts = [0] * len(LATENCY_BUCKETS)
        for v in values:
            counts[_bucket(v)] += 1
        for p in (1, 50, 95, 100):
            exact = values[max(1, math.ceil(p * len(values) / 100)) - 1]
            estimate = rollup.estimate_percentile(counts, p)
            assert estimate is not None
            if exact > HISTOGRAM_BOUNDS_MS[-1]:
                assert estimate == HISTOGRAM_BOUNDS_MS[-1]  # the overflow bucket: "at least the last bound"
            else:
                low, high = rollup.bucket_edges(_bucket(exact))
                assert low <= estimate <= high


def test_estimate_percentile_interpolates_inside_the_bucket() -> None:
    counts = [0] * len(LATENCY_BUCKETS)
    counts[6] = 4  # four values in (75, 100]
    assert rollup.estimate_percentile(counts, 50) == 87.5  # rank 2 of 4: half way through the bucket
    assert rollup.estimate_percentile(counts, 100) == 100.0
    assert rollup.estimate_percentile([0] * len(LATENCY_BUCKETS), 50) is None


def test_a_series_bucket_below_a_minute_holds_whole_minutes(db: Database, recorder: MetricsRecorder) -> None:
    for ts in (T0 + 45, T0 + 90):  # T0 is 20 s into its minute: both rows are in the next minute
        recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms=10.0, ts=ts))
    assert recorder.flush()
    assert [(p["bucket"], p["calls"]) for p in metrics.latency_series(db, None, None, 30)] == [(T0 + 40, 2)]
    with pytest.raises(InputError):
        metrics.latency_series(db, None, None, 0)
