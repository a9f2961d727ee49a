"""The one place that owns the engine, the session factory and schema migrations.

``Database.open(url)`` checks the location, connects, applies SQLite pragmas and upgrades the
schema to the newest migration. Every start-up failure becomes ``errors.DatabaseError`` with a
message that says what to fix. After start-up, a statement that meets another process's write lock
past the busy wait raises ``errors.DatabaseBusyError`` (classified once, in ``_classify_busy``), never
a raw OperationalError carrying SQL and bound values.

The schema revision is read with plain SQL and compared with the newest migration file's revision
line (``revision.head_revision``); Alembic is imported only when an upgrade is due.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ..config import DEFAULT_DATABASE_URL, home_dir
from ..errors import DatabaseBusyError, DatabaseError
from .revision import MIGRATIONS_DIR, head_revision

BUSY_TIMEOUT_MS = 5000
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# Driver -> its connect-timeout argument (seconds). sqlite has none: it opens a file.
_CONNECT_TIMEOUT_ARGS = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout", "pymysql": "connect_timeout",
                         "mysqldb": "connect_timeout", "pg8000": "timeout"}
# Best-effort writes (discovered models, the secret verifier) wait this long for a busy database, then skip.
SHORT_BUSY_TIMEOUT_MS = 200
BUSY_MESSAGE = ("The database is busy: another process is writing to it. Nothing was changed; try again in a "
                "moment.")
# PostgreSQL SQLSTATEs that mean "someone else holds the lock": lock_not_available, deadlock_detected.
_PG_BUSY_STATES = ("55P03", "40P01")
# Any constant shared by every process: the PostgreSQL advisory lock that serialises migrations.
_PG_MIGRATION_LOCK = 727_001
# Alembic's ``op`` and ``context`` are module-wide proxies, so two threads must never migrate at once.
_MIGRATION_THREAD_LOCK = threading.Lock()

# Driver module -> what to pip install, for "No module named ..." at start-up.
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


class Database:
    """An engine plus session factory on one migrated database."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(
        cls, url: str, *, check_writable: bool = True, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> Database:
        """Connect to ``url``, upgrade the schema to the newest migration and return the database.

        check_writable=False (read-only commands such as ``status``) opens a database that is at the
        newest migration without taking the write lock, so it works while another process writes.

        A database server is given ``connect_timeout_s`` (DB_CONNECT_TIMEOUT_S) to answer, so one that
        accepts connections and never speaks fails start-up instead of hanging it.
        """
        parsed = _parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite_location(parsed, create_folder=_sqlite_path(parsed) == default_sqlite_path())
        engine = _create_engine(parsed, connect_timeout_s)
        try:
            _migrate(engine, check_writable=check_writable)
        except DatabaseError:
            engine.dispose()
            raise
        except DatabaseBusyError as error:
            engine.dispose()
            raise _translate(error.__cause__ or error, parsed, connect_timeout_s) from error
        except (exc.SQLAlchemyError, sqlite3.Error, OSError) as error:
            engine.dispose()
            raise _translate(error, parsed, connect_timeout_s) from error
        return cls(engine, parsed)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def dir(self) -> Path | None:
        """The folder of the SQLite file; None for in-memory SQLite and server databases."""
        path = _sqlite_path(self.url)
        return path.parent if path else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside a transaction: committed on exit, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> None:
        """One round trip (SELECT 1); raises SQLAlchemyError when the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def quick_write(self) -> Iterator[Connection]:
        """A transaction that waits only SHORT_BUSY_TIMEOUT_MS for a busy database (then DatabaseBusyError).

        For best-effort writes a reader triggers (discovery during a status check): a page or a
        read-only command must not stall for the full busy wait because another process writes.
        """
        with self.engine.connect() as conn:
            sqlite_db = conn.dialect.name == "sqlite"
            if sqlite_db:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={SHORT_BUSY_TIMEOUT_MS}")
            elif conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {SHORT_BUSY_TIMEOUT_MS}")
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                if sqlite_db:  # the connection goes back to the pool: give it the normal wait again
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    conn.rollback()

    def startup_error(self, error: BaseException) -> DatabaseError:
        """A failure of the first reads after open (e.g. a corrupt table page) as a DatabaseError saying what to fix."""
        return _translate(error, self.url)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


# ---------------------------------------------------------------------------------------------
# Start-up checks


def default_sqlite_path() -> Path:
    """Where DEFAULT_DATABASE_URL points: data/orchestrator.db under home_dir()."""
    return home_dir() / (make_url(DEFAULT_DATABASE_URL).database or "")


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise DatabaseError(
            f"DATABASE_URL {_hide_password(url)!r} is not a database URL; use a SQLAlchemy URL such as "
            f"{DEFAULT_DATABASE_URL} or postgresql+psycopg://user:password@host/dbname."
        ) from None
    return _anchor_sqlite_path(parsed)


def _anchor_sqlite_path(url: URL) -> URL:
    """A relative SQLite file is taken from home_dir(), not the current folder, so every start finds the same data."""
    if _sqlite_path(url) is None:
        return url
    path = Path(url.database or "").expanduser()
    return url if path.is_absolute() else url.set(database=str(home_dir() / path))


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("uri"):
        return None
    return Path(database).absolute()


def _check_sqlite_location(url: URL, *, create_folder: bool) -> None:
    path = _sqlite_path(url)
    if path is None:
        return
    folder = path.parent
    elsewhere = "or set DATABASE_URL to a file in a writable folder"
    if create_folder and not folder.exists():
        # The default data/ folder (under home_dir()) is made on first start so a fresh clone just works.
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            message = f"Cannot create the folder {folder} ({error.strerror}); create it {elsewhere}."
            raise DatabaseError(message) from None
    if not folder.exists():
        raise DatabaseError(f"The folder {folder} for the database does not exist; create it (mkdir -p {folder}) "
                            f"{elsewhere}.")
    if not folder.is_dir():
        raise DatabaseError(f"{folder} is not a folder, so the database {path.name} cannot be created in it; "
                            "set DATABASE_URL to a file in a writable folder.")
    if path.is_dir():
        raise DatabaseError(f"The database path {path} is a folder, not a file; set DATABASE_URL to a file path.")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseError(f"The database file {path} is read-only; make it writable (chmod u+rw {path}) {elsewhere}.")
    # SQLite writes its -wal and -shm files beside the database, so the folder must be writable too.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(f"The database folder {folder} is read-only; make it writable (chmod u+w {folder}) "
                            f"{elsewhere}.")


def _create_engine(url: URL, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Engine:
    options: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if _sqlite_path(url) is None and (url.database or "") in ("", ":memory:"):
            # One shared connection, or every pooled connection would see its own empty database.
            options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        # Without a connect timeout libpq waits for an answer forever; whole seconds, at least 2 (libpq's floor).
        options = {"pool_pre_ping": True, "pool_timeout": connect_timeout_s}
        default_driver = {"postgresql": "psycopg2", "mysql": "mysqldb"}.get(url.drivername, "")
        driver = url.drivername.partition("+")[2] or default_driver
        timeout_arg = _CONNECT_TIMEOUT_ARGS.get(driver)
        if timeout_arg:
            options["connect_args"] = {timeout_arg: max(2, math.ceil(connect_timeout_s))}
    # A failed statement's message would quote its parameters: a key's ciphertext, a token's hash, a label.
    # Such messages reach logs (log.warning(..., exc_info=True)), so SQLAlchemy leaves them out.
    options["hide_parameters"] = True
    try:
        engine = create_engine(url, **options)
    except exc.NoSuchModuleError:
        raise DatabaseError(
            f"SQLAlchemy has no database driver {url.drivername!r} (from DATABASE_URL); check the spelling, "
            "for example sqlite:///data/orchestrator.db or postgresql+psycopg://user:password@host/dbname."
        ) from None
    except ImportError as error:
        module = (error.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "the driver")
        raise DatabaseError(
            f"The database driver for {url.drivername!r} is not installed; run `pip install {package}` "
            "or change DATABASE_URL."
        ) from None
    except exc.ArgumentError as error:
        raise DatabaseError(f"DATABASE_URL is not usable: {error}; fix the URL.") from None
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "handle_error", _classify_busy)
    return engine


def upsert_insert(dialect: str) -> Any:
    """The dialect's insert() that has on_conflict_do_nothing (SQLite or PostgreSQL), imported on first use:
    the PostgreSQL dialect alone costs a CLI start about 50 ms."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite  # noqa: PLC0415 - start-up cost: loaded only when needed

        return sqlite.insert
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415 - start-up cost: loaded only when needed

    return postgresql.insert


