"""Call metrics: a non-blocking recorder and the SQL aggregations behind the charts.

``MetricsRecorder.record`` only puts the row on a queue; a daemon thread batches inserts, and in the
same transaction adds the batch to the per-minute and per-hour rollups (store/rollup.py). Rows the
database does not take before the recorder closes go to a spool file (store/spool.py) that the next
recorder on the same database writes. Readers call
``recorder.flush()`` first when they must see the newest rows. Every query aggregates in SQL and
returns only aggregates.

``model_stats`` and ``iter_export`` read call_metrics itself: exact nearest-rank percentiles (the
value at rank ceil(p/100 * n) among n values sorted ascending) over a recent window, walking a
covering index. The chart queries (series, histogram, outcomes, fallbacks, summary) read the rollups:
their ranges are whole minutes (since floored, until ceiled to the minute) and their p50/p95 are
estimates interpolated inside a log-spaced histogram bucket (rollup.estimate_percentile).

Cost on SQLite with 1,000,000 rows over 7 days (bench/metrics_queries.py): every chart query answers
a 7-day range in well under 100 ms; model_stats over 24 hours takes about 0.2 s.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy import exc as sa_exc

from ..errors import DatabaseBusyError, InputError
from ..types import Attempt
from . import rollup
from .db import BUSY_TIMEOUT_MS, Database
from .generations import generations_for
from .spool import Spool, read_rows
from .tables import LATENCY_BUCKETS, TTFT_BUCKETS, CallMetric

log = logging.getLogger("orchestrator_core.metrics")

OUTCOMES = ("ok", "error", "skipped")
MAX_ERROR_LEN = 1000
TRUNCATED_MARK = "…"
# Lengths of the VARCHAR columns of call_metrics (the rollups use the same lengths for the same names).
_COLUMN_LIMITS = {
    c.name: c.type.length for c in CallMetric.__table__.columns if isinstance(c.type, String) and c.type.length
}


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
    # Cost (issue 11): None is "unknown" (unpriced model or no usage reported), never 0.
    input_cost_usd: float | None = None
    output_cost_usd: float | None = None
    cost_usd: float | None = None
    price_source: str | None = None
    requested_cost_usd: float | None = None  # a fallback answer: what the requested model would have charged

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
        for name, limit in _COLUMN_LIMITS.items():
            value = values.get(name)
            if isinstance(value, str) and len(value) > limit:
                # PostgreSQL refuses the whole row for one long value ("value too long for type character
                # varying"): keep the row, cut the value and mark the cut, and say so in the log.
                values[name] = value[: limit - 1] + TRUNCATED_MARK
                log.warning("Metrics: %s of a row was %d characters, over its column's %d; stored cut short "
                            "and ending in %r.", name, len(value), limit, TRUNCATED_MARK)
        return values


# ---------------------------------------------------------------------------------------------
# Recording

_STOP = object()
# What rollup.aggregate raises for a row whose values are not numbers (or an infinite time).
_MALFORMED = (TypeError, ValueError, KeyError, ArithmeticError)
_WARN_AFTER_FAILURES = 3
_MAX_BACKOFF_S = 2.0
EXIT_WAIT_S = 5.0  # how long close() waits for a busy database before the rows go to the spool
# A write that has not finished after this long means the database is busy: readers stop waiting for it.
_STALLED_AFTER_S = 0.25


class _AbandonedError(Exception):
    """abandon() spooled the batch of this write: it must not commit."""


class _Claimed:
    """Spool files whose rows are queued just before this marker: deleted once those rows are written."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def set(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


Waiter = threading.Event | _Claimed


