"""Freshness of the in-memory caches: a change counter per area, so a call that changes nothing reads no SQL.

The failure cache, the stored keys, the model registry, the connections and the model groups keep their
rows in memory. Every write to
one of these areas bumps its row of ``cache_generations`` in the same transaction (so it works on SQLite
and PostgreSQL alike) and, after the commit, a counter of this process. A cache remembers the token
(database counter, process counter) its rows were loaded at and reloads when the token differs:

- the process counter costs nothing to read, so a write by this process is seen at once by every cache
  on the same database, also by a second Orchestrator in the same process;
- the database counters of all areas are read in one query at most every ``FRESHNESS_S``, so another
  process's reset, cooldown or new key is seen within that time. On a SQLite file that query runs on a
  connection of its own, straight on the driver: through a pooled SQLAlchemy connection a read after an
  idle moment cost ~0.55 ms of CPU, on the driver ~0.15 ms, and the first call after a pause pays it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy import Connection, Table, bindparam, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection

from .db import Database, _sqlite_path
from .tables import CacheGeneration

log = logging.getLogger(__name__)

AREAS = ("failures", "keys", "registry", "connections", "groups", "pricing", "spend")  # 0007, 0008
FRESHNESS_S = 0.25  # another process's write is seen within this time

Token = tuple[int, int]

_TABLE = cast(Table, CacheGeneration.__table__)
_READ = select(_TABLE.c.area, _TABLE.c.generation)
_BUMP = update(_TABLE).where(_TABLE.c.area == bindparam("bump_area")).values(generation=_TABLE.c.generation + 1)

# Per database (by file or URL), the counters of this process: every Database object opened on the same
# database in this process shares them.
_PROCESS_COUNTERS: dict[str, dict[str, int]] = {}
_COUNTERS_LOCK = threading.Lock()
_BY_DATABASE: weakref.WeakKeyDictionary[Database, Generations] = weakref.WeakKeyDictionary()


class Generations:
    """The change tokens of the cached areas of one database."""

    def __init__(
        self, db: Database, *, interval_s: float = FRESHNESS_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self._clock = clock
        with _COUNTERS_LOCK:
            self._local = _PROCESS_COUNTERS.setdefault(_database_key(db), dict.fromkeys(AREAS, 0))
        self._remote: dict[str, int] = {}
        self._checked_at = float("-inf")
        self._poll_lock = threading.Lock()
        self._direct = _sqlite_path(db.url) is not None  # a SQLite file: the poll reads on a connection of its own
        self._connection: PoolProxiedConnection | None = None  # that connection, opened by the first poll
        self._read_sql = ""
        self._listening = False

    def token(self, area: str) -> Token:
        """What the area's data is at: it changes whenever any process committed a write to the area."""
        if self._clock() - self._checked_at >= self.interval_s:
            self._poll()
        return self._remote.get(area, 0), self._local[area]

    def _poll(self) -> None:
        if not self._poll_lock.acquire(blocking=False):
            return  # another thread is reading the counters right now; its answer is as fresh as needed
        try:
            asked_at = self._clock()
            self._remote = self._read()
            self._checked_at = asked_at
        except (SQLAlchemyError, sqlite3.Error):
            # The caches then serve what they have; the next read asks again.
            log.debug("could not read the cache generations", exc_info=True)
        finally:
            self._poll_lock.release()

    def _read(self) -> dict[str, int]:
        """The database counters of every area (under the poll lock)."""
        if self._direct:
            try:
                cursor, sql = self._direct_cursor()
                return {area: int(generation) for area, generation in cursor.execute(sql)}
            except sqlite3.Error:
                self._close_direct()  # opened afresh by the next poll (a busy moment, a replaced file)
                raise
        with self.db.engine.connect() as conn:
            return {area: int(generation) for area, generation in conn.execute(_READ)}

    def _direct_cursor(self) -> tuple[sqlite3.Cursor, str]:
        if self._connection is None:
            # Opened by the engine (its connect options and pragmas), then detached: it never holds up the pool
            # and dispose() closes it (below). Autocommit reads: a SELECT holds no read snapshot after it ends.
            direct = self.db.engine.raw_connection()
            direct.detach()
            if not self._listening:
                event.listen(self.db.engine, "engine_disposed", self._on_disposed)
                self._listening = True
            self._connection = direct
            self._read_sql = str(_READ.compile(dialect=self.db.engine.dialect))
        return cast(sqlite3.Connection, self._connection.dbapi_connection).cursor(), self._read_sql

    def _on_disposed(self, _engine: Engine) -> None:
        with self._poll_lock:
            self._close_direct()

    def _close_direct(self) -> None:
        direct, self._connection = self._connection, None
        if direct is None:
            return
        try:
            direct.close()
        except sqlite3.Error:
            log.debug("could not close the cache generations' connection", exc_info=True)

    def refresh(self) -> None:
        """Read the database counters on the next token(), whatever the time since the last read."""
        self._checked_at = float("-inf")

    @contextmanager
    def writing(self, area: str) -> Iterator[Session]:
        """A transaction that changes area: the bump commits with it, and this process sees it at once."""
        try:
            with self.db.session() as s:
                yield s
                s.execute(_BUMP, {"bump_area": area})
        finally:
            self.changed(area)  # also after a rollback: a needless reload is harmless

    @contextmanager
    def rehearsal(self, area: str) -> Iterator[Session]:
        """writing(area) rolled back: the same statements on the same ORM path, nothing kept.

        A process's first write compiles its statements and opens a pooled connection (about 8 ms of CPU,
        against 1 ms for every later one); a rehearsal at start-up takes that off the first call that has
        to write. It waits at most db.SHORT_BUSY_TIMEOUT_MS for a busy database.
        """
        with self.db.quick_write() as conn:
            with Session(bind=conn) as s:
                yield s
                s.execute(_BUMP, {"bump_area": area})
            conn.rollback()  # quick_write's commit then finds nothing to commit

    def bump(self, conn: Connection, area: str) -> None:
        """Bump area's database counter inside conn's transaction; call changed() once it has ended."""
        conn.execute(_BUMP, {"bump_area": area})

    def wrote(self, area: str, generation: int) -> Token:
        """After a commit that bumped area's database counter to generation: the token this process's caches
        now hold, so the writer's own change reloads nothing (changed() without a poll)."""
        with _COUNTERS_LOCK:
            self._local[area] += 1
            self._remote = {**self._remote, area: max(self._remote.get(area, 0), generation)}
            return self._remote[area], self._local[area]

    def changed(self, area: str) -> None:
        """Tell every cache of this process on this database that area changed."""
        with _COUNTERS_LOCK:
            self._local[area] += 1


def generations_for(db: Database) -> Generations:
    """The one Generations of a Database object, shared by its caches so one query serves all areas."""
    with _COUNTERS_LOCK:
        found = _BY_DATABASE.get(db)
    if found is None:
        found = Generations(db)
        with _COUNTERS_LOCK:
            found = _BY_DATABASE.setdefault(db, found)
    return found


def _database_key(db: Database) -> str:
    path = _sqlite_path(db.url)
    if path is not None:
        return f"sqlite:{path.resolve()}"
    if db.url.get_backend_name() == "sqlite":
        return f"memory:{id(db.engine)}"  # every in-memory engine is its own database
    return db.url.render_as_string(hide_password=True)
