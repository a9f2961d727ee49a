"""MetricsRecorder (queued, batched, never loses a row) and the SQL aggregations for the charts."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from orchestrator_core.store import Database, MetricRow, MetricsRecorder, metrics, rollup
from orchestrator_core.store.tables import CallMetric
from orchestrator_core.types import Attempt

REPO = Path(__file__).resolve().parents[2]


def _count(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CallMetric)).scalar_one()


def _ok(model: str, latency: float, ts: float, **extra: Any) -> MetricRow:
    return MetricRow(model=model, outcome="ok", latency_ms=latency, ts=ts, request_id=f"r{ts}-{model}", **extra)


@pytest.fixture
def recorder(db: Database) -> Any:
    rec = MetricsRecorder(db, first_backoff_s=0.001)
    yield rec
    rec.close()


@pytest.fixture
def seeded(db: Database, recorder: MetricsRecorder) -> Database:
    """openai:a ok 10..100 ms (shuffled), two errors and one skip; ollama:b ok 5, 7, 9 ms as a fallback."""
    for latency in (70, 10, 100, 40, 20, 90, 30, 60, 80, 50):
        recorder.record(_ok("openai:a", latency, ts=1000 + latency))
    recorder.record(MetricRow(model="openai:a", outcome="error", latency_ms=3, ts=2000, request_id="q1",
                              error_kind="rate_limit", error="slow down"))
    recorder.record(MetricRow(model="openai:a", outcome="error", latency_ms=4, ts=2100, request_id="q2",
                              error_kind="auth", error="bad key"))
    recorder.record(MetricRow(model="openai:a", outcome="skipped", latency_ms=0, ts=2200, request_id="q3",
                              error_kind="cooling_down"))
    for latency, request in ((9, "q1"), (5, "q2"), (7, "q3")):
        recorder.record(MetricRow(model="ollama:b", outcome="ok", latency_ms=latency, ts=2000 + latency,
                                  request_id=request, requested_model="openai:a", fallback_from="openai:a"))
    assert recorder.flush()
    return db


def test_record_then_flush_writes_the_row_with_defaults_filled(db: Database, recorder: MetricsRecorder) -> None:
    before = time.time()
    recorder.record(MetricRow(model="anthropic:claude-haiku-4-5", outcome="ok", latency_ms=812.5, request_id="r1",
                              ttft_ms=120.0, prompt_tokens=12, completion_tokens=34, streamed=True))
    assert recorder.flush()
    rows = list(metrics.iter_export(db))
    assert len(rows) == 1
    row = rows[0]
    assert row["provider"] == "anthropic" and row["requested_model"] == "anthropic:claude-haiku-4-5"
    assert (row["latency_ms"], row["ttft_ms"], row["prompt_tokens"], row["completion_tokens"]) == (812.5, 120.0, 12, 34)
    assert row["streamed"] is True and before <= row["ts"] <= time.time()


def test_from_attempt_copies_the_attempt() -> None:
    attempt = Attempt(model="ollama:llama3.2:3b", outcome="error", latency_ms=15.0, error_kind="timeout",
                      error="read timed out", fallback_from="openai:gpt-4.1-mini")
    row = MetricRow.from_attempt(attempt, request_id="abc", requested_model="openai:gpt-4.1-mini", streamed=True)
    values = row.as_values()
    assert values["provider"] == "ollama" and values["fallback_from"] == "openai:gpt-4.1-mini"
    assert (values["error_kind"], values["error"], values["streamed"]) == ("timeout", "read timed out", True)


def test_record_costs_well_under_a_tenth_of_a_millisecond(recorder: MetricsRecorder) -> None:
    rows = [_ok("openai:a", 1.0, ts=float(i)) for i in range(5000)]
    started = time.perf_counter()
    for row in rows:
        recorder.record(row)
    per_call = (time.perf_counter() - started) / len(rows)
    assert per_call < 0.0001
    assert recorder.flush(timeout=20)


def test_eight_threads_of_250_records_write_exactly_2000_rows(db: Database, recorder: MetricsRecorder) -> None:
    def produce(thread: int) -> None:
        for i in range(250):
            recorder.record(MetricRow(model="openai:a", outcome="ok", latency_ms=1.0, request_id=f"{thread}-{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorder.flush(timeout=20)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count(CallMetric.request_id.distinct()))).scalar_one() == 2000
    assert _count(db) == 2000


def test_close_writes_what_is_queued_and_stops_the_writer(db: Database) -> None:
    recorder = MetricsRecorder(db)
    for i in range(100):
        recorder.record(_ok("openai:a", 1.0, ts=float(i)))
    recorder.close()
    assert _count(db) == 100
    assert not recorder._thread.is_alive()
    recorder.record(_ok("openai:a", 1.0, ts=500.0))  # late rows are still written, synchronously
    assert _count(db) == 101


def test_rows_queued_at_interpreter_exit_are_written(db_url: str, db: Database) -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from orchestrator_core.store import Database, MetricsRecorder, MetricRow;"
        "r = MetricsRecorder(Database.open(sys.argv[2]));"
        "[r.record(MetricRow(model='openai:a', outcome='ok', latency_ms=1.0)) for _ in range(50)]"
    )  # no flush, no close: the atexit hook must write them
    done = subprocess.run([sys.executable, "-c", script, str(REPO), db_url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert _count(db) == 50


def test_a_failed_write_is_retried_and_no_row_is_lost(
    db: Database, recorder: MetricsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    failures = {"left": 4}

    def locked(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO call_metrics") and failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")

    event.listen(db.engine, "before_cursor_execute", locked)
    caplog.set_level(logging.INFO, logger="orchestrator_core.metrics")
    for i in range(10):
        recorder.record(_ok("openai:a", float(i), ts=float(i)))
    assert recorder.flush(timeout=10)
    assert failures["left"] == 0
    assert _count(db) == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failed 3 times (database is locked)" in warnings[0]


def test_a_row_the_database_refuses_is_skipped_without_blocking_the_others(
    db: Database, recorder: MetricsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.record(_ok("openai:a", 1.0, ts=1.0))
    recorder.record(MetricRow(model="openai:a", outcome=None, latency_ms=1.0))  # type: ignore[arg-type]
    recorder.record(MetricRow(model=None, outcome="ok", latency_ms=1.0))  # type: ignore[arg-type]
    recorder.record(_ok("openai:a", 2.0, ts=2.0))
    assert recorder.flush()
    assert _count(db) == 2
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_model_stats_counts_percentiles_and_last_error(seeded: Database) -> None:
    stats = metrics.model_stats(seeded)
    a, b = stats["openai:a"], stats["ollama:b"]
    assert (a.calls, a.ok, a.errors) == (12, 10, 2)  # the skipped attempt is not a call
    assert a.success_rate == pytest.approx(10 / 12)
    # Nearest rank over 10 values: p50 is the 5th (50 ms), p95 the 10th (100 ms).
    assert (a.p50_ms, a.p95_ms, a.median_latency_ms) == (50.0, 100.0, 50.0)
    assert (a.last_error_kind, a.last_error) == ("auth", "bad key")
    assert a.last_error_at == datetime.fromtimestamp(2100, UTC)
    assert a.last_call_at == datetime.fromtimestamp(2100, UTC)
    # Over 3 values: p50 is the 2nd (7 ms), p95 the 3rd (9 ms).
    assert (b.calls, b.p50_ms, b.p95_ms, b.last_error) == (3, 7.0, 9.0, None)


def test_model_stats_since_only_counts_newer_calls(seeded: Database) -> None:
    stats = metrics.model_stats(seeded, since=1060)
    a = stats["openai:a"]
    assert (a.calls, a.ok) == (7, 5)  # 60..100 ms and the two errors
    assert (a.p50_ms, a.p95_ms) == (80.0, 100.0)
    assert metrics.model_stats(seeded, since=5000) == {}


def test_table_stats_match_model_stats_with_estimated_percentiles(seeded: Database) -> None:
    exact, estimated = metrics.model_stats(seeded), metrics.table_stats(seeded)
    assert set(estimated) == set(exact)
    for model, want in exact.items():
        got = estimated[model]
        assert (got.calls, got.ok, got.errors, got.success_rate) == (want.calls, want.ok, want.errors, want.success_rate)
        assert (got.last_error_kind, got.last_error, got.last_error_at) == (want.last_error_kind, want.last_error,
                                                                             want.last_error_at)
        assert got.last_call_at is not None and want.last_call_at is not None
        assert got.last_call_at >= want.last_call_at  # the newest attempt: a skip counts there
        assert got.p50_ms is not None and want.p50_ms is not None and _in_bucket_of(got.p50_ms, want.p50_ms)
        assert got.p95_ms is not None and want.p95_ms is not None and _in_bucket_of(got.p95_ms, want.p95_ms)
    # Rollups hold whole minutes: a since inside a minute counts that whole minute (the page's since is whole).
    assert metrics.table_stats(seeded, since=1060)["openai:a"].calls == metrics.model_stats(seeded, 1020)["openai:a"].calls
    assert metrics.table_stats(seeded, since=5000) == {}


def _in_bucket_of(estimate: float, exact: float) -> bool:
    """The histogram estimate lies in the log bucket that holds the exact nearest-rank value."""
    low, high = rollup.bucket_edges(rollup.bucket_index(exact))
    return low <= estimate <= high


def test_latency_series_buckets_successful_attempts(db: Database, recorder: MetricsRecorder) -> None:
    for ts, latency in ((120, 10), (130, 30), (170, 20), (185, 5)):
        recorder.record(_ok("openai:a", latency, ts=ts))
    recorder.record(MetricRow(model="openai:a", outcome="error", latency_ms=999, ts=125))
    assert recorder.flush()
    first, second = metrics.latency_series(db, None, None, 60)
    assert (first["bucket"], first["model"], first["calls"]) == (120.0, "openai:a", 3)  # the error is left out
    # Exact nearest rank: p50 = 20 ms in (10, 20], p95 = 30 ms in (20, 35]; interpolated inside those buckets.
    assert _in_bucket_of(first["p50_ms"], 20.0) and _in_bucket_of(first["p95_ms"], 30.0)
    assert (first["p50_ms"], first["p95_ms"]) == (pytest.approx(15.0), pytest.approx(32.75))
    assert (second["bucket"], second["calls"], second["p50_ms"], second["p95_ms"]) == (180.0, 1, 2.5, 4.75)
    assert [r["bucket"] for r in metrics.latency_series(db, 100, 180, 60)] == [120.0]


def test_ttft_series_uses_only_rows_that_measured_it(db: Database, recorder: MetricsRecorder) -> None:
    recorder.record(_ok("openai:a", 100, ts=10, ttft_ms=40.0))
    recorder.record(_ok("openai:a", 100, ts=20, ttft_ms=60.0))
    recorder.record(_ok("openai:a", 100, ts=30))
    assert recorder.flush()
    [point] = metrics.ttft_series(db, 0, 100, 3600)
    assert (point["bucket"], point["model"], point["calls"]) == (0.0, "openai:a", 2)
    assert _in_bucket_of(point["p50_ms"], 40.0) and _in_bucket_of(point["p95_ms"], 60.0)
    assert (point["p50_ms"], point["p95_ms"]) == (50.0, 72.5)


def test_latency_histogram_uses_the_log_buckets_shared_by_all_models(seeded: Database) -> None:
    bins = metrics.latency_histogram(seeded, None, None, bins=5)  # bins is ignored: the rollup's buckets
    # From the first to the last bucket any model uses: 5 ms (ollama:b) .. 100 ms (openai:a).
    edges = [(b["bin_start_ms"], b["bin_end_ms"]) for b in bins if b["model"] == "openai:a"]
    assert edges == [(0.0, 5.0), (5.0, 10.0), (10.0, 20.0), (20.0, 35.0), (35.0, 50.0), (50.0, 75.0), (75.0, 100.0)]
    a = [b["count"] for b in bins if b["model"] == "openai:a"]
    assert a == [0, 1, 1, 1, 2, 2, 3]  # 10 | 20 | 30 | 40,50 | 60,70 | 80,90,100 (upper bounds inclusive)
    b = [b["count"] for b in bins if b["model"] == "ollama:b"]
    assert b == [1, 2, 0, 0, 0, 0, 0]  # 5 | 7,9
    assert [b["model"] for b in bins[:1] + bins[-1:]] == ["ollama:b", "openai:a"]
    assert metrics.latency_histogram(seeded, 9000, None) == []


def test_calls_by_outcome_groups_model_outcome_and_error_kind(seeded: Database) -> None:
    assert metrics.calls_by_outcome(seeded, None, None) == [
        {"model": "ollama:b", "outcome": "ok", "error_kind": None, "calls": 3},
        {"model": "openai:a", "outcome": "error", "error_kind": "auth", "calls": 1},
        {"model": "openai:a", "outcome": "error", "error_kind": "rate_limit", "calls": 1},
        {"model": "openai:a", "outcome": "ok", "error_kind": None, "calls": 10},
        {"model": "openai:a", "outcome": "skipped", "error_kind": "cooling_down", "calls": 1},
    ]


def test_fallback_flows_group_source_target_and_outcome(seeded: Database, recorder: MetricsRecorder) -> None:
    recorder.record(MetricRow(model="google:g", outcome="error", latency_ms=5, ts=3000, request_id="q9",
                              fallback_from="openai:a", error_kind="timeout"))
    assert recorder.flush()
    assert metrics.fallback_flows(seeded, None, None) == [
        {"source": "openai:a", "target": "google:g", "outcome": "error", "calls": 1},
        {"source": "openai:a", "target": "ollama:b", "outcome": "ok", "calls": 3},
    ]
    assert metrics.fallback_flows(seeded, 2500, None)[0]["target"] == "google:g"


def test_summary_counts_calls_errors_requests_and_fallbacks(seeded: Database) -> None:
    assert metrics.summary(seeded) == {
        "calls": 15, "ok": 13, "errors": 2, "skipped": 1, "requests": 13, "fallbacks": 3,
    }
    assert metrics.summary(seeded, since=2050) == {
        "calls": 1, "ok": 0, "errors": 1, "skipped": 1, "requests": 2, "fallbacks": 0,
    }


def test_iter_export_streams_every_row_in_time_order_across_chunks(db: Database, recorder: MetricsRecorder) -> None:
    for i in (5, 3, 9, 1, 7, 3, 2):
        recorder.record(_ok("openai:a", float(i), ts=float(i)))
    assert recorder.flush()
    rows = list(metrics.iter_export(db, chunk=2))
    assert [r["ts"] for r in rows] == [1.0, 2.0, 3.0, 3.0, 5.0, 7.0, 9.0]
    assert len({r["id"] for r in rows}) == 7  # the two rows at ts 3 are both there, once each
    assert list(rows[0]) == list(metrics.EXPORT_COLUMNS)
    assert [r["ts"] for r in metrics.iter_export(db, since=3, until=7, chunk=1)] == [3.0, 3.0, 5.0]


def test_a_model_id_of_the_full_255_characters_is_stored_counted_and_rolled_up(
    db: Database, recorder: MetricsRecorder
) -> None:
    longest = "ollama:" + "m" * (255 - len("ollama:"))
    requested = "openai:" + "r" * (255 - len("openai:"))
    recorder.record(MetricRow(model=longest, outcome="ok", latency_ms=12.0, ts=5000, request_id="r" * 64,
                              requested_model=requested, fallback_from=requested, error="x" * 5000))
    assert recorder.flush()
    stats = metrics.model_stats(db)
    assert stats[longest].calls == 1
    assert metrics.summary(db)["fallbacks"] == 1
    assert [row["model"] for row in metrics.iter_export(db)] == [longest]
