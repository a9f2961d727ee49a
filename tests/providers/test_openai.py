"""OpenAI Chat Completions over the wire (respx): request shape, parsing, streaming, key tests, failures."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    AuthenticationError,
    BadResponseError,
    ContentFilteredError,
    ContextLengthError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from orchestrator_core.providers.openai import OpenAIProvider
from orchestrator_core.types import ChatParams, ChatResult, KeyCheck, Message, TextDelta, Usage
from tests.helpers import sse_response as sse

BASE = "https://api.openai.com/v1"
CHAT = f"{BASE}/chat/completions"
KEY = "sk-test-123456"
HELLO: list[Message] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4.1-mini-2025-04-14",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def provider(client: httpx.Client) -> OpenAIProvider:
    return OpenAIProvider(client, api_key=KEY)



def chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {"object": "chat.completion.chunk", "model": "gpt-4.1-mini-2025-04-14",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}


USAGE_CHUNK = {"object": "chat.completion.chunk", "model": "gpt-4.1-mini-2025-04-14", "choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}


# -- request --------------------------------------------------------------------------------------
def test_openai_chat_posts_bearer_and_max_completion_tokens(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHAT).respond(json=COMPLETION)
    provider.chat("gpt-4.1-mini", HELLO, ChatParams(max_tokens=256, temperature=0.7, top_p=0.9, stop=("END",)))
    request = route.calls.last.request
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body == {
        "model": "gpt-4.1-mini", "messages": HELLO, "stream": False, "max_completion_tokens": 256,
        "temperature": 0.7, "top_p": 0.9, "stop": ["END"],
    }


def test_openai_chat_omits_unset_sampling_params(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(CHAT).respond(json=COMPLETION)
    provider.chat("gpt-5", HELLO, ChatParams())
    body = json.loads(route.calls.last.request.content)
    # GPT-5 rejects a non-default temperature: nothing is sent unless the caller asks.
    assert not {"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens"} & body.keys()


# -- response -------------------------------------------------------------------------------------
def test_openai_chat_parses_text_finish_usage_and_answering_model(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(json=COMPLETION)
    result = provider.chat("gpt-4.1-mini", HELLO, ChatParams())
    assert result == ChatResult("Hello", "stop", Usage(12, 3), "gpt-4.1-mini-2025-04-14", "openai")
    assert result.usage.total_tokens == 15


def test_openai_chat_null_content_is_empty_text(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    body = {**COMPLETION, "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                       "finish_reason": "length"}]}
    respx_mock.post(CHAT).respond(json=body)
    result = provider.chat("gpt-4.1-mini", HELLO, ChatParams())
    assert (result.text, result.finish_reason) == ("", "length")


def test_openai_chat_empty_choices_is_bad_response(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).respond(json={**COMPLETION, "choices": []})
    with pytest.raises(BadResponseError, match="no choices"):
        provider.chat("gpt-4.1-mini", HELLO, ChatParams())


def test_openai_chat_non_json_200_is_bad_response(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).respond(200, text="<html>captive portal</html>", headers={"content-type": "text/html"})
    with pytest.raises(BadResponseError, match="not JSON"):
        provider.chat("gpt-4.1-mini", HELLO, ChatParams())


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5.1", "o1", "o3-mini", "o4-mini"])
def test_openai_reasoning_families_never_get_temperature_or_top_p(
    provider: OpenAIProvider, respx_mock: respx.MockRouter, model: str
) -> None:
    # They answer a non-default temperature with a 400: a fallback hop must not turn a good request into one.
    route = respx_mock.post(CHAT).respond(json=COMPLETION)
    provider.chat(model, HELLO, ChatParams(max_tokens=64, temperature=0.2, top_p=0.5, stop=("END",)))
    body = json.loads(route.calls.last.request.content)
    assert not {"temperature", "top_p"} & body.keys()
    assert (body["max_completion_tokens"], body["stop"]) == (64, ["END"])


# -- refusals and safety stops --------------------------------------------------------------------
SORRY = "I'm sorry, but I can't help with that."


def answer_with(message: dict[str, object], finish: str) -> dict[str, object]:
    return {**COMPLETION, "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                       "finish_reason": finish}]}


def test_openai_refusal_with_null_content_is_content_filtered_with_the_refusal_text(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(json=answer_with({"content": None, "refusal": SORRY}, "stop"))
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("gpt-4o", HELLO, ChatParams())
    err = info.value
    assert (err.kind, err.reason, err.refusal, err.partial_text) == ("content_filter", "refusal", SORRY, "")
    assert err.message.startswith(f'openai:gpt-4o refused to answer: "{SORRY}" (message.refusal).')
    assert (err.provider, err.model) == ("openai", "gpt-4o")


@pytest.mark.parametrize(("content", "cut"), [(None, ""), ("Step one is", " after 11 characters")])
def test_openai_finish_reason_content_filter_is_content_filtered_keeping_any_text(
    provider: OpenAIProvider, respx_mock: respx.MockRouter, content: str | None, cut: str
) -> None:
    respx_mock.post(CHAT).respond(json=answer_with({"content": content}, "content_filter"))
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("gpt-4o", HELLO, ChatParams())
    assert info.value.reason == "content_filter" and info.value.partial_text == (content or "")
    assert f"stopped the answer at its content filter{cut} (finish_reason content_filter)" in info.value.message


def test_openai_stream_refusal_deltas_are_content_filtered_and_never_yielded_as_text(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    def refusal(piece: str, finish: str | None = None) -> dict[str, object]:
        return {"object": "chat.completion.chunk", "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": None, "refusal": piece}, "finish_reason": finish}]}

    respx_mock.post(CHAT).mock(return_value=sse(refusal(""), refusal("I'm sorry, but "),
                                                refusal("I can't help with that."), chunk(finish="stop"), "[DONE]"))
    events: list[object] = []
    with pytest.raises(ContentFilteredError) as info:
        events.extend(provider.stream_chat("gpt-4o", HELLO, ChatParams()))
    assert events == []  # the refusal is not answer text
    assert info.value.refusal == SORRY and info.value.partial_text == ""
    assert f'refused to answer: "{SORRY}" (delta.refusal)' in info.value.message


def test_openai_stream_cut_by_content_filter_yields_its_text_then_says_it_was_cut(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Once"), chunk(" upon"), chunk(finish="content_filter"),
                                                USAGE_CHUNK, "[DONE]"))
    events: list[object] = []
    with pytest.raises(ContentFilteredError) as info:
        events.extend(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))
    assert events == [TextDelta("Once"), TextDelta(" upon")]
    assert info.value.partial_text == "Once upon" and "after 9 characters" in info.value.message


# -- streaming ------------------------------------------------------------------------------------
def test_openai_stream_yields_deltas_then_result_with_usage(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHAT).mock(return_value=sse(
        chunk(""), chunk("Hel"), chunk("lo"), chunk(finish="stop"), USAGE_CHUNK, "[DONE]"))
    events = list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams(max_tokens=50)))
    assert events == [
        TextDelta("Hel"), TextDelta("lo"),
        ChatResult("Hello", "stop", Usage(9, 2), "gpt-4.1-mini-2025-04-14", "openai"),
    ]
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 50
    assert request.headers["accept"] == "text/event-stream"


def test_openai_stream_without_done_marker_is_bad_response(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Hel"), chunk("lo", "stop")))
    stream = provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams())
    assert next(stream) == TextDelta("Hel")
    with pytest.raises(BadResponseError, match=r"\[DONE\]"):
        list(stream)


def test_openai_stream_malformed_event_is_bad_response(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Hi"), '{"choices": [', "[DONE]"))
    with pytest.raises(BadResponseError, match="not valid JSON"):
        list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))


def test_openai_stream_error_payload_is_classified(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    error = {"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}
    respx_mock.post(CHAT).mock(return_value=sse(chunk("Hi"), error))
    with pytest.raises(RateLimitError) as info:
        list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))
    assert info.value.provider == "openai"
    assert info.value.status_code == 429


def test_openai_stream_http_429_before_first_token_carries_retry_after(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(429, headers={"retry-after-ms": "1500"},
                                  json={"error": {"message": "Rate limit reached", "type": "requests"}})
    with pytest.raises(RateLimitError) as info:
        list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))
    assert info.value.retry_after == 1.5


def test_openai_stream_answered_with_json_error_is_classified(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(200, json={"error": {"message": "Incorrect API key provided", "type":
                                                       "invalid_request_error", "code": "invalid_api_key"}})
    with pytest.raises(AuthenticationError):
        list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))


def test_openai_stream_answered_with_html_is_bad_response(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(CHAT).respond(200, text="<html>hi</html>", headers={"content-type": "text/html"})
    with pytest.raises(BadResponseError, match="text/html"):
        list(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))


# -- models and keys ------------------------------------------------------------------------------
MODELS = {"object": "list", "data": [{"id": "gpt-4.1-mini", "object": "model", "created": 1, "owned_by": "system"},
                                     {"id": "gpt-5", "object": "model", "created": 2, "owned_by": "system"}]}


def test_openai_list_models_returns_ids(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/models").respond(json=MODELS)
    assert provider.list_models() == ["gpt-4.1-mini", "gpt-5"]
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"


def test_openai_test_key_ok_on_200(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/models").respond(json=MODELS)
    result = provider.test_key()
    assert result.status is KeyCheck.OK
    assert "2 models" in result.detail


def test_openai_test_key_rejected_on_401_without_leaking_the_key(
    provider: OpenAIProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/models").respond(401, json={"error": {
        "message": f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
    result = provider.test_key()
    assert result.status is KeyCheck.REJECTED
    assert KEY not in result.detail
    assert "3456" in result.detail  # the masked form keeps the last 4 characters


@pytest.mark.parametrize("failure", [
    httpx.Response(500, json={"error": {"message": "The server had an error while processing your request"}}),
    httpx.ConnectError("[Errno 111] Connection refused"),
])
def test_openai_test_key_unverified_on_server_or_connection_failure(
    provider: OpenAIProvider, respx_mock: respx.MockRouter, failure: object
) -> None:
    route = respx_mock.get(f"{BASE}/models")
    if isinstance(failure, httpx.Response):
        route.mock(return_value=failure)
    else:
        route.mock(side_effect=failure)
    assert provider.test_key().status is KeyCheck.UNVERIFIED


def test_openai_missing_key_raises_before_any_request(client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    provider = OpenAIProvider(client, api_key=None)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        provider.chat("gpt-4.1-mini", HELLO, ChatParams())
    with pytest.raises(MissingKeyError):
        next(provider.stream_chat("gpt-4.1-mini", HELLO, ChatParams()))
    assert provider.test_key().status is KeyCheck.UNVERIFIED
    assert respx_mock.calls.call_count == 0


# -- failures -------------------------------------------------------------------------------------
def test_openai_connection_refused_is_unavailable(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ProviderUnavailableError, match="connection refused"):
        provider.chat("gpt-4.1-mini", HELLO, ChatParams())


def test_openai_read_timeout_is_provider_timeout(provider: OpenAIProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHAT).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ProviderTimeoutError) as info:
        provider.chat("gpt-4.1-mini", HELLO, ChatParams())
    assert info.value.model == "gpt-4.1-mini"


@pytest.mark.parametrize(("status", "error", "expected"), [
    (404, {"message": "The model `gpt-9` does not exist or you do not have access to it.",
           "type": "invalid_request_error", "param": None, "code": "model_not_found"}, ModelNotFoundError),
    (429, {"message": "You exceeded your current quota, please check your plan and billing details.",
           "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}, QuotaExceededError),
    (400, {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                      "8227 tokens.", "type": "invalid_request_error", "param": "messages",
           "code": "context_length_exceeded"}, ContextLengthError),
])
def test_openai_http_errors_map_to_classes(
    provider: OpenAIProvider, respx_mock: respx.MockRouter, status: int, error: dict[str, object], expected: type
) -> None:
    respx_mock.post(CHAT).respond(status, json={"error": error})
    with pytest.raises(expected) as info:
        provider.chat("gpt-9", HELLO, ChatParams())
    assert info.value.status_code == status


def test_openai_test_key_403_on_models_is_could_not_verify_not_rejected() -> None:
    base = "https://api.openai.com/v1"
    with respx.mock(base_url=base) as wire, httpx.Client(base_url=base) as c:
        wire.get("/models").respond(403, json={"error": {"message": "You have insufficient permissions for this "
                                                          "operation. Missing scopes: api.model.read."}})
        result = OpenAIProvider(c, api_key="sk-proj-restricted-123456").test_key()
    assert result.status is KeyCheck.UNVERIFIED
    assert "not allowed to list models" in result.detail
