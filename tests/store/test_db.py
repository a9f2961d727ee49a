"""Database.open: migrations, SQLite pragmas, and a DatabaseError that says what to fix."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from orchestrator_core.config import DEFAULT_DATABASE_URL
from orchestrator_core.errors import DatabaseError
from orchestrator_core.store import Database, revision
from orchestrator_core.store import db as db_module
from orchestrator_core.store.tables import ApiKey, Base

SEED_IDS = {
    "openai:gpt-4.1-mini",
    "anthropic:claude-haiku-4-5",
    "google:gemini-2.5-flash",
    "mistral:mistral-small-latest",
}
REPO = Path(__file__).resolve().parents[2]


def _scalar(db: Database, sql: str) -> object:
    with db.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_open_creates_every_table_indexes_and_seed_models(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"ai_models", "api_keys", "call_metrics", "model_failures", "sign_in_limits", "alembic_version"} <= tables
    indexes = {ix["name"] for ix in inspect(db.engine).get_indexes("call_metrics")}
    assert {"ix_call_metrics_ts", "ix_call_metrics_model_ts", "ix_call_metrics_fallback_from_ts"} <= indexes
    with db.engine.connect() as conn:
        seeds = conn.execute(text("SELECT model_id, source, active FROM ai_models")).all()
    assert {row.model_id for row in seeds} == SEED_IDS
    assert all(row.source == "seed" and row.active for row in seeds)
    assert _scalar(db, "SELECT version_num FROM alembic_version") == db_module.head_revision()


def test_migrations_build_exactly_the_orm_schema(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_open_twice_is_idempotent(db_url: str) -> None:
    Database.open(db_url).dispose()
    again = Database.open(db_url)
    assert _scalar(again, "SELECT COUNT(*) FROM ai_models") == 4
    assert _scalar(again, "SELECT COUNT(*) FROM alembic_version") == 1
    again.dispose()


def test_two_processes_opening_a_new_database_at_once_both_succeed(empty_db_url: str) -> None:
    url = empty_db_url
    start_at = time.time() + 1.2  # both processes import first, then open in the same instant
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from orchestrator_core.store import Database;"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()));"
        "Database.open(sys.argv[2]).dispose(); print('opened')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(REPO), url, str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    assert all(out.strip() == "opened" for out, _ in results)
    db = Database.open(url)
    assert _scalar(db, "SELECT COUNT(*) FROM ai_models") == 4
    assert _scalar(db, "SELECT COUNT(*) FROM alembic_version") == 1
    db.dispose()


@pytest.mark.sqlite_only
def test_open_waits_for_another_writer_instead_of_failing(db_url: str, tmp_path: Path) -> None:
    Database.open(db_url).dispose()
    other = sqlite3.connect(tmp_path / "test.db", check_same_thread=False, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as another process migrating or writing would
    release = threading.Timer(0.4, other.execute, args=("COMMIT",))
    release.start()
    started = time.monotonic()
    db = Database.open(db_url)
    assert time.monotonic() - started >= 0.35
    assert _scalar(db, "SELECT COUNT(*) FROM alembic_version") == 1
    db.dispose()
    release.join()
    other.close()


@pytest.mark.sqlite_only
def test_sqlite_connections_get_wal_busy_timeout_and_foreign_keys(db: Database) -> None:
    assert _scalar(db, "PRAGMA journal_mode") == "wal"
    assert _scalar(db, "PRAGMA busy_timeout") == 5000
    assert _scalar(db, "PRAGMA foreign_keys") == 1
    assert _scalar(db, "PRAGMA synchronous") == 1  # NORMAL


def test_session_commits_on_exit_and_rolls_back_on_error(db: Database) -> None:
    with db.session() as s:
        s.add(ApiKey(provider="openai", label="a", encrypted_key="token"))
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(ApiKey(provider="openai", label="b", encrypted_key="token"))
        s.flush()
        raise RuntimeError("boom")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT label FROM api_keys")).scalars().all() == ["a"]


def test_a_failed_statement_does_not_quote_its_parameters(db: Database) -> None:
    # Such messages reach the logs (log.warning with exc_info): a ciphertext, a token hash or a label stays out.
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError) as raised, db.session() as s:
        s.add(ApiKey(provider=None, label="label-marker", encrypted_key="ciphertext-marker"))
        s.flush()
    # SQLAlchemy's part of the message (PostgreSQL's own DETAIL line before it may echo the failing row: a
    # ciphertext, never a key, since keys are encrypted before any statement).
    sqlalchemy_part = str(raised.value).partition("[SQL:")[2]
    assert "INSERT INTO api_keys" in sqlalchemy_part  # the statement itself still says what failed
    assert "ciphertext-marker" not in sqlalchemy_part and "label-marker" not in sqlalchemy_part
    assert "hidden due to hide_parameters" in sqlalchemy_part


@pytest.mark.sqlite_only
def test_dir_is_the_folder_of_the_sqlite_file(db: Database, tmp_path: Path) -> None:
    assert db.dir == tmp_path
    memory = Database.open("sqlite://")
    assert memory.dir is None
    assert _scalar(memory, "SELECT COUNT(*) FROM ai_models") == 4
    memory.dispose()


def test_default_url_creates_the_data_folder(tmp_path: Path) -> None:
    assert not (tmp_path / "data").exists()
    db = Database.open(DEFAULT_DATABASE_URL)
    assert (tmp_path / "data" / "orchestrator.db").is_file()
    assert db.dir == tmp_path / "data"
    db.dispose()


def test_missing_folder_is_a_database_error_naming_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatabaseError, match="does not exist") as info:
        Database.open(f"sqlite:///{missing / 'x.db'}")
    assert str(missing) in info.value.message and "mkdir" in info.value.message
    assert not missing.exists()


def test_folder_that_is_a_file_is_a_database_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(DatabaseError, match="is not a folder"):
        Database.open(f"sqlite:///{not_a_folder / 'x.db'}")


def test_read_only_folder_is_a_database_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which ignores permission bits, so os.access reports what a normal user would see.
    real_access = os.access
    monkeypatch.setattr(db_module.os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(DatabaseError, match="folder .* is read-only"):
        Database.open(f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.sqlite_only
def test_read_only_file_is_a_database_error(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Database.open(db_url).dispose()
    path = tmp_path / "test.db"
    real_access = os.access
    monkeypatch.setattr(db_module.os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    with pytest.raises(DatabaseError, match="file .* is read-only; make it writable"):
        Database.open(db_url)


@pytest.mark.sqlite_only
def test_sqlite_refusing_to_write_is_a_database_error(db_url: str, tmp_path: Path) -> None:
    # mode=ro makes SQLite itself answer "attempt to write a readonly database", as for a read-only mount.
    Database.open(db_url).dispose()
    with pytest.raises(DatabaseError, match="is read-only") as info:
        Database.open(f"sqlite:///file:{tmp_path / 'test.db'}?mode=ro&uri=true")
    assert "readonly database" in str(info.value.__cause__)


def test_corrupt_file_is_a_database_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(DatabaseError, match="not a SQLite database or is corrupt") as info:
        Database.open(f"sqlite:///{path}")
    assert "move it aside" in info.value.message


def test_malformed_url_is_a_database_error() -> None:
    with pytest.raises(DatabaseError, match="is not a database URL"):
        Database.open("definitely not a url")


def test_unknown_driver_is_a_database_error() -> None:
    with pytest.raises(DatabaseError, match="no database driver 'postgresql\\+nosuchdriver'"):
        Database.open("postgresql+nosuchdriver://user:pw@localhost/db")


def test_missing_driver_says_what_to_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # an import of it now fails like a missing package
    with pytest.raises(DatabaseError, match=r"pip install psycopg2-binary") as info:
        Database.open("postgresql+psycopg2://user:secretpw@localhost/db")
    assert "secretpw" not in info.value.message


def test_database_from_a_newer_version_is_a_database_error(db: Database, db_url: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    db.dispose()
    with pytest.raises(DatabaseError, match="revision '0099', which this version of orchestrator_core does not know"):
        Database.open(db_url)


def test_the_head_read_from_the_migration_files_is_alembics_head() -> None:
    assert revision._head_from_files() == revision._head_from_alembic()


def test_a_status_on_a_current_database_never_imports_alembic_nor_the_metrics_module(db_url: str, tmp_path: Path) -> None:
    script = (
        "import sys; from orchestrator_core.cli import main; code = main(['--json', 'status']);"
        "print('loaded:', sorted({m.split('.')[0] for m in sys.modules if m.startswith('alembic')}"
        " | {m for m in sys.modules if m == 'orchestrator_core.store.metrics'}), code)"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "HOME": str(tmp_path), "DATABASE_URL": db_url, "LOCAL_HOSTS": "", "ORCHESTRATOR_SECRET_KEY": "x" * 20}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip().endswith("loaded: [] 0"), (done.stdout, done.stderr)


@pytest.mark.postgresql_only
def test_open_on_postgresql_waits_for_a_migration_in_another_process(empty_db_url: str) -> None:
    import psycopg

    other = psycopg.connect(empty_db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s)", (db_module._PG_MIGRATION_LOCK,))  # as a migrating process holds it
    release = threading.Timer(0.4, other.execute, args=("SELECT pg_advisory_unlock_all()",))
    release.start()
    started = time.monotonic()
    db = Database.open(empty_db_url)
    assert time.monotonic() - started >= 0.35
    assert _scalar(db, "SELECT COUNT(*) FROM alembic_version") == 1
    db.dispose()
    release.join()
    other.close()


def test_an_unreachable_postgresql_server_is_a_database_error_without_the_password() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatabaseError, match="Could not connect to the database") as info:
        Database.open(f"postgresql+psycopg://postgres:hunter2secret@127.0.0.1:{port}/x?connect_timeout=2")
    assert "hunter2secret" not in info.value.message
