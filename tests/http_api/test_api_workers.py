"""Several API processes on one database (uvicorn workers): a cooldown set by one is honoured by the other.

Two real ``uvicorn api.asgi:api_app`` processes on one SQLite file; the failure cache, tokens and metrics are
shared through the database, so this is what ``--workers N`` on PostgreSQL relies on too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator_core.store import Database, TokenStore
from orchestrator_core.store.generations import FRESHNESS_S
from tests.faults.fault_server import FaultServer
from tests.helpers import stop_process
from tests.http_api.conftest import CUSTOM_CHAT, Upstream

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "hi"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.asgi:api_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the worker exited at start"
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the worker did not start in time")

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@pytest.fixture
def workers(api_template: Path, tmp_path: Path, fault_server: FaultServer, upstream: Upstream
            ) -> Iterator[tuple[Worker, Worker, str]]:
    db_path = tmp_path / "shared.db"
    shutil.copyfile(api_template, db_path)
    db_url = f"sqlite:///{db_path}"
    db = Database.open(db_url)
    token = TokenStore(db).create("workers", "admin").token
    db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update({"DATABASE_URL": db_url, "CUSTOM_BASE_URL": f"{fault_server.url}/custom/v1",
                "LMSTUDIO_BASE_URL": f"{fault_server.url}/lmstudio", "LOCAL_HOSTS": "lmstudio",
                "FAILURE_COOLDOWN_S": "60", "PYTHONPATH": str(ROOT)})
    pair = (Worker(env, tmp_path / "a.log"), Worker(env, tmp_path / "b.log"))
    try:
        for worker in pair:
            worker.wait_ready()
        yield pair[0], pair[1], token
    finally:
        for worker in pair:
            worker.stop()


def test_a_cooldown_set_by_one_worker_is_honoured_by_another(workers: tuple[Worker, Worker, str],
                                                             fault_server: FaultServer) -> None:
    a, b, token = workers
    headers = {"authorization": f"Bearer {token}", "x-orchestrator-fallback": "off"}
    body = {"model": "custom:dead", "messages": HELLO}
    first = httpx.post(f"{a.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert first.status_code == 503 and first.json()["error"]["code"] == "unavailable"
    deadline = time.monotonic() + 30  # the first worker's writer takes the cooldown to the database a moment later
    while not httpx.get(f"{b.url}/api/failures", headers=headers, timeout=10).json()["failures"]:
        assert time.monotonic() < deadline, "the second worker never saw the cooldown"
        time.sleep(0.02)

    second = httpx.post(f"{b.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert second.status_code == 503
    [attempt] = second.json()["error"]["attempts"]
    assert (attempt["model"], attempt["outcome"], attempt["error_type"]) == ("custom:dead", "skipped", "cooling_down")
    assert len(fault_server.requests_to(CUSTOM_CHAT)) == 1  # the second worker never called the dead upstream
    failures = httpx.get(f"{b.url}/api/failures", headers=headers, timeout=10).json()["failures"]
    assert [f["model_id"] for f in failures] == ["custom:dead"]

    assert httpx.post(f"{b.url}/api/failures/reset", headers=headers, timeout=10).json() == {"cleared": 1}
    time.sleep(FRESHNESS_S)  # another process's reset is seen within this time (store/generations.py), not at once
    again = httpx.post(f"{a.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert again.json()["error"]["code"] == "unavailable"  # reset on one worker: the other calls again
    assert len(fault_server.requests_to(CUSTOM_CHAT)) == 2
