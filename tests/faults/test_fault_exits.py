"""No metric row is lost on any exit: normal exit, SIGTERM, Ctrl-C, while another process holds the write lock.

Real subprocesses and a real SQLite write lock (BEGIN IMMEDIATE from a sqlite3 connection of this
process): rows the database will not take at exit go to the spool and are written at the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow
from tests.faults.fault_server import FaultServer, Reply
from tests.faults.wire import FAKE_KEYS, SHAPES, openai_stream
from tests.helpers import settings

REPO = Path(__file__).resolve().parents[2]
ROWS = 1000
OPENAI = SHAPES["openai"]

QUEUE_ROWS_THEN_EXIT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from orchestrator_core.config import Settings
    from orchestrator_core.orchestrator import Orchestrator
    from orchestrator_core.store import MetricRow
    orch = Orchestrator.from_settings(Settings(database_url=sys.argv[2], local_hosts=()))
    print("open", flush=True)
    sys.stdin.readline()  # the test takes the write lock now
    for i in range(%d):
        orch.metrics.record(MetricRow(model="openai:a", outcome="ok", latency_ms=float(i), request_id=f"r{i}"))
    print("queued", flush=True)
    if sys.argv[3] == "wait":
        time.sleep(120)  # until SIGTERM
""".replace("%d", str(ROWS)))


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "exits.db"
    shutil.copyfile(template_db, path)
    return path


def spooled(db_path: Path) -> list[Path]:
    return sorted(db_path.parent.glob(f"{db_path.name}.metrics-spool*"))


def counts(db_path: Path) -> tuple[int, int]:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM call_metrics").fetchone()
    conn.close()
    return int(row[0]), int(row[1])


def start_child(db_path: Path, how: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", QUEUE_ROWS_THEN_EXIT, str(REPO), f"sqlite:///{db_path}", how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def next_start_writes(db_path: Path) -> None:
    with Orchestrator.from_settings(settings(f"sqlite:///{db_path}", local_hosts=())) as orch:
        assert orch.metrics.flush(timeout=30)


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_rows_queued_while_another_process_holds_the_write_lock_are_all_written_after_the_next_start(
    how: str, db_path: Path
) -> None:
    child = start_child(db_path, "wait" if how == "sigterm" else "exit")
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "open", child.stderr.read() if child.stderr else ""
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the write lock, held by another process than the child
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "queued"
        if how == "sigterm":
            child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == (-signal.SIGTERM if how == "sigterm" else 0), err
        assert "Traceback" not in err
        assert len(spooled(db_path)) == 1, err  # the rows waited in the spool, beside the database
        assert "written on the next start" in err
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert counts(db_path) == (0, 0)
    next_start_writes(db_path)
    assert counts(db_path) == (ROWS, ROWS)
    assert spooled(db_path) == []  # removed once written
    next_start_writes(db_path)
    assert counts(db_path) == (ROWS, ROWS)  # never written twice


def test_a_corrupt_spool_line_is_skipped_with_a_warning_and_the_rest_is_written(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = MetricRow(model="openai:a", outcome="ok", latency_ms=3.0, request_id="good").as_values()
    import json

    spool = db_path.parent / f"{db_path.name}.metrics-spool.1.1.jsonl"
    spool.write_text(json.dumps(good) + "\n{not json\n" + json.dumps(good | {"request_id": "good2"}) + "\n"
                     + json.dumps({"model": "x", "nonsense": 1}) + "\n")
    caplog.set_level(logging.WARNING, logger="orchestrator_core.metrics")
    next_start_writes(db_path)
    assert counts(db_path) == (2, 2)
    assert spooled(db_path) == []
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "line 2" in warnings and "not a metric row" in warnings


# -- Ctrl-C and SIGTERM on a streamed CLI chat -------------------------------------------------------------

@pytest.fixture
def stalling_stream() -> Iterator[FaultServer]:
    server = FaultServer().start()
    server.script(OPENAI.call_path(True), Reply.stream(openai_stream(["Hel"], OPENAI.model, done=False),
                                                       then="stall"))
    yield server
    server.stop()


@pytest.mark.parametrize(("sent", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_interrupted_streaming_cli_chat_records_a_cancelled_attempt(
    sent: signal.Signals, exit_code: int, db_path: Path, stalling_stream: FaultServer, tmp_path: Path
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{db_path}", "LOCAL_HOSTS": "", "OPENAI_API_KEY": FAKE_KEYS["openai"],
           "OPENAI_BASE_URL": stalling_stream.url + OPENAI.base, "READ_TIMEOUT_S": "60",
           "PYTHONFAULTHANDLER": "1"}  # a hung child dumps every thread's stack on SIGABRT (see below)
    child = subprocess.Popen([sys.executable, "-m", "orchestrator_core", "chat", "--stream", OPENAI.model_id, "hi"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.read(3) == b"Hel"  # the answer has started
    child.send_signal(sent)
    try:
        _, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)  # seen once in a loaded CI run: say where it hangs, not only that it did
        _, err = child.communicate(timeout=10)
        pytest.fail("the CLI did not exit within 30 s of the signal; its threads:\n" + err.decode(errors="replace"))
    assert child.returncode == exit_code, err
    assert b"Traceback" not in err
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT model, outcome, error_kind, streamed FROM call_metrics").fetchall()
    conn.close()
    assert rows == [(OPENAI.model_id, "error", "cancelled", 1)]
