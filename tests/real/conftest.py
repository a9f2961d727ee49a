"""A real llama-server in router mode over a folder of tiny GGUF models (tests/real/tiny_gguf.py).

The binary is built once by scripts/build_llama_server.sh into ~/.cache/orchestrator-tests (or
LLAMA_SERVER_BIN names one). Without it these tests do not run: skipped with the reason, failed under CI.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import parts
from tests.e2e.console_server import free_port
from tests.helpers import stop_process
from tests.real.tiny_gguf import write_corrupt_model, write_model

VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
MODELS = ("tiny-a", "tiny-b", "tiny-c")
BROKEN = "tiny-broken"


def llama_server_binary() -> Path | None:
    named = os.environ.get("LLAMA_SERVER_BIN")
    if named:
        return Path(named)
    cache = Path(os.environ.get("ORCHESTRATOR_TEST_CACHE", Path.home() / ".cache" / "orchestrator-tests"))
    built = cache / f"llama-server-{VERSION}" / "bin" / "llama-server"
    return built if built.exists() else None


@dataclass
class LlamaServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def binary() -> Path:
    found = llama_server_binary()
    if found is None or not os.access(found, os.X_OK):
        parts.unavailable("real", "no llama-server binary (build it once: scripts/build_llama_server.sh, "
                                  "about 7 minutes; or set LLAMA_SERVER_BIN)")
    return found


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gguf")
    for seed, name in enumerate(MODELS):
        write_model(folder / f"{name}.gguf", seed=seed)
    write_corrupt_model(folder / f"{BROKEN}.gguf")
    return folder


def start_llama_server(binary: Path, models_dir: Path, log: Path, *extra: str) -> LlamaServer:
    port = free_port()
    argv = [str(binary), "--models-dir", str(models_dir), "--models-max", "2", "-c", "512", "-np", "1", "-t", "1",
            "--host", "127.0.0.1", "--port", str(port), *extra]
    out = log.open("wb")
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/models", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"llama-server did not answer within 60 s: {log.read_text()[-2000:]}")


@pytest.fixture
def llama(binary: Path, models_dir: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    """A fresh router per test (it starts in well under a second): no state leaks between tests."""
    server = start_llama_server(binary, models_dir, tmp_path / "llama-server.log")
    yield server
    server.stop()


@pytest.fixture
def llama_no_autoload(binary: Path, models_dir: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = start_llama_server(binary, models_dir, tmp_path / "llama-server.log", "--no-models-autoload")
    yield server
    server.stop()
