"""Ollama: state from /api/tags + /api/ps, ":latest" name matching, load and unload via /api/generate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from orchestrator_core.errors import ModelLoadError, ModelNotFoundError, ProviderUnavailableError
from orchestrator_core.providers.ollama import OllamaProvider
from orchestrator_core.types import ChatParams, Message, ModelFacts, ModelState

BASE = "http://127.0.0.1:11434"
Wire = respx.MockRouter
HELLO: list[Message] = [{"role": "user", "content": "Hello"}]

TAGS = {
    "models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
        {"name": "mistral:latest", "model": "mistral:latest", "size": 5137025024},
        {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 4683087332},
    ]
}
PS = {
    "models": [
        {"name": "mistral:latest", "model": "mistral:latest", "size": 5137025024, "size_vram": 5137025024,
         "expires_at": "2024-06-04T14:38:31.83753-07:00"},
        {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 1000, "size_vram": 520},
    ]
}


@pytest.fixture
def wire() -> Iterator[Wire]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def ollama() -> Iterator[OllamaProvider]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0, connect=1.0)) as client:
        yield OllamaProvider(client, load_timeout_s=77)


def _body(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


def test_ollama_host_models_joins_downloaded_tags_with_loaded_ps(wire: Wire, ollama: OllamaProvider) -> None:
    tags = wire.get("/api/tags").respond(json=TAGS)
    ps = wire.get("/api/ps").respond(json=PS)

    models = {m.name: m for m in ollama.host_models()}

    assert (tags.call_count, ps.call_count) == (1, 1)
    assert list(models) == ["llama3.2:latest", "mistral:latest", "qwen2.5:7b"]  # names as Ollama reports them
    assert models["llama3.2:latest"].state is ModelState.NOT_LOADED
    assert models["mistral:latest"].state is ModelState.LOADED
    assert models["mistral:latest"].instance_ids == ("mistral:latest",)
    assert models["mistral:latest"].detail == ""
    assert models["qwen2.5:7b"].detail == "partly on CPU (48% CPU / 52% GPU)"


def test_ollama_lists_a_running_model_missing_from_tags_as_loaded(wire: Wire, ollama: OllamaProvider) -> None:
    wire.get("/api/tags").respond(json={"models": []})
    wire.get("/api/ps").respond(json={"models": [{"name": "gpt-oss:120b-cloud"}]})

    models = ollama.host_models()

    assert [(m.name, m.state) for m in models] == [("gpt-oss:120b-cloud", ModelState.LOADED)]


def test_ollama_host_down_is_unavailable_after_one_request(wire: Wire, ollama: OllamaProvider) -> None:
    wire.get("/api/tags").mock(side_effect=httpx.ConnectError("Connection refused"))
    ps = wire.get("/api/ps").respond(json=PS)

    with pytest.raises(ProviderUnavailableError, match="127.0.0.1:11434"):
        ollama.host_models()

    assert ps.call_count == 0


@pytest.mark.parametrize(
    ("requested", "listed", "same"),
    [
        ("llama3.2", "llama3.2:latest", True),
        ("llama3.2:latest", "llama3.2", True),
        ("Llama3.2", "llama3.2:latest", True),
        ("llama3.2:3b", "llama3.2:latest", False),
        ("registry.local:5000/team/llama3.2", "registry.local:5000/team/llama3.2:latest", True),
        ("llama3", "llama3.2:latest", False),
    ],
)
def test_ollama_same_model_treats_untagged_names_as_latest(
    ollama: OllamaProvider, requested: str, listed: str, same: bool
) -> None:
    assert ollama.same_model(requested, listed) is same


def test_ollama_load_sends_an_empty_generate_with_a_long_read_timeout(wire: Wire, ollama: OllamaProvider) -> None:
    route = wire.post("/api/generate").respond(
        json={"model": "llama3.2", "response": "", "done": True, "done_reason": "load"}
    )

    ollama.load_model("llama3.2")

    assert _body(route) == {"model": "llama3.2", "stream": False}
    assert route.calls.last.request.extensions["timeout"]["read"] == 77


def test_ollama_load_passes_the_keep_alive_option(wire: Wire) -> None:
    route = wire.post("/api/generate").respond(json={"model": "llama3.2", "done": True})
    with httpx.Client(base_url=BASE) as client:
        OllamaProvider(client, keep_alive="24h").load_model("llama3.2")

    assert _body(route)["keep_alive"] == "24h"


def test_ollama_unload_sends_keep_alive_zero(wire: Wire, ollama: OllamaProvider) -> None:
    route = wire.post("/api/generate").respond(json={"model": "llama3.2", "done": True, "done_reason": "unload"})

    ollama.unload_model("llama3.2")

    assert _body(route) == {"model": "llama3.2", "keep_alive": 0, "stream": False}


def test_ollama_load_of_an_unknown_model_is_model_not_found(wire: Wire, ollama: OllamaProvider) -> None:
    wire.post("/api/generate").respond(404, json={"error": "model \"nope\" not found, try pulling it first"})

    with pytest.raises(ModelNotFoundError) as caught:
        ollama.load_model("nope")

    assert caught.value.status_code == 404
    assert "try pulling it first" in caught.value.message


@pytest.mark.parametrize("status", [500, 200])
def test_ollama_load_failure_is_model_load_error_with_the_host_message(
    wire: Wire, ollama: OllamaProvider, status: int
) -> None:
    wire.post("/api/generate").respond(status, json={"error": "llama runner process has terminated: signal: killed"})

    with pytest.raises(ModelLoadError, match="llama runner process has terminated") as caught:
        ollama.load_model("llama3.2")

    assert caught.value.provider == "ollama"


def test_ollama_chat_goes_to_the_openai_compatible_route(wire: Wire, ollama: OllamaProvider) -> None:
    route = wire.post("/v1/chat/completions").respond(
        json={"model": "llama3.2", "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 4, "completion_tokens": 1}}
    )

    result = ollama.chat("llama3.2", HELLO, ChatParams(temperature=0.2))

    assert (result.text, result.model, result.usage.total_tokens) == ("Hi", "llama3.2", 5)
    assert _body(route)["temperature"] == 0.2
    assert "authorization" not in route.calls.last.request.headers


def test_ollama_chat_with_an_unknown_model_is_model_not_found(wire: Wire, ollama: OllamaProvider) -> None:
    wire.post("/v1/chat/completions").respond(
        404, json={"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": None}}
    )

    with pytest.raises(ModelNotFoundError):
        ollama.chat("nope", HELLO, ChatParams())


def test_ollama_reports_size_and_the_running_copys_context_and_memory(wire: Wire, ollama: OllamaProvider) -> None:
    wire.get("/api/tags").respond(json=TAGS)
    wire.get("/api/ps").respond(json={"models": [
        {"name": "mistral:latest", "model": "mistral:latest", "size": 6_000_000_000, "size_vram": 6_000_000_000,
         "context_length": 4096}]})

    models = {m.name: m for m in ollama.host_models()}

    assert models["mistral:latest"].facts == ModelFacts(size_bytes=5137025024, context_length=4096,
                                                        memory_bytes=6_000_000_000)
    assert models["llama3.2:latest"].facts == ModelFacts(size_bytes=2019393189)
