"""ModelManager: status from one request per host, cache TTL, load / wait / unload, alternatives, cooldown."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    InvalidModelIdError,
    ModelLoadError,
    ModelLoadTimeoutError,
    UnsupportedOperationError,
)
from orchestrator_core.loader import LoadProgress
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import ModelState
from tests.helpers import FAKE_OPENAI_KEY, LLAMACPP, LMSTUDIO, OLLAMA, lmstudio_models, settings


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def build(db_url: str, **overrides: object) -> Orchestrator:
    return Orchestrator.from_settings(settings(db_url, env_keys={"openai": FAKE_OPENAI_KEY}, **overrides))


@pytest.fixture
def orch(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    o = build(db_url, local_hosts=("lmstudio",))
    yield o
    o.close()


def test_status_of_many_models_costs_one_request_per_host(orch: Orchestrator, wire: respx.MockRouter) -> None:
    route = wire.get(f"{LMSTUDIO}/api/v1/models").respond(
        json=lmstudio_models({f"m{i}": i % 2 == 0 for i in range(20)}))
    statuses = orch.manager.list_with_status(force=True)
    local = {s.model_id: s.state for s in statuses if s.local}
    assert len(local) == 20 and route.call_count == 1
    assert local["lmstudio:m0"] is ModelState.LOADED and local["lmstudio:m1"] is ModelState.NOT_LOADED


def test_hosted_models_are_ready_with_key_and_flagged_without(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({}))
    states = {s.model_id: s for s in orch.manager.list_with_status()}
    assert states["openai:gpt-4.1-mini"].state is ModelState.EXTERNAL_READY
    no_key = states["anthropic:claude-haiku-4-5"]
    assert no_key.state is ModelState.EXTERNAL_NO_KEY and "ANTHROPIC_API_KEY" in no_key.detail


def test_status_cache_serves_within_ttl_and_force_refreshes(orch: Orchestrator, wire: respx.MockRouter) -> None:
    route = wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    orch.manager.check_status("lmstudio:qwen")
    orch.manager.check_status("lmstudio:qwen")
    orch.manager.list_with_status()
    assert route.call_count == 1
    orch.manager.check_status("lmstudio:qwen", force=True)
    assert route.call_count == 2


def test_status_cache_expires_after_ttl(db_url: str, wire: respx.MockRouter) -> None:
    route = wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    with build(db_url, local_hosts=("lmstudio",), status_cache_ttl_s=0.05) as orch:
        orch.manager.check_status("lmstudio:qwen")
        time.sleep(0.08)
        orch.manager.check_status("lmstudio:qwen")
    assert route.call_count == 2


def test_host_down_answers_within_connect_timeout(db_url: str) -> None:
    # A real closed port on loopback: nothing listens on port 9 (discard) here.
    with build(db_url, local_hosts=("lmstudio",), base_urls={"lmstudio": "http://127.0.0.1:9"}) as orch:
        orch.registry.add("lmstudio:qwen")
        started = time.perf_counter()
        status = orch.manager.check_status("lmstudio:qwen")
        assert time.perf_counter() - started < 1.0
    assert status.state is ModelState.HOST_DOWN
    assert "127.0.0.1:9" in status.detail


def test_every_local_host_is_probed_once_concurrently(db_url: str, wire: respx.MockRouter) -> None:
    lm = wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"a": True}))
    ol_tags = wire.get(f"{OLLAMA}/api/tags").respond(json={"models": [{"name": "llama3.2:latest"}]})
    ol_ps = wire.get(f"{OLLAMA}/api/ps").respond(json={"models": []})
    cpp = wire.get(f"{LLAMACPP}/models").respond(json={"data": [{"id": "g", "status": {"value": "loaded"}}]})
    with build(db_url) as orch:
        statuses = {s.model_id: s.state for s in orch.manager.list_with_status(force=True)}
        hosts = {h.provider: h for h in orch.manager.hosts()}
    assert (lm.call_count, ol_tags.call_count, ol_ps.call_count, cpp.call_count) == (1, 1, 1, 1)
    assert statuses["ollama:llama3.2:latest"] is ModelState.NOT_LOADED
    assert statuses["llamacpp:g"] is ModelState.LOADED
    assert all(h.reachable for h in hosts.values())


def test_load_then_wait_reports_progress_until_loaded(orch: Orchestrator, wire: respx.MockRouter) -> None:
    loaded = {"qwen": False}

    def load(request: httpx.Request) -> httpx.Response:
        loaded["qwen"] = True
        return httpx.Response(200, json={"instance_id": "qwen", "status": "loaded", "load_time_seconds": 0.01})

    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=lambda r: httpx.Response(200, json=lmstudio_models(loaded)))
    wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(side_effect=load)
    orch.manager.load("lmstudio:qwen")
    seen: list[LoadProgress] = []
    status = orch.manager.wait_for_load("lmstudio:qwen", timeout_s=2, poll_s=0.01, on_progress=seen.append)
    assert status.state is ModelState.LOADED
    assert seen and seen[-1].state is ModelState.LOADED


def test_wait_for_load_times_out_with_clear_error(orch: Orchestrator, wire: respx.MockRouter) -> None:
    # llama-server style: the host accepts the load but never finishes it.
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json={"models": [
        {"type": "llm", "key": "big", "loaded_instances": []}]})
    wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(side_effect=lambda r: time.sleep(1.0) or httpx.Response(
        200, json={"status": "loaded", "instance_id": "big"}))
    orch.manager.load("lmstudio:big")
    with pytest.raises(ModelLoadTimeoutError) as info:
        orch.manager.wait_for_load("lmstudio:big", timeout_s=0.2, poll_s=0.02)
    assert "LOAD_TIMEOUT_S" in str(info.value)


def test_failed_load_raises_model_load_error(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": False}))
    wire.post(f"{LMSTUDIO}/api/v1/models/load").respond(
        500, json={"error": {"message": "Failed to load model: insufficient memory"}})
    orch.manager.load("lmstudio:qwen")
    with pytest.raises(ModelLoadError):
        orch.manager.wait_for_load("lmstudio:qwen", timeout_s=2, poll_s=0.01)


def test_unload_calls_the_host_with_the_instance_id(orch: Orchestrator, wire: respx.MockRouter) -> None:
    loaded = {"qwen": True}
    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=lambda r: httpx.Response(200, json=lmstudio_models(loaded)))
    unload = wire.post(f"{LMSTUDIO}/api/v1/models/unload").mock(
        side_effect=lambda r: loaded.update(qwen=False) or httpx.Response(200, json={"instance_id": "qwen"}))
    status = orch.manager.unload("lmstudio:qwen")
    assert unload.call_count == 1 and b'"instance_id"' in unload.calls.last.request.content
    assert status.state is ModelState.NOT_LOADED


def test_hosted_models_cannot_be_loaded_or_unloaded(orch: Orchestrator) -> None:
    with pytest.raises(UnsupportedOperationError):
        orch.manager.load("openai:gpt-4.1-mini")
    with pytest.raises(UnsupportedOperationError):
        orch.manager.unload("openai:gpt-4.1-mini")
    with pytest.raises(InvalidModelIdError):
        orch.manager.check_status("no-colon")


def test_failure_cooldown_shows_in_status_and_reset_clears_it(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    from orchestrator_core.errors import ProviderUnavailableError

    orch.manager.record_failure("lmstudio:qwen", ProviderUnavailableError("host gone"))
    status = orch.manager.check_status("lmstudio:qwen")
    assert status.state is ModelState.COOLING_DOWN and status.cooldown_until is not None
    assert "lmstudio:qwen" not in orch.manager.alternatives("openai:gpt-4.1-mini")
    assert orch.manager.reset_failed() == 1
    assert orch.manager.check_status("lmstudio:qwen").state is ModelState.LOADED


def test_failure_cache_survives_a_restart(db_url: str, wire: respx.MockRouter) -> None:
    from orchestrator_core.errors import RateLimitError

    with build(db_url, local_hosts=()) as first:
        first.manager.record_failure("openai:gpt-4.1-mini", RateLimitError("429", retry_after=120))
    with build(db_url, local_hosts=()) as second:
        assert second.manager.check_status("openai:gpt-4.1-mini").state is ModelState.COOLING_DOWN


def test_suggest_alternative_prefers_hosted_then_loaded_local(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"loaded-one": True, "cold-one": False}))
    ranked = orch.manager.alternatives("lmstudio:cold-one")
    assert ranked == ["openai:gpt-4.1-mini", "lmstudio:loaded-one"]
    assert orch.manager.suggest_alternative("openai:gpt-4.1-mini") == "lmstudio:loaded-one"