class MetricsRecorder:
    """Queue rows from any thread; one daemon thread writes them in batches and never drops them.

    Rows that cannot be written by the time the recorder closes (at exit, on SIGTERM or SIGHUP) go to
    the spool (store/spool.py) and are written by the next recorder on the same database.
    """

    def __init__(self, db: Database, *, first_backoff_s: float = 0.05, batch_window_s: float = 0.2) -> None:
        self.db = db
        self.first_backoff_s = first_backoff_s
        # Rows arriving within this window share one transaction: a commit per call would cost the
        # calling threads several milliseconds of GIL and disk time each. flush() skips the wait.
        self.batch_window_s = batch_window_s
        self.spool = Spool.for_database(db)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._hurry = threading.Event()  # set by flush() and close(): end the batch window now
        self._closed = False
        self._give_up = threading.Event()  # set by close(): spool what is left instead of retrying
        self._failing = False
        self._writing_since: float | None = None
        # The writer's rows and waiters, and the lock it holds while it writes or spools them: abandon() takes
        # them from a writer that is not writing, so no row is both spooled and committed.
        self._pending: list[dict[str, Any]] = []
        self._waiters: list[Waiter] = []
        self._batch_lock = threading.Lock()
        self._abandoned = False
        # Held from the check of _abandoned to the end of a commit: after abandon() set it, nothing commits.
        self._commit_lock = threading.Lock()
        self._in_write = False  # a transaction is under way and has not committed
        self._listeners: list[Callable[[MetricRow], None]] = []
        self._thread = threading.Thread(target=self._run, name="orchestrator-metrics-writer", daemon=True)
        self._replay_spool()
        self._thread.start()
        atexit.register(self.close)  # rows still queued at interpreter exit get written (or spooled)
        _OPEN.add(self)
        _LIVE.add(self)

    def add_listener(self, listener: Callable[[MetricRow], None]) -> None:
        """Also hand every recorded row to listener (the HTTP API's Prometheus counters); it must be quick."""
        self._listeners.append(listener)

    @property
    def queued(self) -> int:
        """Rows (and flush markers) waiting for the writer thread."""
        return self._queue.qsize()

    def record(self, row: MetricRow) -> None:
        """Queue one row; returns at once and never raises."""
        for listener in self._listeners:
            try:
                listener(row)
            except Exception:
                log.warning("a metrics listener failed", exc_info=True)
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
        self._hurry.set()
        return done.wait(timeout)

    @property
    def stalled(self) -> bool:
        """The database is not taking rows right now (the last write failed, or one has hung for a while).

        A page that wants the newest rows skips its flush then, and shows what is already stored.
        """
        since = self._writing_since
        return self._failing or (since is not None and time.monotonic() - since > _STALLED_AFTER_S)

    def close(self, timeout: float = EXIT_WAIT_S) -> None:
        """Write what is queued and stop the writer thread; rows the database will not take are spooled."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        _OPEN.discard(self)
        self._queue.put(_STOP)
        self._hurry.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return
        # The write in progress ends within the busy wait; then the writer spools instead of retrying.
        self._give_up.set()
        self._thread.join(BUSY_TIMEOUT_MS / 1000 + 2.0)
        if self._thread.is_alive():
            log.warning("Metrics: the writer did not stop within %.0f s of shutdown; the database may hang.",
                        timeout + BUSY_TIMEOUT_MS / 1000 + 2.0)
            self.abandon()

    def abandon(self, wait_s: float = 0.5) -> int:
        """Exit cannot wait for the writer any longer: spool every row it has not written; how many were saved.

        A write under way is stopped at its commit (it rolls back), so no row is both written and spooled."""
        self._closed = True  # rows recorded from now on are written (or spooled) by their caller
        if self._batch_lock.acquire(timeout=wait_s):
            try:
                if self._abandoned or not self._thread.is_alive():
                    return 0
                self._abandoned = True
                self._collect(self._pending, self._waiters, block=False)
                count = len(self._pending)
                self._spool_rest(self._pending, self._waiters)
                return 0 if self._pending else count
            finally:
                self._batch_lock.release()
        batch: list[dict[str, Any]] = []
        claimed: list[_Claimed] = []
        if self._commit_lock.acquire(timeout=wait_s):  # the writer hangs in a write (a locked database)
            try:
                if self._in_write and not self._abandoned:  # it will roll back: see _transaction
                    batch, claimed = list(self._pending), [w for w in self._waiters if isinstance(w, _Claimed)]
                self._abandoned = True
            finally:
                self._commit_lock.release()
        saved = self._spool_queued(batch)
        if saved or not batch:
            for marker in claimed:  # replayed rows of that batch: in the new spool file now
                marker.set()
        return saved

    def _spool_queued(self, rows: list[dict[str, Any]]) -> int:
        """rows (the batch of a write that will not commit) and every queued row to the spool; how many saved."""
        items: list[Any] = []
        try:
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        # Rows before a replay's marker are still in its spool file (kept until they are written): not twice.
        claims = [i for i, item in enumerate(items) if isinstance(item, _Claimed)]
        for item in items[claims[-1] + 1 if claims else 0:]:
            if isinstance(item, MetricRow):
                try:
                    rows.append(item.as_values())
                except Exception as exc:  # noqa: BLE001 - one broken row must not cost the others
                    log.warning("Metrics: skipped a malformed row (%s: %s).", type(exc).__name__, exc)
        if not rows:
            return 0
        try:
            if self.spool is None:
                raise OSError(0, "an in-memory database has no spool")
            log.warning("Metrics: the database did not take %d rows before exit; they were saved to %s and are "
                        "written on the next start.", len(rows), self.spool.write(rows))
        except OSError as exc:
            log.error("Metrics: %d rows could not be saved to the spool (%s); they are lost.", len(rows),
                      exc.strerror or exc)
            return 0
        return len(rows)

    def __enter__(self) -> MetricsRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the spool -----------------------------------------------------------------------------
    def _replay_spool(self) -> None:
        """Queue the rows an earlier process could not write, before anything this process records."""
        if self.spool is None:
            return
        try:
            paths = self.spool.claim()
        except OSError as exc:
            log.warning("Metrics: cannot look for spooled rows in %s (%s).", self.spool.folder, exc.strerror)
            return
        count = 0
        for path in paths:
            for values in read_rows(path):
                try:
                    self._queue.put(MetricRow(**values))
                    count += 1
                except TypeError as exc:
                    log.warning("Metrics: skipped a spooled row of %s that is not a metric row (%s).", path, exc)
        if paths:
            self._queue.put(_Claimed(paths))
            log.info("Metrics: writing %d rows spooled by an earlier process.", count)

    def _spool_rest(self, pending: list[dict[str, Any]], waiters: list[Waiter]) -> None:
        """close() gave up on the database: save every unwritten row to a new spool file."""
        self._collect(pending, waiters, block=False)
        claimed = [w for w in waiters if isinstance(w, _Claimed)]
        if pending:
            try:
                if self.spool is None:
                    raise OSError(0, "an in-memory database has no spool")
                path = self.spool.write(pending)
            except OSError as exc:
                log.error("Metrics: %d rows could not be written to the database nor to the spool (%s); they are "
                          "lost.", len(pending), exc.strerror or exc)
                return  # keep the claimed files: their rows are still in them
            log.warning("Metrics: the database did not take %d rows before exit; they were saved to %s and are "
                        "written on the next start.", len(pending), path)
        for marker in claimed:  # their rows are written or in the new spool file now
            marker.set()
        pending.clear()

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._write_until_stopped(self._pending, self._waiters)
        finally:
            _LIVE.discard(self)

    def _write_until_stopped(self, pending: list[dict[str, Any]], waiters: list[Waiter]) -> None:
        stopping = False
        failures = 0
        while True:
            stopping = self._collect(pending, waiters, block=not pending) or stopping
            if pending and not waiters and not stopping:
                stopping = self._gather(pending, waiters)
            with self._batch_lock:
                if self._abandoned:  # abandon() spooled the rows; any collected since go the same way
                    self._spool_rest(pending, waiters)
                    return
                error = self._write_pending(pending, failures) if pending else None
                if error is None:
                    for waiter in waiters:
                        waiter.set()
                    waiters.clear()
            if isinstance(error, _AbandonedError):  # abandon() spooled the batch; rows queued since: next round
                pending.clear()
                for waiter in waiters:
                    if isinstance(waiter, threading.Event):
                        waiter.set()
                waiters.clear()
                continue
            if error is not None:
                failures += 1
                self._on_failure(error, failures, len(pending))
                # Outside the lock: abandon() may take the rows while this backs off.
                if self._give_up.wait(min(self.first_backoff_s * 2 ** min(failures - 1, 16), _MAX_BACKOFF_S)):
                    with self._batch_lock:
                        self._spool_rest(pending, waiters)
                    return
                continue
            failures = 0
            if stopping:
                return

    def _write_pending(self, pending: list[dict[str, Any]], failures: int) -> Exception | None:
        """Write pending and clear it; the error if the database did not take it (pending is kept)."""
        self._writing_since = time.monotonic()
        try:
            self._write(pending)
        except Exception as exc:  # noqa: BLE001 - the writer must outlive any database failure
            self._failing = True
            return exc
        finally:
            self._writing_since = None
        if failures >= _WARN_AFTER_FAILURES:
            log.info("Metrics: writing works again; %d queued rows were written.", len(pending))
        pending.clear()
        self._failing = False
        return None

    def _gather(self, pending: list[dict[str, Any]], waiters: list[Waiter]) -> bool:
        """Let rows gather for batch_window_s, or until a flush or a stop; True on stop.

        Rows queued meanwhile do not wake this thread: waking per row made every call hand the GIL over."""
        self._hurry.wait(self.batch_window_s)
        self._hurry.clear()
        return self._collect(pending, waiters, block=False)

    def _collect(self, pending: list[dict[str, Any]], waiters: list[Waiter], *, block: bool) -> bool:
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
                elif isinstance(item, (threading.Event, _Claimed)):
                    waiters.append(item)
                elif item is _STOP:
                    stop = True
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return stop

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            sums = rollup.aggregate(rows)
        except _MALFORMED as exc:
            self._write_one_by_one(rows, exc)
            return
        try:
            with self._transaction() as conn:
                rollup.write_batch(conn, rows, sums)  # raw rows and rollup commit or roll back together
                spent = self._bump_spend(conn, rows)
            if spent:
                generations_for(self.db).changed("spend")
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
                with self._transaction() as conn:
                    rollup.write_batch(conn, rows[:1])
                    spent = self._bump_spend(conn, rows[:1])
                if spent:
                    generations_for(self.db).changed("spend")
            except (sa_exc.IntegrityError, sa_exc.DataError, *_MALFORMED):
                bad += 1
            except sa_exc.StatementError as row_exc:
                if isinstance(row_exc, sa_exc.DBAPIError):
                    raise  # rows already handled are gone from the list, so a retry writes none twice
                bad += 1
            del rows[0]
        log.warning("Metrics: skipped %d malformed row(s) the database refused: %s", bad, _first_line(exc))

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """engine.begin(), whose commit does not happen once abandon() has spooled the rows (_AbandonedError)."""
        with self.db.engine.connect() as conn:
            self._in_write = True
            try:
                with conn.begin() as transaction:
                    yield conn
                    with self._commit_lock:
                        if self._abandoned:
                            raise _AbandonedError
                        transaction.commit()
                        self._in_write = False
            finally:
                self._in_write = False

    def _bump_spend(self, conn: Connection, rows: list[dict[str, Any]]) -> bool:
        """Rows that cost money change what budgets read: bump "spend" in their transaction (True if bumped).

        The caller tells this process (generations.changed) after the commit, so no reader caches the old sum
        under the new token."""
        if not any(row.get("cost_usd") for row in rows):
            return False
        generations_for(self.db).bump(conn, "spend")
        return True

    def _on_failure(self, exc: Exception, failures: int, pending: int) -> None:
        if failures == _WARN_AFTER_FAILURES:
            log.warning("Metrics: writing %d rows failed %d times (%s); they are kept and retried.",
                        pending, failures, _first_line(exc))

    def _write_late(self, row: MetricRow) -> None:
        """A row recorded after close() (a stream ended by a signal): written now, else spooled."""
        try:
            values = row.as_values()
        except Exception as exc:  # noqa: BLE001 - record() never raises into the caller
            log.warning("Metrics: skipped a malformed row (%s: %s).", type(exc).__name__, exc)
            return
        try:
            self._write([values])
            return
        except Exception as exc:  # noqa: BLE001
            reason = _first_line(exc)
        try:
            if self.spool is not None:
                self.spool.write([values])
                return
        except OSError:
            pass
        log.warning("Metrics: a row recorded after close() could not be written: %s", reason)


_OPEN: weakref.WeakSet[MetricsRecorder] = weakref.WeakSet()
_LIVE: weakref.WeakSet[MetricsRecorder] = weakref.WeakSet()  # writer thread running, closed or not


def flush_all(timeout: float) -> None:
    """Flush every open recorder of this process (a signal arrived and another handler will exit)."""
    for recorder in list(_OPEN):
        if not recorder.stalled:
            recorder.flush(timeout)


def close_all() -> None:
    """Close every open recorder of this process: rows written, or spooled."""
    for recorder in list(_OPEN):
        recorder.close()


def abandon_all() -> int:
    """The process ends now: spool the rows of every recorder whose writer still runs; how many were saved."""
    return sum(recorder.abandon() for recorder in list(_LIVE))


def _first_line(exc: BaseException) -> str:
    # A DatabaseBusyError wraps the driver's own words ("database is locked"), which say more in a log.
    driver = exc.__cause__ if isinstance(exc, DatabaseBusyError) else None
    text = str(getattr(exc, "orig", None) or driver or exc).strip()
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


def table_stats(db: Database, since: float | None = None) -> dict[str, ModelStats]:
    """model_stats from the rollups, for the Models table: exact counts, p50/p95 estimated from the histograms.

    model_stats walks every raw row of the range (over a second for a day of a million-row week on SQLite);
    this reads the hour and minute rollups and two indexed queries (the last errors, the newest attempt per
    model: a skip counts there), so a table action stays fast.
    """
    rows = rollup.covering(["model", "outcome", "calls", *LATENCY_BUCKETS], since, None,
                           lambda t: [t.c.outcome.in_(("ok", "error"))])
    keys = (rows.c.model, rows.c.outcome)
    query = select(*keys, func.sum(rows.c.calls), *(func.sum(rows.c[c]) for c in LATENCY_BUCKETS)).group_by(*keys)
    with db.engine.connect() as conn:
        groups = conn.execute(query).all()
        errors = _last_errors(conn, since)
        newest = _newest_attempts(conn, sorted({g[0] for g in groups}))
    by_model: dict[str, dict[str, Any]] = {}
    for model, outcome, calls, *histogram in groups:
        entry = by_model.setdefault(model, {"ok": 0, "error": 0, "newest": newest.get(model), "histogram": []})
        entry[outcome] = int(calls)
        if outcome == "ok":
            entry["histogram"] = [int(n) for n in histogram]
    return {model: _estimated(model, entry, errors.get(model)) for model, entry in sorted(by_model.items())
            if entry["ok"] + entry["error"]}


def _estimated(model: str, entry: dict[str, Any], err: tuple[str | None, str | None, float] | None) -> ModelStats:
    calls = entry["ok"] + entry["error"]
    p50 = rollup.estimate_percentile(entry["histogram"], 50)
    return ModelStats(
        model=model, calls=calls, ok=entry["ok"], errors=entry["error"], success_rate=entry["ok"] / calls,
        p50_ms=p50, p95_ms=rollup.estimate_percentile(entry["histogram"], 95), median_latency_ms=p50,
        last_error_kind=err[0] if err else None, last_error=err[1] if err else None,
        last_error_at=_utc(err[2]) if err else None, last_call_at=_utc(entry["newest"]),
    )


def _newest_attempts(conn: Connection, models: Sequence[str]) -> dict[str, float]:
    """The newest attempt's ts per model: one (model, ts) index lookup each, where GROUP BY scans the range."""
    if not models:
        return {}
    parts = [select(literal(m).label("model"),
                    select(func.max(CallMetric.ts)).where(CallMetric.model == m).scalar_subquery().label("ts"))
             for m in models]
    query = parts[0] if len(parts) == 1 else union_all(*parts)
    return {r.model: float(r.ts) for r in conn.execute(query) if r.ts is not None}


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


