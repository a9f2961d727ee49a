"""Fixtures of the fault suite: a fault server per test, orchestrators on copies of one migrated database."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, ModelRegistry
from orchestrator_core.store.tables import CallMetric
from tests.faults.fault_server import FaultServer
from tests.faults.wire import FAKE_KEYS, SHAPES
from tests.helpers import settings

# Short timeouts keep a timeout row under ~0.3 s; only rows about timeouts use them (see ROOMY).
FAST = {
    "connect_timeout_s": 0.1,
    "read_timeout_s": 0.2,
    "status_timeout_s": 0.2,
    "load_timeout_s": 0.25,
    "poll_interval_s": 0.02,
    "status_cache_ttl_s": 5.0,
    "failure_cooldown_s": 60.0,
    "max_fallback_hops": 2,
}
# Every other row: timeouts far above any loopback answer, so a loaded CI machine (coverage, two
# workers) never turns a slow healthy answer into a false timeout.
ROOMY = {**FAST, "connect_timeout_s": 2.0, "read_timeout_s": 5.0, "status_timeout_s": 2.0, "load_timeout_s": 5.0}
TEMPLATE_MODELS = {"custom:healthy": 10, "openai:healthy": 20}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database with only the healthy fallback models active; tests copy it (a migration costs ~0.1 s)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database.open(f"sqlite:///{path}")
    registry = ModelRegistry(db)
    for entry in registry.list():
        registry.set_active(entry.model_id, False)
    for model_id, priority in TEMPLATE_MODELS.items():
        registry.add(model_id, priority=priority)
    db.dispose()
    return path


OrchFactory = Callable[..., Orchestrator]


@pytest.fixture
def make_orch(template_db: Path, tmp_path: Path, server: FaultServer) -> Iterator[OrchFactory]:
    """Build orchestrators whose providers all point at the fault server; each gets its own database copy."""
    built: list[Orchestrator] = []

    def make(
        *,
        base_urls: dict[str, str] | None = None,
        inactive: tuple[str, ...] = (),
        share_with: Orchestrator | None = None,
        **overrides: Any,
    ) -> Orchestrator:
        if share_with is not None:  # a second "process" on the same database
            orch = Orchestrator.from_settings(share_with.settings)
            built.append(orch)
            return orch
        folder = tmp_path / f"db-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        shutil.copy(template_db, folder / "test.db")
        urls = {s.provider: server.url + s.base for s in SHAPES.values()}
        urls.update(base_urls or {})
        options: dict[str, Any] = {**FAST, "base_urls": urls, "env_keys": dict(FAKE_KEYS), "local_hosts": ()}
        options.update(overrides)
        orch = Orchestrator.from_settings(settings(f"sqlite:///{folder / 'test.db'}", **options))
        for model_id in inactive:
            orch.registry.set_active(model_id, False)
        built.append(orch)
        return orch

    yield make
    for orch in built:
        orch.close()


def metric_rows(orch: Orchestrator) -> list[CallMetric]:
    """Every call_metrics row, oldest first, after the writer has caught up."""
    assert orch.metrics.flush(), "the metrics writer did not catch up"
    with orch.db.session() as s:
        rows = list(s.scalars(select(CallMetric).order_by(CallMetric.id)))
        s.expunge_all()
    return rows


def running_threads() -> set[threading.Thread]:
    """The threads alive now: the baseline a test compares against after it closed everything."""
    return set(threading.enumerate())


def assert_nothing_left_behind(server: FaultServer, baseline: set[threading.Thread], timeout: float = 3.0) -> None:
    """Every connection to the server closed by its client, and no thread started since the baseline still running."""
    assert server.wait_all_closed(timeout), f"{server.open_connections} connection(s) to the fault server left open"
    deadline = time.monotonic() + timeout
    while (extra := [t for t in threading.enumerate() if t not in baseline]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert extra == [], f"threads left behind: {[t.name for t in extra]}"
