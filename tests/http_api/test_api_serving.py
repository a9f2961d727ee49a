"""`make run`'s layout: one process, one port, the console at / and the API beside it (python -m api)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.http_api.test_api_workers import ROOT, free_port


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    # The port through Streamlit's own config (as .streamlit/config.toml would set it), from another folder.
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}", "LOCAL_HOSTS": "lmstudio",
                "LMSTUDIO_BASE_URL": "http://127.0.0.1:9", "STREAMLIT_SERVER_PORT": str(port)})
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "api"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "python -m api did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_the_console_and_the_api_share_one_port(running: str) -> None:
    page = httpx.get(f"{running}/")
    assert page.status_code == 200 and "<noscript>" in page.text  # Streamlit's page shell
    assert httpx.get(f"{running}/_stcore/health").text == "ok"
    assert httpx.get(f"{running}/api/health").json()["database"] == "ok"
    assert httpx.get(f"{running}/v1/models").status_code == 401  # the API is closed by default
    assert httpx.get(f"{running}/api/openapi.json").json()["info"]["title"] == "LLM orchestrator API"


def test_streamlit_metrics_reveal_nothing_and_websockets_still_connect(running: str) -> None:
    assert httpx.get(f"{running}/_stcore/metrics").status_code == 404
    with connect(f"{running.replace('http', 'ws')}/_stcore/stream", subprotocols=["streamlit"],  # type: ignore[list-item]
                 open_timeout=10) as ws:
        assert ws.subprotocol == "streamlit"