# -- chart queries: they read the rollups (store/rollup.py), never every row --------------------------
# Their ranges work on whole minutes: since is floored and until ceiled to the minute, so a range
# holds every call of the minutes it touches.


def _series(
    db: Database, count: str, buckets: Sequence[str], where: rollup.Where, since: float | None,
    until: float | None, bucket_s: float,
) -> list[dict[str, Any]]:
    """Per time bucket and model: summed counts and p50/p95 estimated from the summed histogram."""
    if bucket_s <= 0:
        raise InputError(f"The time bucket must be positive; got {bucket_s} s.")
    columns = [count, *buckets]
    # Hour rows fit in a bucket only when buckets start on whole hours.
    whole_hours = float(bucket_s).is_integer() and int(bucket_s) % rollup.HOUR.seconds == 0
    rows = rollup.covering(["model", *columns], since, until, where, hours=whole_hours)
    size = literal(float(bucket_s))
    # Another subquery, so GROUP BY names the bucket instead of repeating an expression with its own
    # parameter (PostgreSQL would not see the two as the same expression).
    source = select((_floor(db, rows.c.start / size) * size).label("bucket"), rows.c.model,
                    *(rows.c[c] for c in columns)).subquery()
    keys = (source.c.bucket, source.c.model)
    query = select(*keys, *(func.sum(source.c[c]) for c in columns)).group_by(*keys).order_by(*keys)
    with db.engine.connect() as conn:
        groups = conn.execute(query).all()
    series = []
    for bucket, model, calls, *counts in groups:
        histogram = [int(n) for n in counts]
        series.append({"bucket": float(bucket), "model": model, "calls": int(calls),
                       "p50_ms": rollup.estimate_percentile(histogram, 50),
                       "p95_ms": rollup.estimate_percentile(histogram, 95)})
    return series


