"""A fuzz pass over the OpenAPI schema (schemathesis): no generated request makes the API answer 500.

Upstream failures (502/503/504) are legitimate answers here: the fuzzer invents model ids that the fault
server plays as healthy or not; only a 500 (a bug) fails. Bounded examples keep it to seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.case import Case

from api.app import create_api
from orchestrator_core.errors import ConfigurationError
from orchestrator_core.orchestrator import Orchestrator
from tests.http_api.conftest import Upstream

SKIPPED = ["/api/models/{model_id}/wait"]  # waits up to its timeout_s by design; covered in test_api_management
_current: dict[str, object] = {}


def _orchestrator() -> Orchestrator:
    orch = _current.get("orch")
    if not isinstance(orch, Orchestrator):  # loading the schema at collection runs the lifespan: no test yet
        raise ConfigurationError("no orchestrator outside a test")
    return orch


APP = create_api(_orchestrator, close=None)
schema = schemathesis.openapi.from_asgi("/api/openapi.json", APP).exclude(path=SKIPPED)


@pytest.fixture
def token(orch: Orchestrator, upstream: Upstream) -> Iterator[str]:
    _current["orch"] = orch
    yield orch.tokens.create("fuzz", "admin").token
    _current.clear()


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_500(case: Case, token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        body = json.loads(response.text)
        assert set(body) == {"error"} and body["error"]["message"]