def is_busy(error: BaseException) -> bool:
    """True for "another process holds the lock" (SQLite locked/busy, PostgreSQL lock timeout or deadlock)."""
    original = getattr(error, "orig", None) or error
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return "database is locked" in text or "database is busy" in text or "database table is locked" in text
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return state in _PG_BUSY_STATES


def _classify_busy(context: ExceptionContext) -> None:
    # One place for every statement on the engine: the SQLAlchemy error would carry the SQL and its
    # bound values (an encrypted key, a prompt's metadata) into any message that shows it.
    if is_busy(context.original_exception):
        raise DatabaseBusyError(BUSY_MESSAGE) from context.sqlalchemy_exception


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # wait for another writer instead of failing
        _use_wal(cursor)  # readers never block the metrics writer, nor it them
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses at most the last commit
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at
    # once (busy_timeout does not apply) while another process holds its migration lock: retry a while.
    # (In-memory and read-only databases keep their mode without an error; that is fine.)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _translate(error: BaseException, url: URL, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> DatabaseError:
    """A start-up failure as a DatabaseError that says what to fix."""
    detail = str(getattr(error, "orig", None) or error).strip()
    first_line = detail.splitlines()[0] if detail else type(error).__name__
    lowered = detail.lower()
    path = _sqlite_path(url)
    sqlite_db = url.get_backend_name() == "sqlite"
    where = str(path or url.database) if sqlite_db else url.render_as_string(hide_password=True)
    if "readonly database" in lowered or "read-only" in lowered:
        return DatabaseError(f"The database {where} is read-only; make the file and its folder writable "
                             "or set DATABASE_URL to a writable location.")
    if "file is not a database" in lowered or "malformed" in lowered:
        return DatabaseError(f"{where} is not a SQLite database or is corrupt; move it aside (a new empty one "
                             "is created on the next start) or restore it from a backup.")
    if "unable to open database file" in lowered:
        return DatabaseError(f"The database file {where} cannot be opened; check that its folder exists and "
                             "is writable, or set DATABASE_URL to another location.")
    if "database is locked" in lowered:
        return DatabaseError(f"The database {where} stayed locked by another process for more than "
                             f"{BUSY_TIMEOUT_MS // 1000} s; stop the other process or try again.")
    if path is None and ("timeout expired" in lowered or "timed out" in lowered):
        return DatabaseError(f"The database server {where} did not answer within {connect_timeout_s:g} s "
                             "(DB_CONNECT_TIMEOUT_S); check that the host and port in DATABASE_URL belong to a "
                             "running database server (a wrong port or a firewall can accept connections and "
                             "never answer), or raise DB_CONNECT_TIMEOUT_S for a slow network.")
    if isinstance(error, exc.OperationalError) and path is None:
        return DatabaseError(f"Could not connect to the database {where}: {first_line}; check that the server is "
                             "running and that the host, port, user and password in DATABASE_URL are right.")
    return DatabaseError(f"The database {where} could not be opened: {first_line}.")