def latency_series(db: Database, since: float | None, until: float | None, bucket_s: float) -> list[dict[str, Any]]:
    """Per time bucket and model: successful attempts and their p50/p95 latency (histogram estimates).

    Buckets start at multiples of bucket_s and hold whole minutes; p50/p95 are interpolated inside the
    log-spaced histogram bucket that holds the exact value (see rollup.estimate_percentile).
    """
    return _series(db, "calls", LATENCY_BUCKETS, lambda t: [t.c.outcome == "ok"], since, until, bucket_s)


def ttft_series(db: Database, since: float | None, until: float | None, bucket_s: float) -> list[dict[str, Any]]:
    """Per time bucket and model: p50/p95 time to first token of attempts that measured it (estimates)."""
    return _series(db, "ttft_count", TTFT_BUCKETS, lambda t: [t.c.ttft_count > 0], since, until, bucket_s)


def latency_histogram(
    db: Database, since: float | None, until: float | None, bins: int = 30
) -> list[dict[str, Any]]:
    """Latency of successful attempts per model in the rollups' log-spaced buckets, shared by all models.

    `bins` is accepted for compatibility and ignored: the buckets are tables.HISTOGRAM_BOUNDS_MS. The
    list runs from the first to the last bucket any model uses (empty ones between included); the
    overflow bucket past the last bound is given the width of its start.
    """
    rows = rollup.covering(["model", *LATENCY_BUCKETS], since, until, lambda t: [t.c.outcome == "ok"])
    query = select(rows.c.model, *(func.sum(rows.c[c]) for c in LATENCY_BUCKETS)).group_by(rows.c.model)
    with db.engine.connect() as conn:
        counts = {model: [int(n) for n in row] for model, *row in conn.execute(query.order_by(rows.c.model))}
    used = [i for i in range(len(LATENCY_BUCKETS)) if any(c[i] for c in counts.values())]
    if not used:
        return []
    histogram = []
    for model, model_counts in counts.items():
        for index in range(used[0], used[-1] + 1):
            start, end = rollup.bucket_edges(index)
            histogram.append({"model": model, "bin_start_ms": start, "bin_end_ms": end, "count": model_counts[index]})
    return histogram


