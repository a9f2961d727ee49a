"""ModelManager: status from one request per host, cache TTL, load / wait / unload, alternatives, cooldown."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    InvalidModelIdError,
    ModelLoadError,
    ModelLoadTimeoutError,
    ModelNotLoadedError,
    UnsupportedOperationError,
)
from orchestrator_core.loader import LoadProgress, ModelManager, poll_delays
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


# -- the state shown is the state of the host (issue 8 §2) ------------------------------------------
def _llama_models(state: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"data": [{"id": name, "status": status} for name, status in state.items()]})


def _sse(*frames: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames)


class FakeTime:
    """A clock that moves only when the manager pauses; records every pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def pause(self, event: threading.Event, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_poll_delays_start_fast_and_double_up_to_the_interval() -> None:
    assert list(itertools.islice(poll_delays(1.0), 7)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert list(itertools.islice(poll_delays(0.01), 3)) == [0.01, 0.01, 0.01]


def test_wait_for_load_backs_off_from_50_ms_to_the_poll_interval(db_url: str, wire: respx.MockRouter) -> None:
    answers = iter([{"value": "loading"}] * 6)
    wire.get(f"{LLAMACPP}/models").mock(
        side_effect=lambda r: _llama_models({"tiny": next(answers, {"value": "loaded"})}))
    wire.get(f"{LLAMACPP}/models/sse").respond(404)
    fake = FakeTime()
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        manager = ModelManager(orch.settings, orch.factory, orch.registry, orch.failures,
                               clock=fake.clock, pause=fake.pause)
        status = manager.wait_for_load("llamacpp:tiny", timeout_s=60, poll_s=0.5)
    assert status.state is ModelState.LOADED
    assert fake.pauses == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_wait_for_load_wakes_on_the_routers_sse_event_and_reports_its_progress(
    db_url: str, wire: respx.MockRouter
) -> None:
    state = {"tiny": {"value": "loading"}}
    paused = [threading.Event(), threading.Event()]  # the router speaks only while the waiter pauses

    def stream() -> Iterator[bytes]:
        paused[0].wait(5)
        yield _sse({"model": "other", "event": "status_change", "data": {"status": "loading", "progress": {
            "stages": ["text_model"], "current": "text_model", "value": 0.9}}},
            {"model": "tiny", "event": "status_change", "data": {"status": "loading", "progress": {
                "stages": ["text_model"], "current": "text_model", "value": 0.5}}})
        paused[1].wait(5)
        state["tiny"] = {"value": "loaded"}
        yield _sse({"model": "tiny", "event": "status_change", "data": {"status": "loaded"}})

    def pause(event: threading.Event, seconds: float) -> None:
        paused[len(woken)].set()
        woken.append(event.wait(5))  # only a pushed event ends this pause: polling alone never would

    wire.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _llama_models(state))
    wire.get(f"{LLAMACPP}/models/sse").mock(side_effect=lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=stream()))
    woken: list[bool] = []
    seen: list[LoadProgress] = []
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        manager = ModelManager(orch.settings, orch.factory, orch.registry, orch.failures, pause=pause)
        status = manager.wait_for_load("llamacpp:tiny", timeout_s=30, on_progress=seen.append)
    assert status.state is ModelState.LOADED
    assert woken == [True, True]
    assert [(p.state, p.percent) for p in seen] == [
        (ModelState.LOADING, None), (ModelState.LOADING, 50.0), (ModelState.LOADED, None)]
    assert seen[1].detail == "loading 50%"


def test_a_failed_llamacpp_load_ends_the_wait_at_once_with_the_exit_code(db_url: str, wire: respx.MockRouter) -> None:
    # The next look would say "loaded": a wait that does not stop at the failure would report success.
    answers = iter([{"value": "unloaded", "failed": True, "exit_code": 3}])
    wire.get(f"{LLAMACPP}/models").mock(
        side_effect=lambda r: _llama_models({"tiny": next(answers, {"value": "loaded"})}))
    with build(db_url, local_hosts=("llamacpp",)) as orch, pytest.raises(ModelLoadError) as info:
        orch.manager.wait_for_load("llamacpp:tiny", timeout_s=2)
    assert "exit code 3" in info.value.message and "llama-server log" in info.value.message


def test_load_of_a_model_that_fails_on_llamacpp_raises_model_load_error(db_url: str, wire: respx.MockRouter) -> None:
    state: dict[str, Any] = {"tiny": {"value": "unloaded"}}

    def load(request: httpx.Request) -> httpx.Response:
        state["tiny"] = {"value": "unloaded", "args": ["llama-server"], "failed": True, "exit_code": 1}
        return httpx.Response(200, json={"success": True})

    wire.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _llama_models(state))
    wire.post(f"{LLAMACPP}/models/load").mock(side_effect=load)
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        orch.manager.load("llamacpp:tiny")
        with pytest.raises(ModelLoadError, match="exit code 1"):
            orch.manager.wait_for_load("llamacpp:tiny", timeout_s=2)
        assert orch.manager.check_status("llamacpp:tiny").state is ModelState.LOAD_FAILED


