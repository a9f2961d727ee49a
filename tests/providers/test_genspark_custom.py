"""Genspark (unofficial proxy) and custom OpenAI-compatible endpoints over the wire (respx)."""

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
from orchestrator_core.providers.custom import CustomProvider
from orchestrator_core.providers.genspark import GensparkProvider
from orchestrator_core.types import ChatParams, ChatResult, KeyCheck, Message, TextDelta, Usage
from tests.helpers import sse_response as sse

GENSPARK = "https://www.genspark.ai/api/llm_proxy/v1"
CUSTOM = "http://127.0.0.1:8000/v1"
GSK = "gsk-test-abcdef123456"
HELLO: list[Message] = [{"role": "user", "content": "Hi"}]

COMPLETION = {
    "id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-5-mini-2025-08-07",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hey"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


@pytest.fixture
def genspark_client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=GENSPARK, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def custom_client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=CUSTOM, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def genspark(genspark_client: httpx.Client) -> GensparkProvider:
    return GensparkProvider(genspark_client, api_key=GSK)



def chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    return {"object": "chat.completion.chunk", "model": "qwen2.5-7b",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


# -- Genspark ------------------------------------------------------------------------------------
def test_genspark_chat_posts_to_proxy_path_with_bearer(
    genspark: GensparkProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{GENSPARK}/chat/completions").respond(json=COMPLETION)
    result = genspark.chat("gpt-5-mini", HELLO, ChatParams(max_tokens=64))
    request = route.calls.last.request
    assert request.url.path == "/api/llm_proxy/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {GSK}"
    assert json.loads(request.content) == {"model": "gpt-5-mini", "messages": HELLO, "stream": False, "max_tokens": 64}
    assert result == ChatResult("Hey", "stop", Usage(5, 1), "gpt-5-mini-2025-08-07", "genspark")


def test_genspark_missing_key_names_its_variable(genspark_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    with pytest.raises(MissingKeyError, match="GENSPARK_API_KEY"):
        GensparkProvider(genspark_client).list_models()
    assert respx_mock.calls.call_count == 0


def test_genspark_stream_sends_include_usage(genspark: GensparkProvider, respx_mock: respx.MockRouter) -> None:
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    route = respx_mock.post(f"{GENSPARK}/chat/completions").mock(
        return_value=sse(chunk("He"), chunk("y", "stop"), usage, "[DONE]"))
    events = list(genspark.stream_chat("gpt-5-mini", HELLO, ChatParams()))
    assert events[-1] == ChatResult("Hey", "stop", Usage(5, 2), "qwen2.5-7b", "genspark")
    assert json.loads(route.calls.last.request.content)["stream_options"] == {"include_usage": True}


def test_genspark_test_key_rejected_on_401(genspark: GensparkProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{GENSPARK}/models").respond(401, json={"error": {"message": "Invalid token"}})
    assert genspark.test_key().status is KeyCheck.REJECTED


def test_genspark_html_error_page_is_unavailable_without_the_html(
    genspark: GensparkProvider, respx_mock: respx.MockRouter
) -> None:
    page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
    respx_mock.post(f"{GENSPARK}/chat/completions").respond(502, text=page, headers={"content-type": "text/html"})
    with pytest.raises(ProviderUnavailableError) as info:
        genspark.chat("gpt-5-mini", HELLO, ChatParams())
    assert "HTML error page: 502 Bad Gateway" in info.value.message
    assert "<body>" not in info.value.message


# -- custom --------------------------------------------------------------------------------------
def test_custom_without_key_sends_no_authorization(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{CUSTOM}/chat/completions").respond(json=COMPLETION)
    CustomProvider(custom_client).chat("qwen2.5-7b", HELLO, ChatParams())
    assert "authorization" not in route.calls.last.request.headers


def test_custom_with_key_sends_bearer(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{CUSTOM}/models").respond(json={"object": "list", "data": [{"id": "qwen2.5-7b"}]})
    assert CustomProvider(custom_client, api_key="local-secret").list_models() == ["qwen2.5-7b"]
    assert route.calls.last.request.headers["authorization"] == "Bearer local-secret"


def test_custom_stream_yields_deltas_then_result(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{CUSTOM}/chat/completions").mock(
        return_value=sse(chunk("A"), chunk("B", "length"), "[DONE]"))
    events = list(CustomProvider(custom_client).stream_chat("qwen2.5-7b", HELLO, ChatParams(max_tokens=2)))
    assert events == [TextDelta("A"), TextDelta("B"), ChatResult("AB", "length", Usage(), "qwen2.5-7b", "custom")]
    body = json.loads(route.calls.last.request.content)
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 2


def test_custom_stream_refusal_is_content_filtered(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    refusal = {"object": "chat.completion.chunk", "model": "qwen2.5-7b",
               "choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": "stop"}]}
    respx_mock.post(f"{CUSTOM}/chat/completions").mock(return_value=sse(refusal, "[DONE]"))
    with pytest.raises(ContentFilteredError, match='custom:qwen2.5-7b refused to answer: "No."') as info:
        list(CustomProvider(custom_client).stream_chat("qwen2.5-7b", HELLO, ChatParams()))
    assert info.value.kind == "content_filter"


def test_custom_stream_without_done_marker_is_bad_response(
    custom_client: httpx.Client, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").mock(return_value=sse(chunk("A", "stop")))
    with pytest.raises(BadResponseError, match="DONE"):
        list(CustomProvider(custom_client).stream_chat("qwen2.5-7b", HELLO, ChatParams()))


def test_custom_stream_malformed_event_is_bad_response(
    custom_client: httpx.Client, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").mock(return_value=sse("{oops", "[DONE]"))
    with pytest.raises(BadResponseError):
        list(CustomProvider(custom_client).stream_chat("qwen2.5-7b", HELLO, ChatParams()))


def test_custom_stream_error_with_numeric_code_is_classified(
    custom_client: httpx.Client, respx_mock: respx.MockRouter
) -> None:
    # llama-server style: the HTTP status of the failure is in error.code
    error = {"error": {"code": 404, "message": "model 'nope' not found", "type": "not_found_error"}}
    respx_mock.post(f"{CUSTOM}/chat/completions").mock(return_value=sse(error))
    with pytest.raises(ModelNotFoundError):
        list(CustomProvider(custom_client).stream_chat("nope", HELLO, ChatParams()))


def test_custom_error_inside_200_body_is_classified(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").respond(
        200, json={"error": {"message": "Too many requests", "type": "rate_limit_error"}})
    with pytest.raises(RateLimitError):
        CustomProvider(custom_client).chat("qwen2.5-7b", HELLO, ChatParams())


def test_custom_empty_choices_is_bad_response(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").respond(json={"id": "x", "choices": []})
    with pytest.raises(BadResponseError):
        CustomProvider(custom_client).chat("qwen2.5-7b", HELLO, ChatParams())


def test_custom_non_json_200_is_bad_response(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").respond(200, text="It works!")
    with pytest.raises(BadResponseError, match="wrong service"):
        CustomProvider(custom_client).chat("qwen2.5-7b", HELLO, ChatParams())


def test_custom_model_list_without_data_is_bad_response(
    custom_client: httpx.Client, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{CUSTOM}/models").respond(json={"models": []})
    with pytest.raises(BadResponseError, match="'data'"):
        CustomProvider(custom_client).list_models()


@pytest.mark.parametrize(("failure", "expected"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailableError),
    (httpx.ConnectTimeout("timed out"), ProviderTimeoutError),
    (httpx.ReadTimeout("timed out"), ProviderTimeoutError),
])
def test_custom_transport_failures_are_classified(
    custom_client: httpx.Client, respx_mock: respx.MockRouter, failure: Exception, expected: type
) -> None:
    respx_mock.post(f"{CUSTOM}/chat/completions").mock(side_effect=failure)
    with pytest.raises(expected, match="custom") as info:
        CustomProvider(custom_client).chat("qwen2.5-7b", HELLO, ChatParams())
    assert info.value.provider == "custom"


def test_custom_test_key_outcomes(custom_client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{CUSTOM}/models")
    route.side_effect = [
        httpx.Response(200, json={"object": "list", "data": [{"id": "a"}]}),
        httpx.Response(401, json={"error": {"message": "bad key"}}),
        httpx.Response(500, json={"error": {"message": "boom"}}),
        httpx.ConnectError("refused"),
    ]
    provider = CustomProvider(custom_client, api_key="local-secret")
    outcomes = [provider.test_key().status for _ in range(4)]
    assert outcomes == [KeyCheck.OK, KeyCheck.REJECTED, KeyCheck.UNVERIFIED, KeyCheck.UNVERIFIED]
