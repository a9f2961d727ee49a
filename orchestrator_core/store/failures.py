"""The failure cache: which models failed recently and stay skipped until when.

It lives in the database, so every process on the same database (console, CLI, workers) skips the
same models. One row per model, kept from its first failure until ``reset`` (a success should reset
it): ``failure_count`` counts failures since then, so a caller can lengthen the cooldown each time.

Reads are served from memory: the rows are reloaded only when another process changed them (seen
within ``generations.FRESHNESS_S``). A failure is kept in memory at once, honoured by this process, and
written by the cache's writer thread a moment later, in the order recorded; the writer takes the rows
back in the same transaction, so its own write causes no reload. A cooldown the database does not take
(locked past its busy timeout, or read-only) stays in memory and is retried, backing off; close()
writes what is left, waiting a bounded time, and logs what it could not write.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Select, Table, case, delete, select
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import DatabaseBusyError, DatabaseError
from .db import Database, upsert_insert
from .generations import Generations, Token, generations_for
from .tables import CacheGeneration, ModelFailure

log = logging.getLogger(__name__)

MAX_MESSAGE_LEN = 1000
AREA = "failures"
RETRY_FIRST_S = 1.0  # a cooldown that could not be written is retried after this, doubling up to RETRY_MAX_S
RETRY_MAX_S = 30.0
# A failure is written this long after it was recorded (several of one fallback chain in one transaction);
# other processes poll every generations.FRESHNESS_S anyway.
WRITE_DELAY_S = 0.05
CLOSE_WAIT_S = 5.0  # close() waits at most this long for the cooldowns still in memory to be written
CLOSE_RETRY_S = 0.1  # while closing, a refused write is retried this often
# Failures worth keeping a cooldown in memory for: locked, read-only, disk full, connection lost.
_NOT_WRITTEN = (OperationalError, InternalError, DatabaseError, DatabaseBusyError)

_TABLE = cast(Table, ModelFailure.__table__)
_ALL = select(_TABLE).order_by(_TABLE.c.until.desc())
_GENERATION = select(CacheGeneration.generation).where(CacheGeneration.area == AREA)
_REHEARSED = "rehearsal:never-stored"  # the model id of warm()'s rolled-back write

When = datetime | float | None  # an aware datetime, epoch seconds, or None for now


@dataclass(frozen=True)
class FailureEntry:
    model_id: str
    error_kind: str
    message: str
    since: datetime  # first failure since the last reset (UTC)
    until: datetime  # skipped until then (UTC)
    failure_count: int

    @property
    def active(self) -> bool:
        """Still cooling down."""
        return self.until > datetime.now(UTC)

    def remaining_s(self, now: When = None) -> float:
        """Seconds of cooldown left (0 once expired)."""
        return max(0.0, (self.until - _as_datetime(now)).total_seconds())


@dataclass(frozen=True, eq=False)  # compared by identity: the same failure may be written only once
class _Unwritten:
    """One failure the database did not take yet."""

    values: dict[str, Any]

    def merged(self, entry: FailureEntry | None) -> FailureEntry:
        v = self.values
        if entry is None:
            return FailureEntry(v["model_id"], v["error_kind"], v["message"], v["since"], v["until"], 1)
        return FailureEntry(entry.model_id, v["error_kind"], v["message"], entry.since,
                            max(entry.until, v["until"]), entry.failure_count + 1)


class FailureCache:
    """Model failures shared through the database, read from memory."""

    def __init__(self, db: Database, *, generations: Generations | None = None) -> None:
        self.db = db
        self._generations = generations or generations_for(db)
        self._loaded: tuple[Token, dict[str, FailureEntry]] | None = None
        self._lock = threading.Lock()
        self._written_cv = threading.Condition(self._lock)  # notified whenever failures reach the database
        self._unwritten: list[_Unwritten] = []  # oldest first: the writer keeps their order; replaced, never changed
        self._merged: tuple[object, list[_Unwritten], dict[str, FailureEntry]] | None = None  # see _rows()
        self._writing = threading.Lock()  # held by the writer while it writes, and by reset()
        self._warned = False
        self._writer: threading.Thread | None = None
        self._wake = threading.Event()
        self._hurry = threading.Event()  # flush() and close(): write now, not after WRITE_DELAY_S
        self._closing_until: float | None = None  # set by close(): the writer's last moment to try

    def record(self, model_id: str, error_kind: str, message: str, cooldown_s: float, now: When = None) -> FailureEntry:
        """Note a failure: the model is skipped until max(current until, now + cooldown).

        This process honours it at once; the writer thread takes it to the database a moment later
        (other processes see it then), so the call that met the failure runs no SQL for it.
        """
        at = _as_datetime(now)
        failure = _Unwritten({
            "model_id": model_id,
            "error_kind": error_kind,
            "message": (message or "")[:MAX_MESSAGE_LEN],
            "since": at,
            "until": at + timedelta(seconds=max(0.0, cooldown_s)),
            "failure_count": 1,
        })
        with self._lock:
            # A new list, never one changed in place: _rows() knows its merge is current by the list's identity.
            self._unwritten = unwritten = [*self._unwritten, failure]
            loaded = self._loaded
        self._start_writer()
        self._wake.set()
        if loaded is None:
            return self._rows()[model_id]
        entry = loaded[1].get(model_id)
        for earlier in unwritten:
            if earlier.values["model_id"] == model_id:
                entry = earlier.merged(entry)
        return entry or failure.merged(None)  # failure is among them: never None

    def warm(self) -> None:
        """Start the writer, rehearse its write (rolled back, so that the first real one costs what every later
        one does) and load the rows. Best effort: a busy or read-only database is left alone."""
        self._start_writer()
        at = _as_datetime(None)
        probe = {"model_id": _REHEARSED, "error_kind": "rehearsal", "message": "", "since": at, "until": at,
                 "failure_count": 1}
        try:
            with self._generations.rehearsal(AREA) as s:
                self._upsert(s, probe)
                s.execute(_GENERATION).scalar_one()
                s.execute(_ALL).all()
        except Exception:  # a rehearsal that fails changes nothing; the real write reports its own failure
            log.debug("could not rehearse the cooldown write", exc_info=True)
        try:
            self._rows()  # loaded here, not by the first call that asks
        except SQLAlchemyError:
            log.debug("could not load the failure cache", exc_info=True)

    def active(self, now: When = None) -> dict[str, FailureEntry]:
        """Models still cooling down, by model id."""
        at = _as_datetime(now)
        return {m: e for m, e in self._rows().items() if e.until > at}

    def get(self, model_id: str, now: When = None) -> FailureEntry | None:
        """The model's entry while it is cooling down, else None."""
        entry = self._rows().get(model_id)
        return entry if entry is not None and entry.until > _as_datetime(now) else None

    def all(self) -> list[FailureEntry]:
        """Every entry, expired ones included, newest cooldown first (for display)."""
        return sorted(self._rows().values(), key=lambda e: e.until, reverse=True)

    def reset(self, model_id: str | None = None) -> int:
        """Forget one model's failures, or all of them; returns how many rows were cleared.

        It waits for a cooldown write under way, so a failure recorded before the reset never lands after it.
        """
        query = delete(ModelFailure)
        if model_id is not None:
            query = query.where(ModelFailure.model_id == model_id)
        with self._writing:
            stored = set(self._loaded[1]) if self._loaded else set()
            with self._generations.writing(AREA) as s:
                cleared = int(s.connection().execute(query).rowcount or 0)
            with self._lock:
                dropped = {u.values["model_id"] for u in self._unwritten if model_id in (None, u.values["model_id"])}
                self._unwritten = [u for u in self._unwritten if u.values["model_id"] not in dropped]
        return cleared + len(dropped - stored)  # a model only in memory was cleared too

    @property
    def unwritten(self) -> int:
        """Failures kept in memory because the database did not take them yet."""
        with self._lock:
            return len(self._unwritten)

    def flush(self, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Wait (at most timeout_s) until every recorded failure is in the database; False if some are not."""
        deadline = time.monotonic() + timeout_s
        self._hurry.set()
        self._wake.set()
        with self._lock:
            while self._unwritten:
                left = deadline - time.monotonic()
                if left <= 0 or not self._written_cv.wait(left):
                    return False
        if not self._writing.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False  # a write is still under way
        self._writing.release()
        return not self.unwritten

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Write the cooldowns still in memory (waiting at most timeout_s), then stop the writer; log the rest."""
        self._closing_until = time.monotonic() + timeout_s
        self._hurry.set()
        self._wake.set()
        with self._lock:  # _start_writer() assigns and starts it under the lock
            writer = self._writer
        if writer is not None:
            writer.join(timeout_s)
        with self._lock:
            left = sorted({u.values["model_id"] for u in self._unwritten})
        if left:
            log.warning("%d model cooldown(s) could not be written to the database before shutdown (%s); "
                        "other processes did not see them.", len(left), ", ".join(left))

    # -- memory ------------------------------------------------------------------------------------
    def _rows(self) -> dict[str, FailureEntry]:
        """Every entry by model id: the database's rows as of the newest token, plus unwritten failures."""
        token = self._generations.token(AREA)
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            loaded = (token, {e.model_id: e for e in self._select(_ALL)})
            self._loaded = loaded
        with self._lock:
            unwritten = self._unwritten
        if not unwritten:
            return loaded[1]
        merged = self._merged  # a failed call asks again at once (its fallback's lookup, the ranking): merge once
        if merged is not None and merged[0] is loaded and merged[1] is unwritten:
            return merged[2]
        rows = dict(loaded[1])
        for failure in unwritten:
            model = failure.values["model_id"]
            rows[model] = failure.merged(rows.get(model))
        self._merged = (loaded, unwritten, rows)
        return rows

    def _select(self, query: Select[Any]) -> list[FailureEntry]:
        with self.db.engine.connect() as conn:
            return [FailureEntry(**row._mapping) for row in conn.execute(query)]

    # -- writing (the writer thread) ---------------------------------------------------------------
    def _start_writer(self) -> None:
        if self._writer is not None and self._closing_until is None:
            return  # running: it only ends once close() asked it to (is_alive() costs a lock on every failure)
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                _WRITING.add(self)
                self._writer = threading.Thread(target=self._write_loop, name="failure-cache-writer", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        delay: float | None = None  # None: wait for the next failure; a number: retry after it
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if delay is None:  # let the call that met the failure go on alone: the write would share its GIL
                self._hurry.wait(WRITE_DELAY_S)
            self._hurry.clear()
            closing_until = self._closing_until
            written = self._write_pending()
            if closing_until is not None and (written or time.monotonic() >= closing_until):
                return
            if written:
                delay = None
            elif closing_until is not None:
                delay = CLOSE_RETRY_S
            else:
                delay = min(delay * 2, RETRY_MAX_S) if delay else RETRY_FIRST_S

    def _write_pending(self) -> bool:
        """Write every unwritten failure in one transaction, oldest first; False if the database refused."""
        with self._writing:
            with self._lock:
                failures = list(self._unwritten)
            if not failures:
                return True
            try:
                self._write(failures)
            except _NOT_WRITTEN as exc:
                self._refused(failures[-1], exc)
                return False
            except Exception:
                log.warning("Failure cache: could not write the cooldowns kept in memory", exc_info=True)
                return False
        return True

    def _write(self, failures: list[_Unwritten]) -> None:
        """Write failures and take the rows back in the same transaction: this process then need not reload
        the rows its own write changed (the bump of the generation is its own too)."""
        with self.db.session() as s:
            for failure in failures:
                self._upsert(s, failure.values)
            self._generations.bump(s.connection(), AREA)
            generation = int(s.execute(_GENERATION).scalar_one())
            rows = {e.model_id: e for e in (FailureEntry(**row._mapping) for row in s.execute(_ALL))}
        with self._lock:
            self._loaded = (self._generations.wrote(AREA, generation), rows)
            self._unwritten = [u for u in self._unwritten if u not in failures]
            caught_up = self._warned and not self._unwritten
            if caught_up:
                self._warned = False
            self._written_cv.notify_all()
        if caught_up:
            log.info("Failure cache: the cooldowns kept in memory are now written to the database.")

    def _refused(self, failure: _Unwritten, exc: Exception) -> None:
        with self._lock:
            warn, self._warned = not self._warned, True
        if warn:
            log.warning("Could not write the cooldown of %s to the database (%s); it is kept in memory, honoured "
                        "by this process and written when the database takes writes again.",
                        failure.values["model_id"], _first_line(exc))

    def _upsert(self, s: Session, values: dict[str, Any]) -> None:
        table = _TABLE
        dialect = self.db.dialect
        if dialect in ("sqlite", "postgresql"):
            # One statement, so concurrent records of one model neither duplicate nor race each other.
            s.execute(_upsert_statement(dialect), values)
            return
        try:  # other databases: insert, or update the row another process inserted first
            with s.begin_nested():
                s.execute(table.insert().values(**values))
        except IntegrityError:
            row = s.get_one(ModelFailure, values["model_id"], with_for_update=True, populate_existing=True)
            row.error_kind, row.message = values["error_kind"], values["message"]
            row.until = max(row.until, values["until"])
            row.failure_count += 1


_WRITING: weakref.WeakSet[FailureCache] = weakref.WeakSet()  # caches whose writer ran: close()d at exit


@atexit.register
def _close_at_exit() -> None:
    """A process that exits without close() (a script, a CLI command) still writes its cooldowns."""
    for cache in list(_WRITING):
        if cache.unwritten:
            cache.close()


def _merge(current: Any, new: Any) -> dict[str, Any]:
    """Column updates for a repeat failure: latest kind and message, no double cooldown, count + 1."""
    return {
        "error_kind": new.error_kind,
        "message": new.message,
        "until": case((current.until > new.until, current.until), else_=new.until),
        "failure_count": current.failure_count + 1,
    }


@functools.cache  # built once per dialect: building it per failure cost more than the write
def _upsert_statement(dialect: str) -> Insert:
    stmt = upsert_insert(dialect)(_TABLE)  # the dialect module loads only when a failure is recorded
    return cast(Insert, stmt.on_conflict_do_update(index_elements=[_TABLE.c.model_id],
                                                   set_=_merge(_TABLE.c, stmt.excluded)))


def _as_datetime(when: When) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(when), UTC)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
