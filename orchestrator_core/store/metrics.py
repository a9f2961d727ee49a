"""Call metrics: a non-blocking recorder and the SQL aggregations behind the charts.

``MetricsRecorder.record`` only puts the row on a queue; a daemon thread batches inserts. Readers
call ``recorder.flush()`` first when they must see the newest rows. Every query aggregates in SQL
(GROUP BY, window functions, index walks) and returns only aggregates. Percentiles use the
nearest-rank method: the value at rank ceil(p/100 * n) among n values sorted ascending.

Cost on SQLite with 1,000,000 rows: model_stats and the counting queries answer from covering
indexes in well under a second; the per-bucket series sort the rows in their time range (window
functions), which takes seconds only when that range holds most of the million rows.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy import exc as sa_exc

from ..errors import InputError
from ..types import Attempt
from .db import Database
from .tables import CallMetric

log = logging.getLogger("orchestrator_core.metrics")

OUTCOMES = ("ok", "error", "skipped")
MAX_ERROR_LEN = 1000


@dataclass(frozen=True)
class MetricRow:
    """One attempt of one model, as stored in call_metrics."""

    model: str
    outcome: str  # ok | error | skipped
    latency_ms: float
    request_id: str = ""
    requested_model: str = ""  # empty: the model itself
    provider: str = ""  # empty: the prefix of the model id
    error_kind: str | None = None
    error: str | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    fallback_from: str | None = None
    streamed: bool = False
    ts: float = field(default_factory=time.time)

    @classmethod
    def from_attempt(cls, attempt: Attempt, *, request_id: str, requested_model: str, **extra: Any) -> MetricRow:
        """The row for one Attempt of an orchestrated call (extra: tokens, streamed, ts)."""
        return cls(
            model=attempt.model,
            outcome=attempt.outcome,
            latency_ms=attempt.latency_ms,
            request_id=request_id,
            requested_model=requested_model,
            error_kind=attempt.error_kind,
            error=attempt.error,
            ttft_ms=attempt.ttft_ms,
            fallback_from=attempt.fallback_from,
            **extra,
        )

    def as_values(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["provider"] = self.provider or self.model.partition(":")[0]
        values["requested_model"] = self.requested_model or self.model
        if self.error:
            values["error"] = self.error[:MAX_ERROR_LEN]
        return values


# ---------------------------------------------------------------------------------------------
# Recording

_STOP = object()
_WARN_AFTER_FAILURES = 3
_MAX_BACKOFF_S = 2.0


class MetricsRecorder:
    """Queue rows from any thread; one daemon thread writes them in batches and never drops them."""

    def __init__(self, db: Database, *, first_backoff_s: float = 0.05) -> None:
        self.db = db
        self.first_backoff_s = first_backoff_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="orchestrator-metrics-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # rows still queued at interpreter exit get written

    def record(self, row: MetricRow) -> None:
        """Queue one row; returns at once and never raises."""
        if self._closed:
            self._write_late(row)
            return
        self._queue.put(row)

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every row queued before this call is written; False on timeout."""
        if self._closed:
            return not self._thread.is_alive()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("Metrics: rows could not be written within %.0f s at shutdown; the database "
                        "may be locked or unwritable, so the newest call metrics may be missing.", timeout)

    def __enter__(self) -> MetricsRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        waiters: list[threading.Event] = []
        stopping = False
        failures = 0
        while True:
            stopping = self._collect(pending, waiters, block=not pending) or stopping
            if pending:
                try:
                    self._write(pending)
                except Exception as exc:  # noqa: BLE001 - the writer must outlive any database failure
                    failures += 1
                    self._on_failure(exc, failures, len(pending))
                    time.sleep(min(self.first_backoff_s * 2 ** min(failures - 1, 16), _MAX_BACKOFF_S))
                    continue
                if failures >= _WARN_AFTER_FAILURES:
                    log.info("Metrics: writing works again; %d queued rows were written.", len(pending))
                pending.clear()
                failures = 0
            for waiter in waiters:
                waiter.set()
            waiters.clear()
            if stopping:
                return

    def _collect(self, pending: list[dict[str, Any]], waiters: list[threading.Event], *, block: bool) -> bool:
        """Move everything queued into pending/waiters; True when a stop was requested."""
        stop = False
        try:
            item = self._queue.get() if block else self._queue.get_nowait()
            while True:
                if isinstance(item, MetricRow):
                    try:
                        pending.append(item.as_values())
                    except Exception as exc:  # noqa: BLE001 - a broken row must not stop the writer
                        log.warning("Metrics: skipped a malformed row (%s: %s).", type(exc).__name__, exc)
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                elif item is _STOP:
                    stop = True
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return stop

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(CallMetric), rows)
        except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
            self._write_one_by_one(rows, exc)
        except sa_exc.StatementError as exc:
            if isinstance(exc, sa_exc.DBAPIError):
                raise  # locked, disk full, connection lost: worth retrying
            self._write_one_by_one(rows, exc)

    def _write_one_by_one(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        """A row the database can never accept must not block the rows behind it: skip only that row."""
        bad = 0
        while rows:
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(insert(CallMetric), rows[:1])
            except (sa_exc.IntegrityError, sa_exc.DataError):
                bad += 1
            except sa_exc.StatementError as row_exc:
                if isinstance(row_exc, sa_exc.DBAPIError):
                    raise  # rows already handled are gone from the list, so a retry writes none twice
                bad += 1
            del rows[0]
        log.warning("Metrics: skipped %d malformed row(s) the database refused: %s", bad, _first_line(exc))

    def _on_failure(self, exc: Exception, failures: int, pending: int) -> None:
        if failures == _WARN_AFTER_FAILURES:
            log.warning("Metrics: writing %d rows failed %d times (%s); they are kept and retried.",
                        pending, failures, _first_line(exc))

    def _write_late(self, row: MetricRow) -> None:
        try:
            self._write([row.as_values()])
        except Exception as exc:  # noqa: BLE001 - record() never raises into the caller
            log.warning("Metrics: a row recorded after close() could not be written: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Queries for the console: all aggregation happens in SQL.


@dataclass(frozen=True)
class ModelStats:
    """Attempts of one model that were actually made (skipped ones are not calls)."""

    model: str
    calls: int
    ok: int
    errors: int
    success_rate: float  # ok / calls
    p50_ms: float | None  # latency of successful attempts; None without any
    p95_ms: float | None
    median_latency_ms: float | None  # the same as p50_ms
    last_error_kind: str | None
    last_error: str | None
    last_error_at: datetime | None
    last_call_at: datetime | None


def _range(since: float | None, until: float | None = None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(CallMetric.ts >= since)
    if until is not None:
        conditions.append(CallMetric.ts < until)
    return conditions


def _floor(db: Database, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """floor() of a non-negative number; SQLite has no FLOOR before 3.35 and CAST truncates there."""
    if db.dialect == "sqlite":
        return cast(value, Integer)
    return func.floor(value)  # PostgreSQL's CAST rounds, so it would shift bucket edges


def _percentiles(source: Any, value: str, keys: Sequence[str]) -> Select[Any]:
    """Per group of keys: count, p50 and p95 of source.c[value] (nearest rank, in SQL)."""
    part = [source.c[k] for k in keys]
    ranked = select(
        *part,
        source.c[value].label("v"),
        func.row_number().over(partition_by=part, order_by=source.c[value]).label("rn"),
        func.count().over(partition_by=part).label("n"),
    ).subquery()
    group = [ranked.c[k] for k in keys]

    def rank(p: int) -> ColumnElement[Any]:
        # ceil(p * n / 100) in integer arithmetic, which SQLite and PostgreSQL both do the same way.
        return func.max(case((ranked.c.rn == (ranked.c.n * p + 99) // 100, ranked.c.v)))

    return (
        select(*group, func.max(ranked.c.n).label("calls"), rank(50).label("p50_ms"), rank(95).label("p95_ms"))
        .group_by(*group)
        .order_by(*group)
    )


def model_stats(db: Database, since: float | None = None) -> dict[str, ModelStats]:
    """Calls, success rate, p50/p95 latency and the last error of every model since a time."""
    with db.engine.connect() as conn:
        counts = _outcome_counts(conn, since)
        ok_counts = {model: c["ok"] for model, c in counts.items() if c["ok"]}
        latency = _latency_percentiles(conn, ok_counts, since)
        errors = _last_errors(conn, since)
    stats = {}
    for model, c in sorted(counts.items()):
        calls = c["ok"] + c["error"]
        if not calls:
            continue  # only skipped: the model was never actually called
        p50, p95 = latency.get(model, (None, None))
        err = errors.get(model)
        stats[model] = ModelStats(
            model=model,
            calls=calls,
            ok=c["ok"],
            errors=c["error"],
            success_rate=c["ok"] / calls,
            p50_ms=p50,
            p95_ms=p95,
            median_latency_ms=p50,
            last_error_kind=err[0] if err else None,
            last_error=err[1] if err else None,
            last_error_at=_utc(err[2]) if err else None,
            last_call_at=_utc(c["last_ts"]),
        )
    return stats


def _outcome_counts(conn: Connection, since: float | None) -> dict[str, dict[str, Any]]:
    # Grouped by (outcome, model) so the covering index answers it without touching the table.
    query = (
        select(CallMetric.outcome, CallMetric.model, func.count(), func.max(CallMetric.ts))
        .where(CallMetric.outcome.in_(("ok", "error")), *_range(since))
        .group_by(CallMetric.outcome, CallMetric.model)
    )
    counts: dict[str, dict[str, Any]] = {}
    for outcome, model, n, last_ts in conn.execute(query):
        entry = counts.setdefault(model, {"ok": 0, "error": 0, "last_ts": last_ts})
        entry[outcome] = int(n)
        entry["last_ts"] = max(entry["last_ts"], last_ts)
    return counts


def _latency_percentiles(
    conn: Connection, ok_counts: dict[str, int], since: float | None
) -> dict[str, tuple[float, float]]:
    """Exact nearest-rank p50/p95 per model, each the row at OFFSET rank-1 in latency order.

    With the (outcome, model, latency_ms, ts) index this walks at most rank index entries per
    model instead of sorting every row, which a window function would do (seconds at 1M rows).
    """
    if not ok_counts:
        return {}

    def at_rank(model: str, rank: int) -> Any:
        return (
            select(CallMetric.latency_ms)
            .where(CallMetric.outcome == "ok", CallMetric.model == model, *_range(since))
            .order_by(CallMetric.latency_ms)
            .limit(1)
            .offset(rank - 1)
            .scalar_subquery()
        )

    parts = [
        select(literal(model).label("model"), at_rank(model, _rank(50, n)).label("p50"),
               at_rank(model, _rank(95, n)).label("p95"))
        for model, n in ok_counts.items()
    ]
    query = parts[0] if len(parts) == 1 else union_all(*parts)
    return {r.model: (float(r.p50), float(r.p95)) for r in conn.execute(query) if r.p50 is not None}


def _rank(p: int, n: int) -> int:
    """Nearest rank of the p-th percentile among n sorted values: ceil(p * n / 100)."""
    return max(1, (p * n + 99) // 100)


def _last_errors(conn: Connection, since: float | None) -> dict[str, tuple[str | None, str | None, float]]:
    newest = (
        select(CallMetric.model, func.max(CallMetric.ts).label("ts"))
        .where(CallMetric.outcome == "error", *_range(since))
        .group_by(CallMetric.model)
        .subquery()
    )
    query = (
        select(CallMetric.model, CallMetric.error_kind, CallMetric.error, CallMetric.ts)
        .join(newest, and_(CallMetric.model == newest.c.model, CallMetric.ts == newest.c.ts))
        .where(CallMetric.outcome == "error")
        .order_by(CallMetric.id)
    )
    # Two errors at the very same ts: the later insert (higher id) wins.
    return {model: (kind, error, ts) for model, kind, error, ts in conn.execute(query)}


def _series(db: Database, column: Any, conditions: list[Any], bucket_s: float) -> list[dict[str, Any]]:
    if bucket_s <= 0:
        raise InputError(f"The time bucket must be positive; got {bucket_s} s.")
    size = literal(float(bucket_s))
    bucket = (_floor(db, CallMetric.ts / size) * size).label("bucket")
    source = select(bucket, CallMetric.model, column.label("value")).where(*conditions).subquery()
    query = _percentiles(source, "value", ["bucket", "model"])
    with db.engine.connect() as conn:
        return [
            {"bucket": float(r.bucket), "model": r.model, "calls": int(r.calls),
             "p50_ms": float(r.p50_ms), "p95_ms": float(r.p95_ms)}
            for r in conn.execute(query)
        ]


def latency_series(db: Database, since: float | None, until: float | None, bucket_s: float) -> list[dict[str, Any]]:
    """Per time bucket and model: successful attempts and their p50/p95 latency."""
    conditions = [CallMetric.outcome == "ok", *_range(since, until)]
    return _series(db, CallMetric.latency_ms, conditions, bucket_s)


def ttft_series(db: Database, since: float | None, until: float | None, bucket_s: float) -> list[dict[str, Any]]:
    """Per time bucket and model: p50/p95 time to first token of attempts that measured it."""
    conditions = [CallMetric.ttft_ms.is_not(None), *_range(since, until)]
    return _series(db, CallMetric.ttft_ms, conditions, bucket_s)


def latency_histogram(
    db: Database, since: float | None, until: float | None, bins: int = 30
) -> list[dict[str, Any]]:
    """Latency of successful attempts in `bins` equal bins shared by all models (empty bins included)."""
    if bins < 1:
        raise InputError(f"A histogram needs at least 1 bin; got {bins}.")
    conditions = [CallMetric.outcome == "ok", *_range(since, until)]
    with db.engine.connect() as conn:
        low, high = conn.execute(
            select(func.min(CallMetric.latency_ms), func.max(CallMetric.latency_ms)).where(*conditions)
        ).one()
        if low is None:
            return []
        low, high = float(low), float(high)
        width = (high - low) / bins if high > low else 1.0
        index = _floor(db, (CallMetric.latency_ms - literal(low)) / literal(width))
        clipped = case((index >= bins, bins - 1), else_=index).label("bin")  # the maximum lands in the last bin
        source = select(CallMetric.model, clipped).where(*conditions).subquery()
        query = select(source.c.model, source.c.bin, func.count()).group_by(source.c.model, source.c.bin)
        counts = {(model, int(b)): int(n) for model, b, n in conn.execute(query)}
    models = sorted({model for model, _ in counts})
    return [
        {"model": model, "bin_start_ms": low + b * width, "bin_end_ms": low + (b + 1) * width,
         "count": counts.get((model, b), 0)}
        for model in models
        for b in range(bins)
    ]


def calls_by_outcome(db: Database, since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Attempts per model, outcome and error kind (skipped ones included; ok ones have no error kind)."""
    ok = (
        select(CallMetric.model, func.count())
        .where(CallMetric.outcome == "ok", *_range(since, until))
        .group_by(CallMetric.model)
    )
    # Only the few failed/skipped rows need their error_kind read from the table itself.
    keys = (CallMetric.model, CallMetric.outcome, CallMetric.error_kind)
    other = select(*keys, func.count()).where(CallMetric.outcome != "ok", *_range(since, until)).group_by(*keys)
    with db.engine.connect() as conn:
        rows = [(model, "ok", None, n) for model, n in conn.execute(ok)]
        rows += [tuple(r) for r in conn.execute(other)]
    rows.sort(key=lambda r: (r[0], r[1], r[2] or ""))
    return [{"model": m, "outcome": o, "error_kind": k, "calls": int(n)} for m, o, k, n in rows]


def fallback_flows(db: Database, since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Attempts made as a fallback: from which model to which, with what outcome."""
    keys = (CallMetric.fallback_from, CallMetric.model, CallMetric.outcome)
    query = (
        select(*keys, func.count().label("calls"))
        .where(CallMetric.fallback_from.is_not(None), *_range(since, until))
        .group_by(*keys)
        .order_by(*keys)
    )
    with db.engine.connect() as conn:
        return [
            {"source": source, "target": target, "outcome": outcome, "calls": int(calls)}
            for source, target, outcome, calls in conn.execute(query)
        ]


def summary(db: Database, since: float | None = None) -> dict[str, int]:
    """Totals since a time: attempts made, ok, errors, requests, requests answered by a fallback."""
    by_outcome = select(CallMetric.outcome, func.count()).where(*_range(since)).group_by(CallMetric.outcome)
    # SQLite would pick the ts index and de-duplicate in a temp b-tree (seconds at 1M rows); "ts + 0"
    # makes it walk the (request_id, ts) index in order instead, which needs no sort at all.
    ts = CallMetric.ts + 0 if db.dialect == "sqlite" else CallMetric.ts
    requests = select(func.count(CallMetric.request_id.distinct()))
    if since is not None:
        requests = requests.where(ts >= since)
    # The outcome test sits inside the CASE so the planner uses the small fallback_from index.
    answered = case((CallMetric.outcome == "ok", CallMetric.request_id))
    fallbacks = select(func.count(answered.distinct())).where(CallMetric.fallback_from.is_not(None), *_range(since))
    with db.engine.connect() as conn:
        counts = {outcome: int(n) for outcome, n in conn.execute(by_outcome)}
        request_count = conn.execute(requests).scalar_one()
        answered_by_fallback = conn.execute(fallbacks).scalar_one()
    return {
        "calls": counts.get("ok", 0) + counts.get("error", 0),
        "ok": counts.get("ok", 0),
        "errors": counts.get("error", 0),
        "skipped": counts.get("skipped", 0),
        "requests": int(request_count or 0),
        "fallbacks": int(answered_by_fallback or 0),
    }


EXPORT_COLUMNS = tuple(c.name for c in CallMetric.__table__.columns)


def iter_export(
    db: Database, since: float | None = None, until: float | None = None, chunk: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every row in the range ordered by time, fetched in chunks (no connection held between chunks)."""
    table = CallMetric.__table__
    after: tuple[float, int] | None = None
    while True:
        query = select(table).where(*_range(since, until)).order_by(table.c.ts, table.c.id).limit(chunk)
        if after is not None:
            # Keyset paging: stable and fast however deep the export goes, unlike OFFSET.
            query = query.where(or_(table.c.ts > after[0], and_(table.c.ts == after[0], table.c.id > after[1])))
        with db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        yield from rows
        if len(rows) < chunk:
            return
        after = (rows[-1]["ts"], rows[-1]["id"])


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None
