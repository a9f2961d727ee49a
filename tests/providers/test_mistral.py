"""Mistral over the wire (respx): max_tokens, no stream_options, chunk-list content, 400 invalid_model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    BadResponseError,
    ContentFilteredError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from orchestrator_core.providers.mistral import MistralProvider
from orchestrator_core.types import ChatParams, ChatResult, KeyCheck, Message, TextDelta, Usage
from tests.helpers import sse_response as sse

BASE = "https://api.mistral.ai/v1"
CHAT = f"{BASE}/chat/completions"
KEY = "q7RmTestKey0123456789abcdefXYZw"  # Mistral keys are 32 random characters; none of a model name
HELLO: list[Message] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]

COMPLETION = {
    "id": "cmpl-1", "object": "chat.completion", "model": "mistral-small-2506", "created": 1,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def provider(client: httpx.Client) -> MistralProvider:
    return MistralProvider(client, api_key=KEY)



def chunk(content: object = None, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "mistral-small-2506", "usage": usage,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


def test_mistral_chat_posts_max_tokens_with_bearer(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(CHAT).respond(json=COMPLETION)
    provider.chat("mistral-small-latest", HELLO, ChatParams(max_tokens=256, temperature=0.3))
    request = route.calls.last.request
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": "mistral-small-latest", "messages": HELLO, "stream": False, "max_tokens": 256, "temperature": 0.3,
    }


def test_mistral_chat_parses_text_finish_usage_and_model(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(json=COMPLETION)
    result = provider.chat("mistral-small-latest", HELLO, ChatParams())
    assert result == ChatResult("Bonjour", "stop", Usage(8, 2), "mistral-small-2506", "mistral")


def test_mistral_chat_joins_text_chunks_and_skips_thinking(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    content = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
               {"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}]
    message = {"role": "assistant", "content": content}
    respx_mock.post(CHAT).respond(json={**COMPLETION, "choices": [{"index": 0, "message": message,
                                                                   "finish_reason": "stop"}]})
    assert provider.chat("magistral-medium-latest", HELLO, ChatParams()).text == "Bonjour"


def test_mistral_chat_empty_choices_is_bad_response(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).respond(json={**COMPLETION, "choices": []})
    with pytest.raises(BadResponseError):
        provider.chat("mistral-small-latest", HELLO, ChatParams())


def test_mistral_chat_non_json_200_is_bad_response(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).respond(200, text="OK")
    with pytest.raises(BadResponseError, match="not JSON"):
        provider.chat("mistral-small-latest", HELLO, ChatParams())


def test_mistral_stream_sends_no_stream_options_and_reads_usage_from_last_chunk(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHAT).mock(return_value=sse(
        chunk("Bon"), chunk([{"type": "text", "text": "jour"}]),
        chunk("", "stop", {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}), "[DONE]"))
    events = list(provider.stream_chat("mistral-small-latest", HELLO, ChatParams(max_tokens=20)))
    assert events == [TextDelta("Bon"), TextDelta("jour"),
                      ChatResult("Bonjour", "stop", Usage(8, 2), "mistral-small-2506", "mistral")]
    body = json.loads(route.calls.last.request.content)
    assert "stream_options" not in body  # Mistral rejects it
    assert body["stream"] is True
    assert body["max_tokens"] == 20


def test_mistral_stream_without_done_marker_is_bad_response(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Bon", "stop")))
    with pytest.raises(BadResponseError, match="DONE"):
        list(provider.stream_chat("mistral-small-latest", HELLO, ChatParams()))


def test_mistral_stream_malformed_event_is_bad_response(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).mock(return_value=sse("not json", "[DONE]"))
    with pytest.raises(BadResponseError):
        list(provider.stream_chat("mistral-small-latest", HELLO, ChatParams()))


def test_mistral_stream_error_payload_is_classified(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Bon"), {"error": {"message": "Service overloaded",
                                                                        "type": "service_unavailable"}}))
    with pytest.raises(ProviderUnavailableError):
        list(provider.stream_chat("mistral-small-latest", HELLO, ChatParams()))


def test_mistral_inherits_the_refusal_and_content_filter_handling(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    refusal = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "Je ne peux pas aider."}}]}
    respx_mock.post(CHAT).mock(side_effect=[
        httpx.Response(200, json=refusal),
        sse(chunk("Bon"), chunk("", "content_filter"), "[DONE]"),
    ])
    with pytest.raises(ContentFilteredError, match='mistral:mistral-small refused to answer: "Je ne peux pas aider."'):
        provider.chat("mistral-small", HELLO, ChatParams())
    events: list[object] = []
    with pytest.raises(ContentFilteredError, match="finish_reason content_filter") as info:
        events.extend(provider.stream_chat("mistral-small", HELLO, ChatParams()))
    assert events == [TextDelta("Bon")] and info.value.partial_text == "Bon"


def test_mistral_unknown_model_400_is_model_not_found(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).respond(400, json={"object": "error", "message": "Invalid model: mistral-medium-3.5",
                                             "type": "invalid_model", "param": None, "code": "1500",
                                             "raw_status_code": 400})
    with pytest.raises(ModelNotFoundError, match="Invalid model: mistral-medium-3.5"):
        provider.chat("mistral-medium-3.5", HELLO, ChatParams())


@pytest.mark.parametrize("body", [
    {"message": "Requests rate limit exceeded"},
    {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None, "code": "1300",
     "raw_status_code": 429},
])
def test_mistral_429_of_either_era_is_rate_limit(
    provider: MistralProvider, respx_mock: respx.MockRouter, body: dict[str, object]
) -> None:
    respx_mock.post(CHAT).respond(429, json=body, headers={"retry-after": "7"})
    with pytest.raises(RateLimitError) as info:
        provider.chat("mistral-small-latest", HELLO, ChatParams())
    assert info.value.retry_after == 7.0


def test_mistral_list_models_returns_ids(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/models").respond(json={"object": "list", "data": [
        {"id": "mistral-small-latest", "object": "model", "type": "base"},
        {"id": "ft:open-mistral-7b:abc", "object": "model", "type": "fine-tuned"}]})
    assert provider.list_models() == ["mistral-small-latest", "ft:open-mistral-7b:abc"]
    assert route.calls.last.request.url.path == "/v1/models"


@pytest.mark.parametrize(("answer", "expected"), [
    (httpx.Response(200, json={"object": "list", "data": []}), KeyCheck.OK),
    (httpx.Response(401, json={"detail": "Unauthorized"}), KeyCheck.REJECTED),
    (httpx.Response(401, json={"message": "Unauthorized", "request_id": "c61f2f15"}), KeyCheck.REJECTED),
    (httpx.Response(503, text="upstream connect error"), KeyCheck.UNVERIFIED),
])
def test_mistral_test_key_outcomes(
    provider: MistralProvider, respx_mock: respx.MockRouter, answer: httpx.Response, expected: KeyCheck
) -> None:
    respx_mock.get(f"{BASE}/models").mock(return_value=answer)
    assert provider.test_key().status is expected


def test_mistral_test_key_unverified_when_unreachable(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/models").mock(side_effect=httpx.ConnectError("Connection refused"))
    result = provider.test_key()
    assert result.status is KeyCheck.UNVERIFIED
    assert "Cannot reach mistral" in result.detail


def test_mistral_missing_key_raises_before_any_request(client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    with pytest.raises(MissingKeyError, match="MISTRAL_API_KEY"):
        MistralProvider(client).chat("mistral-small-latest", HELLO, ChatParams())
    assert respx_mock.calls.call_count == 0


def test_mistral_connection_refused_is_unavailable(provider: MistralProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ProviderUnavailableError):
        provider.chat("mistral-small-latest", HELLO, ChatParams())


def test_mistral_stream_read_timeout_is_provider_timeout(
    provider: MistralProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ProviderTimeoutError):
        list(provider.stream_chat("mistral-small-latest", HELLO, ChatParams()))
