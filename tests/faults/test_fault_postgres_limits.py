"""On a real PostgreSQL: a 300-character model name, a too-long metric value and two folders' secrets.

A small private server is started for this module (initdb + pg_ctl as the postgres user, a free port on
127.0.0.1, fsync off); the module is skipped, with the reason, where PostgreSQL's binaries or that user
are missing. SQLite runs the same checks in test_fault_busy.py and tests/store/test_secret_verifier.py.
"""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from orchestrator_core.errors import SecretKeyError
from orchestrator_core.store import Database, KeyStore, MetricRow, MetricsRecorder, ModelRegistry, load_fernet
from orchestrator_core.store.metrics import TRUNCATED_MARK

LONG_NAME = "m" * 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run a private PostgreSQL server")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb / pg_ctl are not on PATH")
    folder = Path(tempfile.mkdtemp(prefix="pg-limits-"))
    shutil.chown(folder, "postgres")
    port = _free_port()
    data = folder / "data"

    def as_postgres(*command: str) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)], check=True,
                       capture_output=True, timeout=120)

    as_postgres(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    as_postgres(pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "start", "-o",
                f"'-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off'")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        as_postgres(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(server: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield f"{server}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_postgresql_refuses_only_the_300_character_model_and_registers_the_rest(pg_url: str) -> None:
    db = Database.open(pg_url)
    registry = ModelRegistry(db)
    assert registry.sync_discovered("lmstudio", ["before", LONG_NAME, "after"]) == ["lmstudio:before",
                                                                                  "lmstudio:after"]
    assert {"lmstudio:before", "lmstudio:after"} <= {e.model_id for e in registry.list()}
    db.dispose()


def test_postgresql_keeps_a_metric_row_whose_values_are_too_long_cut_with_a_marker(pg_url: str) -> None:
    db = Database.open(pg_url)
    with MetricsRecorder(db) as recorder:
        recorder.record(MetricRow(model="lmstudio:" + LONG_NAME, outcome="error", latency_ms=1.0,
                                  error_kind="k" * 100, fallback_from="x:" + LONG_NAME))
        assert recorder.flush(timeout=20)
    with db.engine.connect() as conn:
        [(model, fallback_from)] = conn.execute(text("SELECT model, fallback_from FROM call_metrics")).all()
        minute_rows = conn.execute(text("SELECT COUNT(*) FROM call_metrics_minute")).scalar_one()
    db.dispose()
    assert len(model) == 255 and model.endswith(TRUNCATED_MARK) and len(fallback_from) == 255
    assert minute_rows == 1


def test_postgresql_two_folders_without_a_secret_key_cannot_both_start(pg_url: str, tmp_path: Path) -> None:
    first_db, second_db = Database.open(pg_url), Database.open(pg_url)  # as two processes would
    KeyStore(first_db, load_fernet(None, tmp_path / "first")).verify_secret()
    with pytest.raises(SecretKeyError, match="ORCHESTRATOR_SECRET_KEY"):
        KeyStore(second_db, load_fernet(None, tmp_path / "second")).verify_secret()
    first_db.dispose()
    second_db.dispose()
