"""The API's start-up and shutdown: the warm-up for serving, the garbage collector's freeze, a warm-up that fails."""

from __future__ import annotations

import gc
from collections.abc import Callable
from concurrent.futures import Future

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from api.app import create_api
from orchestrator_core.orchestrator import Orchestrator


def test_the_start_up_freezes_its_objects_and_the_shutdown_lets_them_go(make_orch: Callable[..., Orchestrator]) -> None:
    orch = make_orch()
    with TestClient(create_api(lambda: orch, close=None)) as client:
        assert client.get("/api/health").status_code == 200
        assert gc.get_freeze_count() > 10_000, "the start-up's objects are left out of full collections"
    assert gc.get_freeze_count() == 0, "after the shutdown they may be collected again (no leak per app served)"


def test_a_warm_up_that_failed_on_a_busy_database_does_not_stop_the_api_from_starting(
    make_orch: Callable[..., Orchestrator],
) -> None:
    orch = make_orch()
    assert orch.warming is not None
    orch.warming.result()
    failed: Future[None] = Future()
    failed.set_exception(OperationalError("SELECT 1", {}, Exception("database is locked")))
    orch.warming = failed
    with TestClient(create_api(lambda: orch, close=None)) as client:
        assert client.get("/api/health").status_code == 200