def test_unload_waits_until_llamacpp_reports_the_model_gone(db_url: str, wire: respx.MockRouter) -> None:
    # llama-server answers the unload before its child exits: GET /models says "loaded" a while longer.
    state = {"tiny": {"value": "loaded"}}
    looks_until_gone = itertools.count()

    def models(request: httpx.Request) -> httpx.Response:
        if state["tiny"]["value"] == "stopping" and next(looks_until_gone) >= 2:
            state["tiny"] = {"value": "unloaded"}
        return _llama_models({"tiny": {"value": "loaded"} if state["tiny"]["value"] == "stopping" else state["tiny"]})

    wire.get(f"{LLAMACPP}/models").mock(side_effect=models)
    wire.post(f"{LLAMACPP}/models/unload").mock(
        side_effect=lambda r: state.update(tiny={"value": "stopping"}) or httpx.Response(200, json={"success": True}))
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        status = orch.manager.unload("llamacpp:tiny")
    assert status.state is ModelState.NOT_LOADED


def test_unload_reports_unloading_while_the_host_still_lists_the_model(db_url: str, wire: respx.MockRouter) -> None:
    state = {"tiny": {"value": "loaded"}}
    wire.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _llama_models(state))
    wire.post(f"{LLAMACPP}/models/unload").respond(json={"success": True})
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        status = orch.manager.unload("llamacpp:tiny", wait_s=0.05)
        assert status.state is ModelState.UNLOADING
        assert "still lists it as loaded" in status.detail
        assert orch.manager.check_status("llamacpp:tiny", force=True).state is ModelState.UNLOADING
        assert "llamacpp:tiny" not in orch.manager.alternatives("openai:gpt-4.1-mini")
        state["tiny"] = {"value": "unloaded"}
        assert orch.manager.check_status("llamacpp:tiny", force=True).state is ModelState.NOT_LOADED


def test_unload_waits_until_ollama_drops_the_model_from_api_ps(db_url: str, wire: respx.MockRouter) -> None:
    # keep_alive 0 is asynchronous too: /api/ps lists the model for a moment after the answer.
    ps_answers = iter([{"models": [{"name": "llama3.2:latest"}]}] * 3)
    wire.get(f"{OLLAMA}/api/tags").respond(json={"models": [{"name": "llama3.2:latest"}]})
    ps = wire.get(f"{OLLAMA}/api/ps").mock(side_effect=lambda r: httpx.Response(200, json=next(
        ps_answers, {"models": []})))
    wire.post(f"{OLLAMA}/api/generate").respond(json={"model": "llama3.2", "done": True, "done_reason": "unload"})
    with build(db_url, local_hosts=("ollama",)) as orch:
        status = orch.manager.unload("ollama:llama3.2")
    assert status.state is ModelState.NOT_LOADED
    assert ps.call_count >= 4


def test_a_sleeping_llamacpp_model_is_ready_without_a_load(db_url: str, wire: respx.MockRouter) -> None:
    wire.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _llama_models({"tiny": {"value": "sleeping"}}))
    load = wire.post(f"{LLAMACPP}/models/load").respond(json={"success": True})
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        status = orch.manager.ensure_ready("llamacpp:tiny")
    assert status.state is ModelState.SLEEPING and status.state.ready
    assert load.call_count == 0


def test_loading_a_model_that_is_still_downloading_says_so(db_url: str, wire: respx.MockRouter) -> None:
    downloading = {"value": "downloading", "progress": {"https://hf.co/t.gguf": {"done": 30, "total": 120}}}
    wire.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _llama_models({"tiny": downloading}))
    load = wire.post(f"{LLAMACPP}/models/load").respond(json={"success": True})
    with build(db_url, local_hosts=("llamacpp",)) as orch:
        assert orch.manager.check_status("llamacpp:tiny").progress == 25.0
        with pytest.raises(ModelNotLoadedError, match="still downloading"):
            orch.manager.ensure_ready("llamacpp:tiny")
    assert load.call_count == 0


