"""Every test is isolated: no provider variables from the machine, a fresh database in tmp_path.

ORCHESTRATOR_HOME is tmp_path, so no test reads the developer's .env, data/orchestrator.db or data/secret.key
(those resolve against the project folder, whatever the current folder is).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fault_server import FaultServer
from tests.parts import pytest_sessionfinish, pytest_terminal_summary  # noqa: F401 - per-part counts; CI runs all

_ISOLATED_SUFFIXES = ("_API_KEY", "_BASE_URL")
_ISOLATED_NAMES = ("DATABASE_URL", "ORCHESTRATOR_SECRET_KEY", "LM_API_TOKEN", "CONSOLE_PASSWORD",
                   "CONSOLE_PASSWORD_HASH", "SIGN_IN_MAX_FAILURES", "SIGN_IN_LOCKOUT_S", "MODEL_PRIORITIES",
                   "GEMINI_API_VERSION", "ANTHROPIC_VERSION")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.endswith(_ISOLATED_SUFFIXES) or name in _ISOLATED_NAMES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path))  # .env, data/ and secret.key: this test's own
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database migrated to head per test session; tests get copies (migrating costs ~0.3 s)."""
    from orchestrator_core.store import Database

    path = tmp_path_factory.mktemp("template") / "template.db"
    Database.open(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: Path) -> str:
    """A fresh, already migrated SQLite database for this test."""
    target = tmp_path / "test.db"
    shutil.copyfile(migrated_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(autouse=True, scope="session")
def one_tls_context() -> Iterator[None]:
    """Tests build hundreds of httpx clients; loading the CA bundle for each costs ~40 ms."""
    import httpx._transports.default as transport

    original = transport.create_ssl_context
    shared = original()

    def create(verify: object = True, cert: object = None, trust_env: bool = True) -> object:
        if verify is True and cert is None:
            return shared
        return original(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]

    transport.create_ssl_context = create  # type: ignore[assignment]
    yield
    transport.create_ssl_context = original


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fault-injecting HTTP server on 127.0.0.1 (tests/faults/fault_server.py), for the fault and parity tests."""
    srv = FaultServer().start()
    yield srv
    srv.stop()
