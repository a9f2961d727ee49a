"""LM Studio: API level detection (v1 / v0 / OpenAI-only), load, unload, and its error shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from orchestrator_core.providers.lmstudio import UNKNOWN_STATE, LMStudioProvider
from orchestrator_core.types import ChatParams, ChatResult, Message, ModelFacts, ModelState, TextDelta

BASE = "http://127.0.0.1:1234"
Wire = respx.MockRouter
HELLO: list[Message] = [{"role": "user", "content": "Hello"}]

V1_MODELS = {
    "models": [
        {"type": "llm", "key": "google/gemma-3-4b", "loaded_instances": [{"id": "google/gemma-3-4b"}]},
        {"type": "llm", "key": "qwen/qwen3-8b", "loaded_instances": []},
        {"type": "llm", "key": "meta/llama-3.2-1b",
         "loaded_instances": [{"id": "meta/llama-3.2-1b"}, {"id": "meta/llama-3.2-1b:2"}]},
        {"type": "embedding", "key": "nomic-embed-text-v1.5", "loaded_instances": [{"id": "nomic"}]},
    ]
}
V0_MODELS = {
    "object": "list",
    "data": [
        {"id": "qwen2-vl-7b-instruct", "type": "vlm", "state": "loaded"},
        {"id": "llama-3.2-1b-instruct", "type": "llm", "state": "not-loaded"},
        {"id": "text-embedding-nomic-embed-text-v1.5", "type": "embeddings", "state": "loaded"},
    ],
}
NO_MODELS_LOADED = "No models loaded. Please load a model in the developer page or use the `lms load` command."


@pytest.fixture
def wire() -> Iterator[Wire]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def lms() -> Iterator[LMStudioProvider]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0, connect=1.0)) as client:
        yield LMStudioProvider(client, load_timeout_s=42)


def _old_host(wire: Wire, v0: dict[str, Any] | None = None) -> None:
    """An LM Studio 0.3.x: no /api/v1 routes."""
    wire.get("/api/v1/models").respond(404)
    wire.get("/api/v0/models").respond(json=v0 or V0_MODELS)


def _body(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


# -- host_models ------------------------------------------------------------------------------------
def test_lmstudio_v1_lists_llms_with_loaded_instances_and_skips_embeddings(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)

    models = {m.name: m for m in lms.host_models()}

    assert list(models) == ["google/gemma-3-4b", "qwen/qwen3-8b", "meta/llama-3.2-1b"]
    assert models["google/gemma-3-4b"].state is ModelState.LOADED
    assert models["google/gemma-3-4b"].instance_ids == ("google/gemma-3-4b",)
    assert models["qwen/qwen3-8b"].state is ModelState.NOT_LOADED
    assert models["meta/llama-3.2-1b"].instance_ids == ("meta/llama-3.2-1b", "meta/llama-3.2-1b:2")
    assert "2 instances" in models["meta/llama-3.2-1b"].detail
    assert lms.api_level == "v1"


def test_lmstudio_v1_host_is_asked_once_per_call(wire: Wire, lms: LMStudioProvider) -> None:
    v1 = wire.get("/api/v1/models").respond(json=V1_MODELS)
    v0 = wire.get("/api/v0/models").respond(json=V0_MODELS)

    lms.host_models()
    lms.host_models()

    assert v1.call_count == 2
    assert v0.call_count == 0
    assert len(wire.calls) == 2


def test_lmstudio_falls_back_to_v0_and_remembers_it(wire: Wire, lms: LMStudioProvider) -> None:
    _old_host(wire)

    first = lms.host_models()
    calls_after_first = len(wire.calls)
    second = lms.host_models()

    assert calls_after_first == 2
    assert len(wire.calls) == 3  # the second call goes straight to /api/v0
    assert wire.calls.last.request.url.path == "/api/v0/models"
    assert lms.api_level == "v0"
    assert [(m.name, m.state) for m in second] == [
        ("qwen2-vl-7b-instruct", ModelState.LOADED),
        ("llama-3.2-1b-instruct", ModelState.NOT_LOADED),
    ]
    assert first == second


def test_lmstudio_api_level_lives_on_the_connection_provider_and_its_views(wire: Wire) -> None:
    _old_host(wire)
    with httpx.Client(base_url=BASE) as client, httpx.Client(base_url=BASE) as status_client:
        provider = LMStudioProvider(client)
        provider.host_models()
        provider.with_client(status_client, provider.limits).host_models()  # the status probes' view
        provider.with_key("token-for-one-request").host_models()
        other_connection_level = LMStudioProvider(httpx.Client(base_url=BASE)).api_level

    assert [c.request.url.path for c in wire.calls] == [
        "/api/v1/models", "/api/v0/models", "/api/v0/models", "/api/v0/models"]
    assert other_connection_level is None  # another connection, even to the same host, learns for itself


def test_lmstudio_treats_200_unexpected_endpoint_answer_as_a_missing_route(wire: Wire, lms: LMStudioProvider) -> None:
    # LM Studio 0.3.x answers unknown routes with HTTP 200 and an error body ("Returning 200 anyway").
    wire.get("/api/v1/models").respond(json={"error": "Unexpected endpoint or method. (GET /api/v1/models)"})
    wire.get("/api/v0/models").respond(json=V0_MODELS)

    models = lms.host_models()

    assert lms.api_level == "v0"
    assert [m.name for m in models] == ["qwen2-vl-7b-instruct", "llama-3.2-1b-instruct"]


def test_lmstudio_openai_only_host_lists_models_with_unknown_state(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(404)
    wire.get("/api/v0/models").respond(404)
    wire.get("/v1/models").respond(json={"object": "list", "data": [{"id": "llama-3.2-1b-instruct"}]})

    models = lms.host_models()

    assert [(m.name, m.state, m.detail) for m in models] == [
        ("llama-3.2-1b-instruct", ModelState.NOT_LOADED, UNKNOWN_STATE)
    ]
    assert lms.api_level == "openai"


def test_lmstudio_host_down_fails_fast_with_unavailable(wire: Wire, lms: LMStudioProvider) -> None:
    route = wire.get("/api/v1/models").mock(side_effect=httpx.ConnectError("Connection refused"))

    with pytest.raises(ProviderUnavailableError, match="start the server"):
        lms.host_models()

    assert route.call_count == 1
    assert len(wire.calls) == 1  # no fallback probing of older routes on a dead host
    assert lms.api_level is None


def test_lmstudio_sends_the_api_token_as_bearer_when_present(wire: Wire) -> None:
    route = wire.get("/api/v1/models").respond(json={"models": []})
    with httpx.Client(base_url=BASE) as client:
        LMStudioProvider(client, api_key="sk-lm-token-1234").host_models()

    assert route.calls.last.request.headers["authorization"] == "Bearer sk-lm-token-1234"


def test_lmstudio_sends_no_authorization_without_a_token(wire: Wire, lms: LMStudioProvider) -> None:
    route = wire.get("/api/v1/models").respond(json={"models": []})

    lms.host_models()

    assert "authorization" not in route.calls.last.request.headers


# -- load -----------------------------------------------------------------------------------------------
def test_lmstudio_load_posts_the_model_to_api_v1_with_a_long_read_timeout(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    load = wire.post("/api/v1/models/load").respond(
        json={"type": "llm", "instance_id": "qwen/qwen3-8b", "load_time_seconds": 9.1, "status": "loaded"}
    )

    lms.load_model("qwen/qwen3-8b")

    assert _body(load) == {"model": "qwen/qwen3-8b"}
    assert load.calls.last.request.extensions["timeout"]["read"] == 42
    assert load.calls.last.request.extensions["timeout"]["connect"] == 1.0


def test_lmstudio_load_of_a_loaded_model_creates_no_second_instance(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    load = wire.post("/api/v1/models/load").respond(json={"status": "loaded"})

    lms.load_model("google/gemma-3-4b")

    assert load.call_count == 0


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": {"message": "Failed to load model: insufficient system resources"}}),
        (400, {"error": "Failed to load model: insufficient system resources"}),
        (200, {"instance_id": "qwen/qwen3-8b", "status": "failed: insufficient system resources"}),
    ],
)
def test_lmstudio_load_failure_raises_model_load_error_with_the_host_message(
    wire: Wire, lms: LMStudioProvider, status: int, body: dict[str, Any]
) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    wire.post("/api/v1/models/load").respond(status, json=body)

    with pytest.raises(ModelLoadError) as caught:
        lms.load_model("qwen/qwen3-8b")

    assert "insufficient system resources" in caught.value.message
    assert "lms load qwen/qwen3-8b" in caught.value.message
    assert caught.value.provider == "lmstudio"


def test_lmstudio_load_of_an_unknown_model_on_v1_is_model_not_found(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    wire.post("/api/v1/models/load").respond(
        404, json={"error": {"message": "Model 'nope/x' not found", "type": "model_not_found"}}
    )

    with pytest.raises(ModelNotFoundError):
        lms.load_model("nope/x")


def test_lmstudio_load_on_an_old_host_sends_a_one_token_chat(wire: Wire, lms: LMStudioProvider) -> None:
    _old_host(wire)
    load = wire.post("/api/v1/models/load").respond(404)
    chat = wire.post("/v1/chat/completions").respond(
        json={"model": "llama-3.2-1b-instruct", "choices": [{"message": {"content": "P"}, "finish_reason": "length"}]}
    )

    lms.load_model("llama-3.2-1b-instruct")

    sent = _body(chat)
    assert sent["model"] == "llama-3.2-1b-instruct"
    assert sent["max_tokens"] == 1
    assert sent["messages"] == [{"role": "user", "content": "ping"}]
    assert sent["stream"] is False
    assert chat.calls.last.request.extensions["timeout"]["read"] == 42
    assert load.call_count == 0  # v0 was detected, so the missing load route is not even tried


def test_lmstudio_load_falls_back_to_jit_when_the_load_route_is_missing(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json={"models": [{"type": "llm", "key": "m", "loaded_instances": []}]})
    unknown_route = {"error": "Unexpected endpoint or method. (POST /api/v1/models/load)"}
    wire.post("/api/v1/models/load").respond(json=unknown_route)
    chat = wire.post("/v1/chat/completions").respond(json={"model": "m", "choices": [{"message": {"content": "P"}}]})

    lms.load_model("m")

    assert _body(chat)["max_tokens"] == 1


def test_lmstudio_load_on_a_v0_host_skips_a_model_already_loaded(wire: Wire, lms: LMStudioProvider) -> None:
    _old_host(wire)
    chat = wire.post("/v1/chat/completions").respond(json={"choices": [{"message": {"content": "P"}}]})

    lms.load_model("qwen2-vl-7b-instruct")

    assert chat.call_count == 0


@pytest.mark.parametrize("status", [400, 404])
def test_lmstudio_jit_load_refused_explains_how_to_enable_loading(
    wire: Wire, lms: LMStudioProvider, status: Any
) -> None:
    _old_host(wire)
    wire.post("/v1/chat/completions").respond(status, json={"error": NO_MODELS_LOADED})

    with pytest.raises(ModelLoadError) as caught:
        lms.load_model("llama-3.2-1b-instruct")

    message = caught.value.message
    assert "No models loaded" in message
    assert "is not loaded on the host" not in message  # the host's words, not a nested error message
    assert "Just in Time" in message
    assert "0.4" in message
    assert "lms load llama-3.2-1b-instruct" in message


# -- unload -----------------------------------------------------------------------------------------
def test_lmstudio_unload_posts_every_instance_id_of_the_model(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    unload = wire.post("/api/v1/models/unload").respond(json={"instance_id": "x"})

    lms.unload_model("meta/llama-3.2-1b")

    assert [_body(unload, i) for i in range(unload.call_count)] == [
        {"instance_id": "meta/llama-3.2-1b"},
        {"instance_id": "meta/llama-3.2-1b:2"},
    ]


def test_lmstudio_unload_of_a_named_instance_unloads_only_that_one(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    unload = wire.post("/api/v1/models/unload").respond(json={"instance_id": "meta/llama-3.2-1b:2"})

    lms.unload_model("meta/llama-3.2-1b:2")

    assert unload.call_count == 1
    assert _body(unload) == {"instance_id": "meta/llama-3.2-1b:2"}


def test_lmstudio_unload_of_a_model_not_loaded_is_a_no_op(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json=V1_MODELS)
    unload = wire.post("/api/v1/models/unload").respond(json={})

    lms.unload_model("qwen/qwen3-8b")

    assert unload.call_count == 0


def test_lmstudio_unload_on_a_pre_0_4_host_is_unsupported(wire: Wire, lms: LMStudioProvider) -> None:
    _old_host(wire)
    unload = wire.post("/api/v1/models/unload").respond(json={})

    with pytest.raises(UnsupportedOperationError) as caught:
        lms.unload_model("qwen2-vl-7b-instruct")

    assert "lms unload qwen2-vl-7b-instruct" in caught.value.message
    assert unload.call_count == 0


# -- chat -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 404])
@pytest.mark.parametrize(
    "body",
    [
        {"error": NO_MODELS_LOADED},
        {"error": {"message": NO_MODELS_LOADED, "type": "invalid_request_error", "param": "model", "code": None}},
        {"error": {"message": 'Invalid model identifier "o4-mini". Please specify a valid downloaded model.',
                   "type": "invalid_request_error", "param": "model", "code": "model_not_found"}},
    ],
    ids=["no-models-string", "no-models-object", "invalid-identifier"],
)
def test_lmstudio_chat_on_a_model_not_loaded_raises_model_not_loaded(
    wire: Wire, lms: LMStudioProvider, status: int, body: dict[str, Any]
) -> None:
    route = wire.post("/v1/chat/completions").respond(status, json=body)

    with pytest.raises(ModelNotLoadedError) as caught:
        lms.chat("o4-mini", HELLO, ChatParams())

    assert caught.value.status_code == status
    assert caught.value.model == "o4-mini"
    assert route.call_count == 1


def test_lmstudio_chat_reports_the_model_that_actually_answered(wire: Wire, lms: LMStudioProvider) -> None:
    # One loaded model may answer for any requested name (LM Studio 0.3.14).
    route = wire.post("/v1/chat/completions").respond(
        json={"model": "gemma-3-1b-it-qat:2", "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    )

    result = lms.chat("qwen/qwen3-8b", HELLO, ChatParams(max_tokens=5))

    assert result.model == "gemma-3-1b-it-qat:2"
    assert result.text == "Hi"
    assert _body(route)["model"] == "qwen/qwen3-8b"


def test_lmstudio_stream_ends_with_done_and_takes_usage_from_the_last_chunk(wire: Wire, lms: LMStudioProvider) -> None:
    chunks = [
        {"model": "m", "choices": [{"delta": {"role": "assistant", "content": "Hel"}}], "usage": None},
        {"model": "m", "choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}], "usage": None},
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    route = wire.post("/v1/chat/completions").respond(text=sse, headers={"content-type": "text/event-stream"})

    events = list(lms.stream_chat("m", HELLO, ChatParams()))

    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")]
    final = events[-1]
    assert isinstance(final, ChatResult)
    assert (final.text, final.finish_reason, final.usage.total_tokens) == ("Hello", "stop", 9)
    assert _body(route)["stream_options"] == {"include_usage": True}


def test_lmstudio_openai_only_host_reports_a_model_loaded_after_a_jit_load(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(404)
    wire.get("/api/v0/models").respond(404)
    wire.get("/v1/models").respond(json={"object": "list", "data": [{"id": "tiny"}, {"id": "other"}]})
    wire.post("/v1/chat/completions").respond(json={"model": "tiny", "choices": [{"message": {"content": "P"}}]})

    before = {m.name: m.state for m in lms.host_models()}
    lms.load_model("tiny")
    after = {m.name: m for m in lms.host_models()}

    assert before == {"tiny": ModelState.NOT_LOADED, "other": ModelState.NOT_LOADED}
    assert after["tiny"].state is ModelState.LOADED and "just in time" in after["tiny"].detail
    assert after["other"].state is ModelState.NOT_LOADED


def test_lmstudio_v1_reports_size_and_the_loaded_and_maximum_context(wire: Wire, lms: LMStudioProvider) -> None:
    wire.get("/api/v1/models").respond(json={"models": [
        {"type": "llm", "key": "qwen/qwen3-8b", "size_bytes": 4_680_000_000, "max_context_length": 32768,
         "loaded_instances": [{"id": "qwen/qwen3-8b", "config": {"context_length": 8192}}]},
        {"type": "llm", "key": "meta/llama", "size_bytes": "big", "loaded_instances": []}]})

    models = {m.name: m for m in lms.host_models()}

    assert models["qwen/qwen3-8b"].facts == ModelFacts(size_bytes=4_680_000_000, context_length=8192,
                                                       max_context_length=32768)
    assert models["meta/llama"].facts == ModelFacts()  # nonsense is left out, not shown
