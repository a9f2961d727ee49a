"""A real `streamlit run streamlit_app.py` on a free 127.0.0.1 port, and the demo LM Studio beside it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import stop_process

REPO = Path(__file__).resolve().parents[2]
# Only what a process needs to start; provider keys and URLs of the developer's shell never leak in.
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - a loopback URL we built
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def base_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a console process: a database and home in ``home`` plus ``settings``."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.update({
        "DATABASE_URL": f"sqlite:///{home / 'console.db'}",
        "ORCHESTRATOR_HOME": str(home),
        "ORCHESTRATOR_SECRET_KEY": "e2e-secret-passphrase-not-a-real-one",
        "LOCAL_HOSTS": "lmstudio",
        "LMSTUDIO_BASE_URL": "http://127.0.0.1:9",  # nothing listens: "not reachable" unless a test says otherwise
        "POLL_INTERVAL_S": "0.2",
        "STATUS_CACHE_TTL_S": "1",
        "CONNECT_TIMEOUT_S": "1",
        "STATUS_TIMEOUT_S": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(settings)
    return env


class Process:
    """A child process with its output in a log file; stop() ends it (and only it)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        _wait_http(url, self.process, self.log, timeout_s)

    def stop(self) -> None:
        stop_process(self.process)
        self._out.close()


def start_console(home: Path, env: dict[str, str]) -> tuple[Process, str]:
    """`streamlit run` the console; returns the process and its URL once /_stcore/health answers."""
    port = free_port()
    argv = [sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app.py"),
            "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
            "--browser.gatherUsageStats=false", "--server.fileWatcherType=none", "--global.developmentMode=false"]
    process = Process(argv, env, home, home / "streamlit.log")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/_stcore/health")
    except BaseException:
        process.stop()
        raise
    return process, url


def start_app(home: Path, env: dict[str, str]) -> tuple[Process, str]:
    """`python -m api` (what `make run` serves: the console as an st.App with its middleware, the API beside it)."""
    port = free_port()
    argv = [sys.executable, "-m", "api", "--address", "127.0.0.1", "--port", str(port)]
    process = Process(argv, {**env, "PYTHONPATH": str(REPO)}, home, home / "app.log")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/_stcore/health")
    except BaseException:
        process.stop()
        raise
    return process, url


def start_demo_lmstudio(home: Path, env: dict[str, str], seed_rows: int = 0) -> tuple[Process, str]:
    """docs/demo_host.py: a stand-in LM Studio (and, with seed_rows, a day of metrics in env's database)."""
    port = free_port()
    argv = [sys.executable, str(REPO / "docs" / "demo_host.py"), "--port", str(port), "--seed-rows", str(seed_rows)]
    process = Process(argv, env, home, home / "demo_host.log")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/api/v1/models", timeout_s=120)
    except BaseException:
        process.stop()
        raise
    return process, url
