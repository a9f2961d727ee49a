"""Anthropic Messages API over the wire (respx): headers, system/turn mapping, named SSE events, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContentFilteredError,
    ContextLengthError,
    EmptyPromptError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from orchestrator_core.providers.anthropic import AnthropicProvider
from orchestrator_core.types import ChatParams, ChatResult, KeyCheck, Message, TextDelta, Usage

BASE = "https://api.anthropic.com"
MESSAGES = f"{BASE}/v1/messages"
MODELS = f"{BASE}/v1/models"
KEY = "sk-ant-test-0123456789"
HELLO: list[Message] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]

ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "thinking", "thinking": "...", "signature": "s"}, {"type": "text", "text": "Hel"},
                {"type": "tool_use", "id": "t", "name": "x", "input": {}}, {"type": "text", "text": "lo"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def provider(client: httpx.Client) -> AnthropicProvider:
    return AnthropicProvider(client, api_key=KEY)


def sse(*events: tuple[str, object]) -> httpx.Response:
    """A named-event stream: (event name, payload dict or raw data string)."""
    text = "".join(f"event: {name}\ndata: {p if isinstance(p, str) else json.dumps(p)}\n\n" for name, p in events)
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream; charset=utf-8"})


def delta(text: str) -> tuple[str, object]:
    return "content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": text}}


START = ("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929",
    "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1}}})
BLOCK_START = ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})
PING = ("ping", {"type": "ping"})
MESSAGE_DELTA = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                      "stop_sequence": None},
                                   "usage": {"output_tokens": 15}})
STOP = ("message_stop", {"type": "message_stop"})


# -- request --------------------------------------------------------------------------------------
def test_anthropic_chat_sends_key_version_and_top_level_system(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    provider.chat("claude-sonnet-4-5", HELLO, ChatParams(max_tokens=256))
    request = route.calls.last.request
    assert request.url.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2026-10-21"  # what the current SDK sends
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "model": "claude-sonnet-4-5", "max_tokens": 256, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_anthropic_chat_uses_default_max_tokens_and_configured_version(
    client: httpx.Client, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    provider = AnthropicProvider(client, api_key=KEY, anthropic_version="2023-06-01", default_max_tokens=333,
                                 api_version="v1", load_timeout_s=5.0)  # the factory passes every option
    provider.chat("claude-sonnet-5", HELLO, ChatParams())
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body["max_tokens"] == 333
    assert not {"temperature", "top_p", "stop_sequences", "stream"} & body.keys()
    assert request.headers["anthropic-version"] == "2023-06-01"  # ANTHROPIC_VERSION pins an older one


def test_anthropic_chat_sends_sampling_params_only_when_given(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    provider.chat("claude-haiku-4-5", HELLO, ChatParams(temperature=0.2, top_p=0.9, stop=("###",)))
    body = json.loads(route.calls.last.request.content)
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.2, 0.9, ["###"])


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-opus-4-8-20261001", "claude-opus-5", "claude-fable-5",
                                   "claude-fable-5-1", "claude-sonnet-5", "claude-mythos-5"])
def test_anthropic_families_without_sampling_never_get_temperature_or_top_p(
    provider: AnthropicProvider, respx_mock: respx.MockRouter, model: str
) -> None:
    # These answer temperature / top_p with a 400: a fallback hop must not turn a good request into one.
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    provider.chat(model, HELLO, ChatParams(temperature=0.2, top_p=0.9, stop=("###",)))
    body = json.loads(route.calls.last.request.content)
    assert not {"temperature", "top_p", "top_k"} & body.keys()
    assert body["stop_sequences"] == ["###"]


def test_anthropic_merges_systems_and_consecutive_turns(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    messages: list[Message] = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "One"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Un"},
        {"role": "assistant", "content": "Deux"},
        {"role": "user", "content": "   "},
        {"role": "user", "content": "Three"},
    ]
    provider.chat("claude-haiku-4-5", messages, ChatParams())
    body = json.loads(route.calls.last.request.content)
    assert body["system"] == "Be terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "One\n\nTwo"},
        {"role": "assistant", "content": "Un\n\nDeux"},
        {"role": "user", "content": "Three"},
    ]


def test_anthropic_drops_a_leading_assistant_turn_and_trims_a_prefill(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(MESSAGES).respond(json=ANSWER)
    messages: list[Message] = [
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "List three colours."},
        {"role": "assistant", "content": "1. "},
    ]
    provider.chat("claude-haiku-4-5", messages, ChatParams())
    assert json.loads(route.calls.last.request.content)["messages"] == [
        {"role": "user", "content": "List three colours."},
        {"role": "assistant", "content": "1."},
    ]


def test_anthropic_conversation_without_user_turn_is_rejected_locally(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    with pytest.raises(EmptyPromptError, match="user message"):
        provider.chat("claude-haiku-4-5", [{"role": "assistant", "content": "Hi"}], ChatParams())
    assert respx_mock.calls.call_count == 0


# -- response -------------------------------------------------------------------------------------
def test_anthropic_chat_keeps_only_text_blocks_and_reads_usage(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(MESSAGES).respond(json=ANSWER)
    result = provider.chat("claude-sonnet-4-5", HELLO, ChatParams())
    assert result == ChatResult("Hello", "end_turn", Usage(11, 6, 0), "claude-sonnet-4-5-20250929", "anthropic")


def test_anthropic_prompt_tokens_include_cached_tokens(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    usage = {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50}
    respx_mock.post(MESSAGES).respond(json={**ANSWER, "usage": usage})
    assert provider.chat("claude-sonnet-4-5", HELLO, ChatParams()).usage == Usage(153, 2, 50)


def test_anthropic_chat_without_content_is_bad_response(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(MESSAGES).respond(json={"id": "msg_1", "type": "message"})
    with pytest.raises(BadResponseError, match="content"):
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())


def test_anthropic_chat_non_json_200_is_bad_response(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).respond(200, text="<html></html>")
    with pytest.raises(BadResponseError):
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "words"), [
    ([], "anthropic:claude-sonnet-4-5 refused to answer (stop_reason refusal)."),
    ([{"type": "text", "text": "Here is the first"}], "anthropic:claude-sonnet-4-5 declined to go on after 17 characters"),
])
def test_anthropic_stop_reason_refusal_is_content_filtered(
    provider: AnthropicProvider, respx_mock: respx.MockRouter, content: list[object], words: str
) -> None:
    respx_mock.post(MESSAGES).respond(json={**ANSWER, "content": content, "stop_reason": "refusal"})
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())
    err = info.value
    assert (err.kind, err.reason, err.provider) == ("content_filter", "refusal", "anthropic")
    assert err.message.startswith(words) and "(stop_reason refusal)" in err.message
    assert err.partial_text == "".join(str(block["text"]) for block in content)  # type: ignore[index]


def test_anthropic_stream_stopped_by_refusal_yields_its_text_then_says_it_was_cut(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    refusal = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None},
                                 "usage": {"output_tokens": 4}})
    respx_mock.post(MESSAGES).mock(return_value=sse(START, BLOCK_START, delta("Sure, the"), refusal, STOP))
    events: list[object] = []
    with pytest.raises(ContentFilteredError) as info:
        events.extend(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))
    assert events == [TextDelta("Sure, the")]
    assert info.value.partial_text == "Sure, the" and "stop_reason refusal" in info.value.message


# -- streaming ------------------------------------------------------------------------------------
def test_anthropic_stream_yields_deltas_then_usage(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(MESSAGES).mock(return_value=sse(
        START, BLOCK_START, PING, delta("Hel"),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "hidden"}}),
        delta("lo"), ("content_block_stop", {"type": "content_block_stop", "index": 0}), MESSAGE_DELTA, STOP))
    events = list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams(max_tokens=64)))
    assert events == [
        TextDelta("Hel"), TextDelta("lo"),
        ChatResult("Hello", "end_turn", Usage(25, 15), "claude-sonnet-4-5-20250929", "anthropic"),
    ]
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body["stream"] is True
    assert body["max_tokens"] == 64
    assert request.headers["accept"] == "text/event-stream"


def test_anthropic_stream_without_message_stop_is_bad_response(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(MESSAGES).mock(return_value=sse(START, delta("Hel"), MESSAGE_DELTA))
    stream = provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams())
    assert next(stream) == TextDelta("Hel")
    with pytest.raises(BadResponseError, match="message_stop"):
        list(stream)


def test_anthropic_stream_malformed_event_is_bad_response(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(MESSAGES).mock(return_value=sse(START, ("content_block_delta", "{not json"), STOP))
    with pytest.raises(BadResponseError, match="not valid JSON"):
        list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))


@pytest.mark.parametrize(("error_type", "expected"), [
    ("overloaded_error", ProviderUnavailableError),
    ("rate_limit_error", RateLimitError),
    ("api_error", ProviderUnavailableError),
    ("authentication_error", AuthenticationError),
    ("billing_error", QuotaExceededError),
    ("not_found_error", ModelNotFoundError),
    ("timeout_error", ProviderTimeoutError),
    ("invalid_request_error", BadRequestError),
])
def test_anthropic_stream_error_event_is_classified_by_type(
    provider: AnthropicProvider, respx_mock: respx.MockRouter, error_type: str, expected: type
) -> None:
    error = ("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    respx_mock.post(MESSAGES).mock(return_value=sse(START, delta("Hel"), error))
    with pytest.raises(expected) as info:
        list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))
    assert info.value.provider == "anthropic"


def test_anthropic_stream_overloaded_event_stands_for_529(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    respx_mock.post(MESSAGES).mock(return_value=sse(START, error))
    with pytest.raises(ProviderUnavailableError, match="HTTP 529: Overloaded") as info:
        list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))
    assert info.value.status_code == 529


def test_anthropic_stream_http_529_is_unavailable(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).respond(529, json={"type": "error", "error": {"type": "overloaded_error",
                                                                             "message": "Overloaded"}})
    with pytest.raises(ProviderUnavailableError):
        list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))


# -- errors over HTTP -----------------------------------------------------------------------------
def test_anthropic_429_carries_retry_after(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).respond(429, headers={"retry-after": "12"}, json={
        "type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded "
                                   "your per-minute rate limit"}, "request_id": "req_1"})
    with pytest.raises(RateLimitError) as info:
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())
    assert info.value.retry_after == 12.0


def test_anthropic_prompt_too_long_is_context_length(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).respond(400, json={"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 208656 tokens > 200000 maximum"}})
    with pytest.raises(ContextLengthError, match="208656"):
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())


def test_anthropic_unknown_model_is_model_not_found(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).respond(404, json={"type": "error", "error": {
        "type": "not_found_error", "message": "model: claude-3-5-sonnet-20241022"}})
    with pytest.raises(ModelNotFoundError):
        provider.chat("claude-3-5-sonnet-20241022", HELLO, ChatParams())


def test_anthropic_connection_refused_is_unavailable(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ProviderUnavailableError):
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())


def test_anthropic_timeout_is_provider_timeout(provider: AnthropicProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(MESSAGES).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ProviderTimeoutError):
        list(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))


# -- models and keys ------------------------------------------------------------------------------
def test_anthropic_list_models_asks_for_1000_and_returns_ids(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(MODELS).respond(json={"data": [
        {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"},
        {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5"}],
        "has_more": False, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"})
    assert provider.list_models() == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    request = route.calls.last.request
    assert request.url.params["limit"] == "1000"
    assert request.headers["x-api-key"] == KEY


@pytest.mark.parametrize(("answer", "expected"), [
    (httpx.Response(200, json={"data": [], "has_more": False}), KeyCheck.OK),
    (httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error",
                                                          "message": "invalid x-api-key"}}), KeyCheck.REJECTED),
    (httpx.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "Internal"}}),
     KeyCheck.UNVERIFIED),
])
def test_anthropic_test_key_outcomes(
    provider: AnthropicProvider, respx_mock: respx.MockRouter, answer: httpx.Response, expected: KeyCheck
) -> None:
    respx_mock.get(MODELS).mock(return_value=answer)
    assert provider.test_key().status is expected


def test_anthropic_test_key_unverified_when_unreachable(
    provider: AnthropicProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(MODELS).mock(side_effect=httpx.ConnectError("refused"))
    assert provider.test_key().status is KeyCheck.UNVERIFIED


def test_anthropic_missing_key_raises_before_any_request(client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    provider = AnthropicProvider(client)
    with pytest.raises(MissingKeyError, match="ANTHROPIC_API_KEY"):
        provider.chat("claude-sonnet-4-5", HELLO, ChatParams())
    with pytest.raises(MissingKeyError):
        next(provider.stream_chat("claude-sonnet-4-5", HELLO, ChatParams()))
    assert respx_mock.calls.call_count == 0
