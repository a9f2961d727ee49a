"""A busy or odd database never shows a traceback: one error class for "busy", read-only commands still work,
and an over-long model name costs only that model (and never a metric row).

The lock is real: BEGIN IMMEDIATE on a sqlite3 connection other than the code under test's (for the
CLI, another process).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core.errors import DatabaseBusyError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, KeyStore, MetricRow, MetricsRecorder, ModelRegistry, load_fernet
from orchestrator_core.store import db as db_module
from orchestrator_core.store.metrics import TRUNCATED_MARK
from tests.faults.fault_server import FaultServer, Reply
from tests.faults.wire import LMSTUDIO_STATUS
from tests.helpers import lmstudio_models, settings

REPO = Path(__file__).resolve().parents[2]
LONG_NAME = "m" * 300


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "busy.db"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture
def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.execute("ROLLBACK")
    conn.close()


@pytest.fixture
def short_busy_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 200)


def test_a_write_on_a_busy_database_raises_database_busy_without_sql_or_token(
    db_path: Path, short_busy_wait: None
) -> None:
    db = Database.open(f"sqlite:///{db_path}")
    keys = KeyStore(db, load_fernet("a-secret-for-this-test", None))
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusyError) as info:
            keys.add("openai", "work", "sk-busy-0123456789abcdef")
        with pytest.raises(DatabaseBusyError):
            ModelRegistry(db).add("openai:gpt-busy")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    message = info.value.message
    assert "busy" in message and "try again" in message
    assert "INSERT" not in message and "gAAAA" not in message and "sk-busy" not in message
    assert [k.label for k in keys.list()] == []  # nothing half-written
    db.dispose()


def test_read_only_cli_commands_work_while_another_process_holds_the_write_lock(
    db_path: Path, write_lock: sqlite3.Connection, tmp_path: Path
) -> None:
    server = FaultServer().start()
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models({"fresh-model": True})))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{db_path}", "LOCAL_HOSTS": "lmstudio",
           "LMSTUDIO_BASE_URL": server.url + "/lmstudio", "ORCHESTRATOR_SECRET_KEY": "a-secret-for-this-test"}
    try:
        runs = [subprocess.Popen([sys.executable, "-m", "orchestrator_core", "--json", *command], cwd=tmp_path,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for command in (["status"], ["keys", "list"])]
        (status_out, status_err), (keys_out, keys_err) = (run.communicate(timeout=60) for run in runs)
    finally:
        server.stop()
    assert [run.returncode for run in runs] == [0, 0], (status_err, keys_err)
    assert "Traceback" not in status_err + keys_err
    [host] = json.loads(status_out)["hosts"]
    assert host["reachable"] and host["models"] == 1  # the host was asked; registering its model waits
    assert json.loads(keys_out) == []


def test_discovery_skips_quietly_while_busy_and_registers_once_the_lock_is_gone(
    db_path: Path, short_busy_wait: None, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(Database.open(f"sqlite:///{db_path}"))
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    caplog.set_level(logging.INFO)
    try:
        assert registry.sync_discovered("lmstudio", ["fresh-model"]) == []
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert "database is busy" in caplog.text
    assert registry.sync_discovered("lmstudio", ["fresh-model"]) == ["lmstudio:fresh-model"]
    registry.db.dispose()


def test_a_model_name_too_long_for_the_columns_is_refused_alone_with_a_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(Database.open(f"sqlite:///{db_path}"))
    caplog.set_level(logging.WARNING)
    added = registry.sync_discovered("lmstudio", ["before", LONG_NAME, "after"])
    assert added == ["lmstudio:before", "lmstudio:after"]
    assert "309 characters long, over the limit of 255" in caplog.text
    assert all(len(e.model_id) <= 255 for e in registry.list())
    registry.db.dispose()


def test_a_host_listing_a_300_character_model_keeps_every_page_working(db_path: Path) -> None:
    server = FaultServer().start()
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models({"ok-model": True, LONG_NAME: False})))
    try:
        with Orchestrator.from_settings(settings(f"sqlite:///{db_path}", local_hosts=("lmstudio",),
                                                 base_urls={"lmstudio": server.url + "/lmstudio"})) as orch:
            ids = [s.model_id for s in orch.manager.list_with_status()]
    finally:
        server.stop()
    assert "lmstudio:ok-model" in ids and not any(LONG_NAME in i for i in ids)


def test_a_metric_row_with_a_value_too_long_for_its_column_is_stored_cut_with_a_marker(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator_core.metrics")
    db = Database.open(f"sqlite:///{db_path}")
    with MetricsRecorder(db) as recorder:
        recorder.record(MetricRow(model="lmstudio:" + LONG_NAME, outcome="error", latency_ms=1.0,
                                  error_kind="k" * 100, request_id="r" * 80))
        assert recorder.flush(timeout=10)
    db.dispose()
    with sqlite3.connect(db_path) as conn:
        model, kind, request_id = conn.execute("SELECT model, error_kind, request_id FROM call_metrics").fetchone()
        [(rollup_model,)] = conn.execute("SELECT model FROM call_metrics_minute").fetchall()
    conn.close()
    assert len(model) == 255 and model.endswith(TRUNCATED_MARK) and rollup_model == model
    assert len(kind) == 64 and len(request_id) == 64
    assert "stored cut short" in caplog.text