def test_pauses_after_the_load_request_has_returned_are_not_cut_short(db_url: str, wire: respx.MockRouter) -> None:
    # Only a running load request may end a pause early; a finished one must not turn the wait into a busy loop.
    state = {"tiny": {"value": "unloaded"}}
    looks = itertools.count()

    def models(request: httpx.Request) -> httpx.Response:
        if state["tiny"]["value"] == "loading" and next(looks) >= 4:
            state["tiny"] = {"value": "loaded"}
        return _llama_models(state)

    wire.get(f"{LLAMACPP}/models").mock(side_effect=models)
    wire.get(f"{LLAMACPP}/models/sse").respond(404)
    wire.post(f"{LLAMACPP}/models/load").mock(
        side_effect=lambda r: state.update(tiny={"value": "loading"}) or httpx.Response(200, json={"success": True}))
    already_set: list[bool] = []

    def pause(event: threading.Event, seconds: float) -> None:
        already_set.append(event.is_set())
        event.wait(0.01)

    with build(db_url, local_hosts=("llamacpp",)) as orch:
        manager = ModelManager(orch.settings, orch.factory, orch.registry, orch.failures, pause=pause)
        manager.load("llamacpp:tiny")
        assert manager.wait_for_load("llamacpp:tiny", timeout_s=5).state is ModelState.LOADED
    assert len(already_set) >= 3 and not any(already_set[1:])  # the first may see the request end


def test_wait_wakes_the_moment_lm_studios_blocking_load_returns(orch: Orchestrator, wire: respx.MockRouter) -> None:
    loaded = {"qwen": False}
    pausing = threading.Event()

    def load(request: httpx.Request) -> httpx.Response:
        pausing.wait(5)  # the load call returns while the waiter pauses
        loaded["qwen"] = True
        return httpx.Response(200, json={"instance_id": "qwen", "status": "loaded", "load_time_seconds": 0.01})

    def pause(event: threading.Event, seconds: float) -> None:
        pausing.set()
        woken.append(event.wait(5))  # only the load call returning ends this pause early

    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=lambda r: httpx.Response(200, json=lmstudio_models(loaded)))
    wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(side_effect=load)
    woken: list[bool] = []
    manager = ModelManager(orch.settings, orch.factory, orch.registry, orch.failures, pause=pause)
    manager.load("lmstudio:qwen")
    assert manager.wait_for_load("lmstudio:qwen", timeout_s=30).state is ModelState.LOADED
    assert woken == [True]


def test_a_fallback_hop_ranks_as_the_full_status_list_would_and_builds_no_status_it_leaves_out(
    orch: Orchestrator, wire: respx.MockRouter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ranking of a hop is on the calling thread between the failure and the next request: it builds
    # the status of the models it could pick only, and must pick in the order the full list gives.
    from orchestrator_core.errors import ProviderUnavailableError
    from orchestrator_core.fallback import rank_alternatives

    wire.get(f"{LMSTUDIO}/api/v1/models").respond(
        json=lmstudio_models({"loaded-one": True, "cold-one": False, "other": True}))
    for model_id, priority in (("lmstudio:loaded-one", 5), ("lmstudio:cold-one", 1), ("lmstudio:other", 7)):
        orch.registry.add(model_id, priority=priority)
    orch.manager.list_with_status(force=True)  # the hosts' answers a hop ranks with
    orch.manager.record_failure("lmstudio:other", ProviderUnavailableError("gone"))
    excluded, tried = "lmstudio:cold-one", "anthropic:claude-haiku-4-5"
    priorities = {e.model_id: e.priority for e in orch.registry.list(active_only=True)}
    full = rank_alternatives("openai:gpt-4.1-mini", orch.manager.list_with_status(cached=True),
                             priorities=priorities, stats={}, exclude=[excluded, tried])
    built: list[str] = []
    status = orch.manager._status
    monkeypatch.setattr(orch.manager, "_status", lambda ref, *a: built.append(ref.id) or status(ref, *a))
    ranked = orch.manager.alternatives("openai:gpt-4.1-mini", exclude=iter([excluded, tried]))  # one pass only
    assert ranked == full and ranked[0] == "lmstudio:loaded-one" and "lmstudio:other" not in ranked
    assert not {"openai:gpt-4.1-mini", excluded, tried} & set(built)  # failed, excluded: no status built
    assert "lmstudio:other" in built  # in cooldown: the status says so, and the ranking leaves it out
    every = orch.manager.alternatives("openai:gpt-4.1-mini")
    built.clear()
    assert orch.manager.alternatives("openai:gpt-4.1-mini", exclude_providers=["lmstudio"]) == [
        m for m in every if not m.startswith("lmstudio:")]
    assert built and not [m for m in built if m.startswith("lmstudio:")]  # a dead connection: none of its models


def test_close_waits_a_bounded_time_for_a_probe_still_running(orch: Orchestrator, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    # A probe stuck in a read (up to STATUS_TIMEOUT_S, and longer on a host that trickles) must not hold an exit.
    from orchestrator_core import exits

    monkeypatch.setattr(exits, "POOL_WAIT_S", 0.05)
    manager = ModelManager(orch.settings, orch.factory, orch.registry, orch.failures)
    release = threading.Event()
    probe = manager._probe_pool().submit(release.wait, 30)
    try:
        manager.close()
        assert not probe.done()  # close() returned while the probe still ran
        assert "Host probe(s) still running at close" in caplog.text and "host-status" in caplog.text
    finally:
        release.set()
    assert probe.result(timeout=5) is True