def calls_by_outcome(db: Database, since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Attempts per model, outcome and error kind (skipped ones included; ok ones have no error kind)."""
    rows = rollup.covering(["model", "outcome", "error_kind", "calls"], since, until)
    keys = (rows.c.model, rows.c.outcome, rows.c.error_kind)
    query = select(*keys, func.sum(rows.c.calls)).group_by(*keys).order_by(*keys)
    with db.engine.connect() as conn:
        return [
            {"model": model, "outcome": outcome, "error_kind": kind or None, "calls": int(calls)}
            for model, outcome, kind, calls in conn.execute(query)
        ]


def fallback_flows(db: Database, since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Attempts made as a fallback: from which model to which, with what outcome."""
    rows = rollup.covering(["fallback_from", "model", "outcome", "calls"], since, until,
                           lambda t: [t.c.fallback_from != ""])
    keys = (rows.c.fallback_from, rows.c.model, rows.c.outcome)
    query = select(*keys, func.sum(rows.c.calls)).group_by(*keys).order_by(*keys)
    with db.engine.connect() as conn:
        return [
            {"source": source, "target": target, "outcome": outcome, "calls": int(calls)}
            for source, target, outcome, calls in conn.execute(query)
        ]


def last_used_model(db: Database) -> str | None:
    """The model the newest request asked for (the newest attempt's requested_model), or None without calls."""
    query = select(CallMetric.requested_model, CallMetric.model).order_by(CallMetric.ts.desc()).limit(1)
    with db.engine.connect() as conn:
        row = conn.execute(query).first()
    return (row.requested_model or row.model) if row is not None else None


def summary(db: Database, since: float | None = None) -> dict[str, int]:
    """Totals since a time: attempts made, ok, errors, requests, requests answered by a fallback.

    requests counts first attempts (one per request); fallbacks counts successful fallback attempts
    (a request is answered at most once, so that is the requests a fallback answered).
    """
    rows = rollup.covering(["outcome", "fallback_from", "calls", "first_attempts"], since, None)
    by_fallback = case((rows.c.fallback_from != "", rows.c.calls), else_=0)
    query = select(rows.c.outcome, func.sum(rows.c.calls), func.sum(rows.c.first_attempts), func.sum(by_fallback))
    with db.engine.connect() as conn:
        totals = {outcome: (int(calls), int(first), int(fallback))
                  for outcome, calls, first, fallback in conn.execute(query.group_by(rows.c.outcome))}
    ok, errors, skipped = (totals.get(outcome, (0, 0, 0)) for outcome in OUTCOMES)
    return {
        "calls": ok[0] + errors[0],
        "ok": ok[0],
        "errors": errors[0],
        "skipped": skipped[0],
        "requests": sum(first for _, first, _ in totals.values()),
        "fallbacks": ok[2],
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
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None