# ---------------------------------------------------------------------------------------------
# Migrations


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """An Alembic Config built in code, pointing at orchestrator_core/migrations (no alembic.ini)."""
    from alembic.config import Config  # noqa: PLC0415 - start-up cost: loaded only when needed

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """The migration the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - start-up cost: loaded only when needed

    return MigrationContext.configure(connection).get_current_revision()


def _stored_revisions(conn: Connection) -> tuple[str, ...]:
    """alembic_version read with plain SQL: () for a database that has never been migrated."""
    if not conn.dialect.has_table(conn, "alembic_version"):
        return ()
    return tuple(str(row[0]) for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version"))


def _migrate(engine: Engine, *, check_writable: bool = True) -> None:
    with _MIGRATION_THREAD_LOCK, engine.connect() as conn:
        head = head_revision()
        if not check_writable and _stored_revisions(conn) == (head,):
            conn.rollback()
            return  # at head, and the caller only reads: no lock, no write
        # Runs on every writable start, even at head, so a read-only SQLite file fails here, not on first write.
        _lock_for_migration(conn)
        # Another process may have finished the upgrade while this one waited for the lock.
        stored = _stored_revisions(conn)
        if stored != (head,):
            _upgrade(conn, stored[0] if stored else None)
        elif conn.dialect.name == "sqlite":
            # A no-op write: SQLite grants BEGIN IMMEDIATE even on a read-only file and fails only here.
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
        conn.commit()


def _upgrade(conn: Connection, current: str | None) -> None:
    from alembic import command  # noqa: PLC0415 - start-up cost: loaded only when needed
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - start-up cost: loaded only when needed
    from alembic.util import CommandError  # noqa: PLC0415 - start-up cost: loaded only when needed

    config = alembic_config(conn)
    try:
        if current is not None:
            ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:
        raise DatabaseError(
            f"The database is at schema revision {current!r}, which this version of orchestrator_core does not "  # noqa: S608 - a message, not SQL
            "know (a newer version migrated it); update orchestrator_core or set DATABASE_URL to another database."
        ) from None
    try:
        command.upgrade(config, "head")
    except CommandError as error:
        raise DatabaseError(f"Upgrading the database schema failed: {error}.") from error


def _lock_for_migration(conn: Connection) -> None:
    """Start the migration transaction holding a lock that makes a second process wait, then see head."""
    if conn.dialect.name == "sqlite":
        # BEGIN IMMEDIATE takes the write lock up front; SQLite DDL is transactional, so the whole
        # upgrade commits or rolls back as one. A second process waits (busy_timeout) and then finds head.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
