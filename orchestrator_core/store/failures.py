"""The failure cache: which models failed recently and stay skipped until when.

It lives in the database, so every process on the same database (console, CLI, workers) skips the
same models. One row per model, kept from its first failure until ``reset`` (a success should reset
it): ``failure_count`` counts failures since then, so a caller can lengthen the cooldown each time.

Reads are served from memory: the rows are reloaded only when a write changed them, in this process
(seen at once) or in another (seen within ``generations.FRESHNESS_S``). A cooldown that cannot be
written (the database locked past its busy timeout, or read-only) is kept in memory, honoured here, and
written later: with the next write that succeeds, or by a background retry.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Select, Table, bindparam, case, delete, select
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError
from sqlalchemy.orm import Session

from ..errors import DatabaseBusyError, DatabaseError
from .db import Database, upsert_insert
from .generations import Generations, Token, generations_for
from .tables import ModelFailure

log = logging.getLogger(__name__)

MAX_MESSAGE_LEN = 1000
AREA = "failures"
RETRY_FIRST_S = 1.0  # a cooldown that could not be written is retried after this, doubling up to RETRY_MAX_S
RETRY_MAX_S = 30.0
# Failures worth keeping a cooldown in memory for: locked, read-only, disk full, connection lost.
_NOT_WRITTEN = (OperationalError, InternalError, DatabaseError, DatabaseBusyError)

_TABLE = cast(Table, ModelFailure.__table__)
_ALL = select(_TABLE).order_by(_TABLE.c.until.desc())
_ONE = select(_TABLE).where(_TABLE.c.model_id == bindparam("one_model_id"))
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
        self._unwritten: list[_Unwritten] = []
        self._in_flight: set[_Unwritten] = set()  # unwritten failures a write is taking to the database now
        self._warned = False
        self._retrier: threading.Thread | None = None
        self._stop = threading.Event()

    def record(self, model_id: str, error_kind: str, message: str, cooldown_s: float, now: When = None) -> FailureEntry:
        """Note a failure: the model is skipped until max(current until, now + cooldown)."""
        at = _as_datetime(now)
        failure = _Unwritten({
            "model_id": model_id,
            "error_kind": error_kind,
            "message": (message or "")[:MAX_MESSAGE_LEN],
            "since": at,
            "until": at + timedelta(seconds=max(0.0, cooldown_s)),
            "failure_count": 1,
        })
        earlier = self._claim()
        try:
            return self._write([*earlier, failure])
        except _NOT_WRITTEN as exc:
            self._release(earlier)
            self._keep(failure, exc)
            return self._rows()[model_id]
        except BaseException:
            self._release(earlier)
            raise

    def warm(self) -> None:
        """Rehearse a cooldown write, rolled back, so that the first real one (inside the call that met the
        failure) costs what every later one does. Best effort: a busy or read-only database is left alone."""
        at = _as_datetime(None)
        probe = {"model_id": _REHEARSED, "error_kind": "rehearsal", "message": "", "since": at, "until": at,
                 "failure_count": 1}
        try:
            with self._generations.rehearsal(AREA) as s:
                self._upsert(s, probe)
                s.execute(_ONE, {"one_model_id": _REHEARSED}).one()
        except Exception:  # a rehearsal that fails changes nothing; the real write reports its own failure
            log.debug("could not rehearse the cooldown write", exc_info=True)

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
        """Forget one model's failures, or all of them; returns how many rows were cleared."""
        query = delete(ModelFailure)
        if model_id is not None:
            query = query.where(ModelFailure.model_id == model_id)
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

    def close(self) -> None:
        """Stop retrying; a cooldown still not written is logged (it only lasts minutes anyway)."""
        self._stop.set()
        retrier = self._retrier
        if retrier is not None:
            retrier.join(5.0)
        if self.unwritten:
            log.warning("%d model cooldown(s) could not be written to the database before shutdown; "
                        "other processes did not see them.", self.unwritten)

    # -- memory ------------------------------------------------------------------------------------
    def _rows(self) -> dict[str, FailureEntry]:
        """Every entry by model id: the database's rows as of the newest token, plus unwritten failures."""
        token = self._generations.token(AREA)
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            loaded = (token, {e.model_id: e for e in self._select(_ALL)})
            self._loaded = loaded
        with self._lock:
            unwritten = list(self._unwritten)
        if not unwritten:
            return loaded[1]
        rows = dict(loaded[1])
        for failure in unwritten:
            model = failure.values["model_id"]
            rows[model] = failure.merged(rows.get(model))
        return rows

    def _select(self, query: Select[Any]) -> list[FailureEntry]:
        with self.db.engine.connect() as conn:
            return [FailureEntry(**row._mapping) for row in conn.execute(query)]

    # -- writing -----------------------------------------------------------------------------------
    def _write(self, failures: list[_Unwritten]) -> FailureEntry:
        """Write failures in one transaction (earlier unwritten ones first); the entry of the last one."""
        with self._generations.writing(AREA) as s:
            for failure in failures:
                self._upsert(s, failure.values)
            row = s.execute(_ONE, {"one_model_id": failures[-1].values["model_id"]}).one()
            entry = FailureEntry(**row._mapping)
        self._written(failures)
        return entry

    def _claim(self) -> list[_Unwritten]:
        """The unwritten failures no other write is taking yet, now taken by the caller."""
        with self._lock:
            free = [u for u in self._unwritten if u not in self._in_flight]
            self._in_flight.update(free)
        return free

    def _release(self, failures: list[_Unwritten]) -> None:
        with self._lock:
            self._in_flight.difference_update(failures)

    def _written(self, failures: list[_Unwritten]) -> None:
        with self._lock:
            before = len(self._unwritten)
            self._unwritten = [u for u in self._unwritten if u not in failures]
            self._in_flight.difference_update(failures)
            caught_up = before > 0 and not self._unwritten
        if caught_up:
            log.info("Failure cache: the cooldowns kept in memory are now written to the database.")
            self._warned = False

    def _keep(self, failure: _Unwritten, exc: Exception) -> None:
        with self._lock:
            self._unwritten.append(failure)
            warn, self._warned = not self._warned, True
            if self._retrier is None or not self._retrier.is_alive():
                self._retrier = threading.Thread(target=self._retry, name="failure-cache-retry", daemon=True)
                self._retrier.start()
        if warn:
            log.warning("Could not write the cooldown of %s to the database (%s); it is kept in memory, honoured "
                        "by this process and written when the database takes writes again.",
                        failure.values["model_id"], _first_line(exc))

    def _retry(self) -> None:
        delay = RETRY_FIRST_S
        while not self._stop.wait(delay):
            if not self.unwritten:
                return
            failures = self._claim()
            if not failures:
                continue  # a record() is writing them right now
            try:
                self._write(failures)
            except _NOT_WRITTEN:
                self._release(failures)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception:
                self._release(failures)
                log.warning("Failure cache: giving up writing kept cooldowns", exc_info=True)
                return

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
