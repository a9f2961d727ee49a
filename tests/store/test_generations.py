"""Caches in memory: another process's writes are seen within the freshness window; refused cooldowns are kept."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event

from orchestrator_core.store import Database, FailureCache, KeyStore, ModelRegistry
from orchestrator_core.store import db as db_module
from orchestrator_core.store import failures as failures_module
from orchestrator_core.store.generations import FRESHNESS_S, generations_for

SECRET = Fernet.generate_key().decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(db: Database) -> Clock:
    fake = Clock()
    generations_for(db)._clock = fake
    return fake


def run_other_process(db_url: str, code: str) -> None:
    """Run code in a separate Python process with `db` open on the same database."""
    script = "from orchestrator_core.store import *\nfrom cryptography.fernet import Fernet\n"
    script += f"db = Database.open({db_url!r})\n" + textwrap.dedent(code) + "\ndb.dispose()\n"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=60)


def test_another_process_cooldown_reset_key_and_model_are_seen_within_the_freshness_window(
    db_url: str, db: Database, clock: Clock
) -> None:
    failures, registry = FailureCache(db), ModelRegistry(db)
    keys = KeyStore(db, Fernet(SECRET.encode()))
    failures.record("openai:a", "timeout", "slow", 600)
    assert failures.flush(timeout_s=30) and failures.get("openai:a") is not None  # written, then reset there
    assert keys.secret_for("openai") is None and registry.get("custom:new") is None

    run_other_process(db_url, f"""
        FailureCache(db).reset("openai:a")
        theirs = FailureCache(db)
        theirs.record("openai:b", "rate_limit", "429", 600)
        theirs.close()
        KeyStore(db, Fernet({SECRET!r}.encode())).add("openai", "work", "sk-from-the-other-process-0123")
        ModelRegistry(db).add("custom:new")
    """)
    # Within the window this process answers from memory, without asking the database.
    assert failures.get("openai:a") is not None and failures.get("openai:b") is None
    assert keys.secret_for("openai") is None
    clock.now += FRESHNESS_S
    assert failures.get("openai:a") is None
    entry = failures.get("openai:b")
    assert entry is not None and entry.error_kind == "rate_limit"
    assert keys.secret_for("openai") == "sk-from-the-other-process-0123"
    assert registry.get("custom:new") is not None


@pytest.mark.sqlite_only  # only a SQLite file reads its counters on a connection of its own
def test_the_counters_connection_of_its_own_is_opened_again_after_a_dispose_or_a_failed_read(
    db_url: str, db: Database, clock: Clock
) -> None:
    generations = generations_for(db)
    assert generations._direct, "a SQLite file reads its change counters on a driver connection of its own"
    registry = ModelRegistry(db)
    assert registry.get("custom:one") is None  # the counters are read: their connection is open
    run_other_process(db_url, 'ModelRegistry(db).add("custom:one")')
    db.dispose()  # closes that connection too (a disposed engine keeps no open file)
    assert generations._connection is None
    clock.now += FRESHNESS_S
    assert registry.get("custom:one") is not None  # read on a connection opened again

    assert generations._connection is not None
    driver = generations._connection.dbapi_connection
    assert isinstance(driver, sqlite3.Connection)
    driver.close()  # as a broken connection would fail
    run_other_process(db_url, 'ModelRegistry(db).add("custom:two")')
    clock.now += FRESHNESS_S
    assert registry.get("custom:two") is None  # that read failed: the cache serves what it has
    assert registry.get("custom:two") is not None  # and the next read, on a new connection, sees the write


def test_a_write_by_this_process_is_seen_at_once_by_every_cache_on_the_database(
    db_url: str, db: Database, clock: Clock
) -> None:
    other = Database.open(db_url)  # a second Orchestrator in the same process opens its own Database
    generations_for(other)._clock = clock
    mine, theirs = FailureCache(db), FailureCache(other)
    assert theirs.get("openai:a") is None
    mine.record("openai:a", "timeout", "slow", 600)
    assert mine.flush(timeout_s=30)
    assert theirs.get("openai:a") is not None  # the clock did not move: no poll was needed
    theirs.reset("openai:a")
    assert mine.get("openai:a") is None
    other.dispose()


@pytest.fixture
def locked_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Database, sqlite3.Connection]]:
    """A database whose writes wait 50 ms for a lock, and another connection that can hold the write lock."""
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(failures_module, "RETRY_FIRST_S", 0.05)
    database = Database.open(db_url)
    path = db_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield database, holder
    holder.close()
    database.dispose()


def stored_failures(holder: sqlite3.Connection) -> dict[str, int]:
    return dict(holder.execute("SELECT model_id, failure_count FROM model_failures").fetchall())


def wait_for_warning(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    deadline = time.monotonic() + 30
    while not [r for r in caplog.records if text in r.getMessage()]:
        assert time.monotonic() < deadline, f"no warning with {text!r}"
        time.sleep(0.01)
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.sqlite_only  # the lock is sqlite3's BEGIN IMMEDIATE on the file
def test_a_cooldown_the_locked_database_refused_is_honoured_and_written_once_it_takes_writes(
    locked_db: tuple[Database, sqlite3.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    database, holder = locked_db
    cache = FailureCache(database)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
    first = cache.record("openai:a", "rate_limit", "429", 600)
    cache.record("openai:a", "timeout", "slow", 10)
    cache.record("openai:b", "timeout", "slow", 600)
    assert (first.model_id, first.failure_count) == ("openai:a", 1)
    kept = cache.get("openai:a")
    assert kept is not None and kept.failure_count == 2 and kept.error_kind == "timeout"
    assert kept.remaining_s() > 500  # the longer cooldown stands
    assert set(cache.active()) == {"openai:a", "openai:b"}
    warnings = wait_for_warning(caplog, "kept in memory")
    assert len(warnings) == 1
    holder.execute("COMMIT")

    cache.record("google:c", "timeout", "slow", 600)
    assert cache.flush(timeout_s=30)
    assert stored_failures(holder) == {"openai:a": 2, "openai:b": 1, "google:c": 1}
    assert cache.unwritten == 0
    entry = cache.get("openai:a")
    assert entry is not None and entry.failure_count == 2  # written once, not counted twice
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1  # one warning per outage
    cache.close()


@pytest.mark.sqlite_only  # the lock is sqlite3's BEGIN IMMEDIATE on the file
def test_close_writes_the_cooldowns_still_in_memory_once_the_database_takes_writes(
    locked_db: tuple[Database, sqlite3.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    database, holder = locked_db
    cache = FailureCache(database)
    holder.execute("BEGIN IMMEDIATE")
    cache.record("openai:a", "rate_limit", "429", 600)
    wait_for_warning(caplog, "kept in memory")  # the writer tried and was refused: it now backs off
    holder.execute("COMMIT")
    cache.close()
    assert stored_failures(holder) == {"openai:a": 1}


@pytest.mark.sqlite_only  # the lock is sqlite3's BEGIN IMMEDIATE on the file
def test_close_names_the_cooldowns_it_could_not_write_within_its_wait(
    locked_db: tuple[Database, sqlite3.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    database, holder = locked_db
    cache = FailureCache(database)
    holder.execute("BEGIN IMMEDIATE")
    cache.record("openai:a", "rate_limit", "429", 600)
    cache.close(timeout_s=0.3)
    holder.execute("COMMIT")
    assert any("before shutdown (openai:a)" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.sqlite_only  # the lock is sqlite3's BEGIN IMMEDIATE on the file
def test_a_cooldown_the_locked_database_refused_is_written_by_the_retry_once_the_lock_is_gone(
    locked_db: tuple[Database, sqlite3.Connection],
) -> None:
    database, holder = locked_db
    cache = FailureCache(database)
    holder.execute("BEGIN IMMEDIATE")
    cache.record("openai:a", "rate_limit", "429", 600)
    assert cache.unwritten == 1 and stored_failures(holder) == {}
    holder.execute("COMMIT")
    deadline = time.monotonic() + 30
    while cache.unwritten and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored_failures(holder) == {"openai:a": 1}
    cache.close()


@pytest.mark.sqlite_only  # the lock is sqlite3's BEGIN IMMEDIATE on the file
def test_a_reset_forgets_a_cooldown_that_was_never_written(locked_db: tuple[Database, sqlite3.Connection]) -> None:
    database, holder = locked_db
    cache = FailureCache(database)
    holder.execute("BEGIN IMMEDIATE")
    cache.record("openai:a", "rate_limit", "429", 600)
    holder.execute("COMMIT")
    assert cache.reset("openai:a") == 1
    assert cache.get("openai:a") is None and cache.unwritten == 0
    cache.close()


def test_another_process_sees_a_cooldown_the_calling_thread_left_to_the_writer(db_url: str, db: Database) -> None:
    cache = FailureCache(db)
    cache.all()  # loaded, as in a running app
    seen = statements_on_this_thread(db)
    cache.record("openai:a", "unavailable", "refused", 600)
    assert seen == []  # nothing written on the calling thread
    run_other_process(db_url, """
        import time
        deadline = time.monotonic() + 30
        while FailureCache(db).get("openai:a") is None:
            assert time.monotonic() < deadline, "the cooldown never reached the database"
            time.sleep(0.02)
    """)
    cache.close()


def test_a_reset_right_after_a_failure_wins_over_its_write_under_way(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FailureCache(db)
    cache.all()
    writing, release = threading.Event(), threading.Event()
    upsert = FailureCache._upsert

    def slow_upsert(self: FailureCache, s: Any, values: dict[str, Any]) -> None:
        writing.set()
        release.wait(30)  # the writer is inside its transaction when the reset comes
        upsert(self, s, values)

    monkeypatch.setattr(FailureCache, "_upsert", slow_upsert)
    cache.record("openai:a", "unavailable", "refused", 600)
    assert writing.wait(30)
    resetting = threading.Thread(target=cache.reset, args=("openai:a",))
    resetting.start()
    resetting.join(0.2)  # give the reset time to overtake the write, were it not made to wait for it
    release.set()
    resetting.join(30)
    assert cache.flush(timeout_s=30)
    assert cache.get("openai:a") is None
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM model_failures").scalar() == 0
    cache.close()


def test_two_failures_of_one_model_reach_the_database_in_the_order_recorded(db: Database) -> None:
    cache = FailureCache(db)
    for kind in ("rate_limit", "timeout", "auth"):
        cache.record("openai:a", kind, kind, 600)
    assert cache.flush(timeout_s=30)
    with db.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT error_kind, failure_count FROM model_failures").one()
    assert tuple(row) == ("auth", 3)
    cache.close()


def statements_on_this_thread(db: Database) -> list[str]:
    caller = threading.get_ident()
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == caller:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    return seen


def test_a_process_that_exits_without_close_still_writes_its_cooldown(db_url: str, db: Database) -> None:
    run_other_process(db_url, """
        FailureCache(db).record("openai:a", "timeout", "slow", 600)
    """)
    entry = FailureCache(db).get("openai:a")
    assert entry is not None and entry.error_kind == "timeout"
