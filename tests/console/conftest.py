"""Console fixtures: a fresh orchestrator per test (caches cleared), env pointing at a temp database, a mocked wire."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import respx
import streamlit as st

from console import shared
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database
from tests.helpers import FAKE_OPENAI_KEY, other_hosts_down


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Each test builds its own orchestrator and limiter; reset closes the previous ones."""
    shared.reset()
    st.cache_data.clear()
    yield
    shared.reset()
    st.cache_data.clear()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the newest migration, copied for each test (migrating costs ~0.1 s a time)."""
    path = tmp_path_factory.mktemp("template") / "console.db"
    Database.open(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(autouse=True)
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated_db: Path) -> str:
    """Settings the app reads with Settings.from_env(): a temp database, fast polls, one local host."""
    db_path = tmp_path / "console.db"
    shutil.copyfile(migrated_db, db_path)
    db_url = f"sqlite:///{db_path}"
    for name, value in {
        "DATABASE_URL": db_url,
        "LOCAL_HOSTS": "lmstudio",
        "POLL_INTERVAL_S": "0.01",
        "LOAD_TIMEOUT_S": "2",
        "STATUS_TIMEOUT_S": "0.5",
        "CONNECT_TIMEOUT_S": "0.5",
        "STATUS_CACHE_TTL_S": "5",
        "FAILURE_COOLDOWN_S": "60",
        "FALLBACK_ENABLED": "true",
        "MAX_FALLBACK_HOPS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    return db_url


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    """Every request the app makes goes here; LM Studio is down unless a test mocks it."""
    with respx.mock(assert_all_called=False) as router:
        other_hosts_down(router)
        yield router


@pytest.fixture
def with_openai_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    return FAKE_OPENAI_KEY


@pytest.fixture
def core() -> Iterator[Callable[[], Orchestrator]]:
    """A second orchestrator on the test database, to seed data and check what the app wrote."""
    opened: list[Orchestrator] = []

    def make() -> Orchestrator:
        orch = Orchestrator.from_settings()
        opened.append(orch)
        return orch

    yield make
    for orch in opened:
        orch.close()




def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Console tests measure the pages, not orchestrator_core: tracing Streamlit's runtime for core
    coverage doubled their time, and the core is covered by its own tests."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.no_cover)
