"""Check-and-load, chat, stream, unload and fallback against a real llama-server in router mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator_core.errors import ModelLoadError, OrchestratorError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import Message, ModelState
from tests.helpers import settings
from tests.real.conftest import BROKEN, MODELS, LlamaServer
from tests.standins import ANSWER, openai_standin

A, B, C = (f"llamacpp:{name}" for name in MODELS)
HELLO = [Message(role="user", content="hello")]
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 8}


def build(db_url: str, url: str, **overrides: Any) -> Orchestrator:
    options: dict[str, Any] = {"local_hosts": ("llamacpp",), "base_urls": {"llamacpp": url}, "load_timeout_s": 60.0,
                               "poll_interval_s": 0.02, "status_cache_ttl_s": 0.0, "read_timeout_s": 60.0,
                               "status_timeout_s": 5.0, "connect_timeout_s": 2.0}
    return Orchestrator.from_settings(settings(db_url, **{**options, **overrides}))


@pytest.fixture
def orch(db_url: str, llama: LlamaServer) -> Iterator[Orchestrator]:
    with build(db_url, llama.url) as o:
        yield o


def server_states(llama: LlamaServer) -> dict[str, str]:
    """What the router itself says, as the truth to compare with."""
    items = httpx.get(f"{llama.url}/models", timeout=5).json()["data"]
    return {item["id"]: item["status"]["value"] for item in items}


def states(orch: Orchestrator) -> dict[str, ModelState]:
    statuses = orch.manager.list_with_status(force=True)
    return {s.model_id: s.state for s in statuses if s.model_id.startswith("llamacpp:")}


def test_every_model_in_the_folder_is_listed_and_none_is_loaded(orch: Orchestrator, llama: LlamaServer) -> None:
    assert set(server_states(llama)) == {*MODELS, BROKEN}
    assert states(orch) == dict.fromkeys((A, B, C, f"llamacpp:{BROKEN}"), ModelState.NOT_LOADED)


def test_load_and_wait_ends_with_the_model_loaded_on_the_server(orch: Orchestrator, llama: LlamaServer) -> None:
    orch.manager.load(A)
    status = orch.manager.wait_for_load(A)
    assert status.state is ModelState.LOADED
    assert server_states(llama)["tiny-a"] == "loaded"


def test_chat_loads_the_model_first_then_answers_from_it(orch: Orchestrator, llama: LlamaServer) -> None:
    events: list[str] = []
    result = orch.chat(B, HELLO, fallback=False, on_event=lambda event: events.append(event.kind), **GREEDY)
    assert result.model_id == B and not result.fell_back
    assert result.result.usage.completion_tokens == GREEDY["max_tokens"]  # random weights never stop early
    assert "loading" in events
    assert server_states(llama)["tiny-b"] == "loaded"


def test_a_streamed_answer_equals_the_plain_answer_at_temperature_zero(orch: Orchestrator) -> None:
    plain = orch.chat(A, HELLO, fallback=False, **GREEDY).text
    stream = orch.stream_chat(A, HELLO, fallback=False, **GREEDY)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == plain and stream.result is not None and stream.result.text == plain
    assert stream.result.ttft_ms is not None


def test_unload_leaves_the_model_not_loaded(orch: Orchestrator, llama: LlamaServer) -> None:
    # The router answers the unload before its child has exited; how long the status still says "loaded"
    # varies, so a few rounds make the race show every time it exists.
    for _ in range(5):
        orch.manager.load(A)
        orch.manager.wait_for_load(A)
        shown = orch.manager.unload(A).state
        assert shown in (ModelState.NOT_LOADED, ModelState.UNLOADING)  # never "loaded" after an unload
    # unload() waits UNLOAD_WAIT_S (3 s) for the host to agree; on a loaded machine the child can take longer
    # to exit, and then the last answer is "unloading". The host must agree soon after, and the state with it.
    deadline = time.monotonic() + 30
    while states(orch)[A] is ModelState.UNLOADING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert states(orch)[A] is ModelState.NOT_LOADED
    assert server_states(llama)[A.partition(":")[2]] == "unloaded"


def test_without_autoload_a_chat_still_loads_first_and_the_server_itself_refuses_unloaded_models(
    db_url: str, llama_no_autoload: LlamaServer
) -> None:
    refused = httpx.post(f"{llama_no_autoload.url}/v1/chat/completions", timeout=10,
                         json={"model": "tiny-c", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert refused.status_code >= 400 and "not loaded" in refused.text.lower()
    with build(db_url, llama_no_autoload.url) as orch:
        result = orch.chat(C, HELLO, fallback=False, **GREEDY)
    assert result.model_id == C
    assert server_states(llama_no_autoload)["tiny-c"] == "loaded"


def test_an_unknown_model_is_an_error_naming_it_and_loads_nothing(orch: Orchestrator, llama: LlamaServer) -> None:
    with pytest.raises(OrchestratorError) as info:
        orch.chat("llamacpp:no-such-model", HELLO, fallback=False, **GREEDY)
    assert "no-such-model" in info.value.message
    assert "loaded" not in server_states(llama).values()


def test_a_corrupt_model_file_fails_its_load_with_a_load_error(orch: Orchestrator, llama: LlamaServer) -> None:
    broken = f"llamacpp:{BROKEN}"
    with pytest.raises(ModelLoadError):
        orch.manager.ensure_ready(broken)
    assert server_states(llama)[BROKEN] == "unloaded"
    status = orch.manager.check_status(broken, force=True)
    assert status.state is not ModelState.LOADED and "fail" in status.detail


def test_a_failed_load_is_shown_as_load_failed(orch: Orchestrator) -> None:
    broken = f"llamacpp:{BROKEN}"
    with pytest.raises(ModelLoadError):
        orch.manager.ensure_ready(broken)
    assert orch.manager.check_status(broken, force=True).state is ModelState.LOAD_FAILED


def test_a_third_load_evicts_the_least_recently_used_of_two(orch: Orchestrator, llama: LlamaServer) -> None:
    for model in (A, B):
        orch.chat(model, HELLO, fallback=False, **GREEDY)
    orch.chat(A, HELLO, fallback=False, **GREEDY)  # A is now the most recently used
    orch.chat(C, HELLO, fallback=False, **GREEDY)
    assert server_states(llama) == {"tiny-a": "loaded", "tiny-b": "unloaded", "tiny-c": "loaded", BROKEN: "unloaded"}
    assert states(orch)[B] is ModelState.NOT_LOADED


def test_a_stopped_server_falls_back_to_a_hosted_model(db_url: str, llama: LlamaServer) -> None:
    key = "sk-real-fallback-0123456789abcdef"
    with openai_standin(key=key) as openai, \
            build(db_url, llama.url, env_keys={"openai": key}, base_urls={"llamacpp": llama.url,
                                                                          "openai": openai.base_url}) as orch:
        assert states(orch)[A] is ModelState.NOT_LOADED
        llama.stop()
        result = orch.chat(A, HELLO, **GREEDY)
    assert result.fell_back and result.model_id.startswith("openai:")
    assert result.text == ANSWER.format(model=result.model_id.partition(":")[2])
    assert result.attempts[0].model == A and result.attempts[0].outcome != "ok"
