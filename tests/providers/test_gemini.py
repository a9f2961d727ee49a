"""Gemini Developer API over the wire (respx): header auth, user/model roles, streams without end marker."""

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
    RateLimitError,
)
from orchestrator_core.providers.gemini import GeminiProvider
from orchestrator_core.types import ChatParams, ChatResult, KeyCheck, Message, TextDelta, Usage
from tests.helpers import sse_response

BASE = "https://generativelanguage.googleapis.com"
GENERATE = f"{BASE}/v1/models/gemini-2.5-flash:generateContent"  # v1 is the default, as in google-genai 3.x
STREAM = f"{BASE}/v1/models/gemini-2.5-flash:streamGenerateContent"
MODELS = f"{BASE}/v1/models"
KEY = "AIzaSyTest0123456789abcdef"
HELLO: list[Message] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]

ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Let me think", "thought": True},
                                                          {"text": "Hel"}, {"text": "lo"}]},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7},
    "modelVersion": "gemini-2.5-flash-001", "responseId": "r1",
}
BAD_KEY = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                     "status": "INVALID_ARGUMENT",
                     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                  "domain": "googleapis.com"}]}}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0)) as c:
        yield c


@pytest.fixture
def provider(client: httpx.Client) -> GeminiProvider:
    return GeminiProvider(client, api_key=KEY)


def sse(*payloads: object) -> httpx.Response:
    return sse_response(*payloads, newline="\r\n")  # Gemini's SSE uses CRLF line ends


def piece(text: str, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, object] = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash-001"}
    if usage:
        chunk["usageMetadata"] = usage
    return chunk


# -- request --------------------------------------------------------------------------------------
def test_gemini_chat_sends_key_header_roles_and_generation_config(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(GENERATE).respond(json=ANSWER)
    messages: list[Message] = [*HELLO, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    provider.chat("gemini-2.5-flash", messages, ChatParams(max_tokens=256, temperature=0.7, top_p=0.5, stop=("X",)))
    request = route.calls.last.request
    assert request.url.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    assert "key" not in request.url.params  # a key in the URL would end up in logs
    assert json.loads(request.content) == {
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]},
                     {"role": "user", "parts": [{"text": "Bye"}]}],
        "generationConfig": {"temperature": 0.7, "maxOutputTokens": 256, "topP": 0.5, "stopSequences": ["X"]},
    }


def test_gemini_chat_omits_empty_generation_config_and_merges_turns(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(GENERATE).respond(json=ANSWER)
    two_user_turns: list[Message] = [{"role": "user", "content": "A"}, {"role": "user", "content": "B"}]
    provider.chat("gemini-2.5-flash", two_user_turns, ChatParams())
    assert json.loads(route.calls.last.request.content) == {
        "contents": [{"role": "user", "parts": [{"text": "A"}, {"text": "B"}]}]}


def test_gemini_api_version_v1beta_stays_selectable(client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/v1beta/models/gemini-2.5-flash:generateContent").respond(json=ANSWER)
    models = respx_mock.get(f"{BASE}/v1beta/models").respond(json={"models": []})
    provider = GeminiProvider(client, api_key=KEY, api_version="v1beta")
    provider.chat("models/gemini-2.5-flash", HELLO, ChatParams())
    provider.list_models()
    assert route.called and models.called


# -- response -------------------------------------------------------------------------------------
def test_gemini_chat_skips_thought_parts_and_reads_usage_and_model_version(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(GENERATE).respond(json=ANSWER)
    result = provider.chat("gemini-2.5-flash", HELLO, ChatParams())
    assert result == ChatResult("Hello", "STOP", Usage(5, 2), "gemini-2.5-flash-001", "google")


def test_gemini_chat_falls_back_to_requested_model_name(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(GENERATE).respond(json={k: v for k, v in ANSWER.items() if k != "modelVersion"})
    assert provider.chat("gemini-2.5-flash", HELLO, ChatParams()).model == "gemini-2.5-flash"


def test_gemini_empty_text_with_max_tokens_is_a_truncated_result(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    # Thinking used the whole budget: no text part at all.
    answer = {"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}],
              "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 36, "thoughtsTokenCount": 31}}
    respx_mock.post(GENERATE).respond(json=answer)
    result = provider.chat("gemini-2.5-flash", HELLO, ChatParams(max_tokens=32))
    assert (result.text, result.finish_reason) == ("", "MAX_TOKENS")
    assert result.usage == Usage(5, 31)  # thinking tokens are billed as output


# -- safety blocks --------------------------------------------------------------------------------
def test_gemini_blocked_prompt_is_content_filtered_naming_the_block_reason(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(GENERATE).respond(json={"promptFeedback": {
        "blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "The prompt contains prohibited content."},
        "usageMetadata": {"promptTokenCount": 9}})
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())
    err = info.value
    assert (err.kind, err.reason, err.provider, err.model) == (
        "content_filter", "PROHIBITED_CONTENT", "google", "gemini-2.5-flash")
    assert err.message.startswith("google:gemini-2.5-flash blocked the prompt (promptFeedback.blockReason "
                                  "PROHIBITED_CONTENT; The prompt contains prohibited content.).")


BLOCKED_RATINGS = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                   {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"])
def test_gemini_safety_finish_without_text_is_content_filtered(
    provider: GeminiProvider, respx_mock: respx.MockRouter, reason: str
) -> None:
    respx_mock.post(GENERATE).respond(json={"candidates": [{"finishReason": reason, "index": 0}],
                                            "usageMetadata": {"promptTokenCount": 5}})
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())
    assert info.value.reason == reason and info.value.partial_text == ""
    assert f"(finishReason {reason})" in info.value.message


def test_gemini_safety_finish_after_partial_text_keeps_it_and_names_the_category(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(GENERATE).respond(json={"candidates": [{
        "content": {"role": "model", "parts": [{"text": "First, take the"}]}, "finishReason": "SAFETY", "index": 0,
        "safetyRatings": BLOCKED_RATINGS}]})
    with pytest.raises(ContentFilteredError) as info:
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())
    assert info.value.partial_text == "First, take the"
    assert info.value.message.startswith("google:gemini-2.5-flash blocked the answer for safety after 15 characters "
                                         "(finishReason SAFETY; HARM_CATEGORY_DANGEROUS_CONTENT).")


def test_gemini_no_candidates_is_bad_response(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(GENERATE).respond(json={"candidates": [], "usageMetadata": {}})
    with pytest.raises(BadResponseError, match="no candidates"):
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())


def test_gemini_non_json_200_is_bad_response(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(GENERATE).respond(200, text="<html>proxy login</html>")
    with pytest.raises(BadResponseError, match="not JSON"):
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())


# -- streaming ------------------------------------------------------------------------------------
def test_gemini_stream_yields_deltas_then_usage_from_last_chunk(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(STREAM).mock(return_value=sse(
        piece("Hel", usage={"promptTokenCount": 5}), piece("lo"),
        piece("", "STOP", {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})))
    events = list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams(max_tokens=100)))
    assert events == [TextDelta("Hel"), TextDelta("lo"),
                      ChatResult("Hello", "STOP", Usage(5, 2), "gemini-2.5-flash-001", "google")]
    request = route.calls.last.request
    assert request.url.params["alt"] == "sse"
    assert "key" not in request.url.params
    assert request.headers["x-goog-api-key"] == KEY
    assert json.loads(request.content)["generationConfig"] == {"maxOutputTokens": 100}


def test_gemini_stream_without_any_event_is_bad_response(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(STREAM).respond(200, text="", headers={"content-type": "text/event-stream"})
    with pytest.raises(BadResponseError, match="without any event"):
        list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))


def test_gemini_stream_malformed_event_is_bad_response(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(STREAM).mock(return_value=sse(piece("Hi"), '{"candidates": ['))
    with pytest.raises(BadResponseError, match="not valid JSON"):
        list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))


def test_gemini_stream_error_event_is_classified_by_its_code(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                       "status": "UNAVAILABLE"}}
    respx_mock.post(STREAM).mock(return_value=sse(piece("Hi"), error))
    with pytest.raises(ProviderUnavailableError, match="overloaded") as info:
        list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))
    assert info.value.status_code == 503


def test_gemini_stream_bare_json_error_is_classified(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    # Errors can arrive without the "data:" prefix, pretty-printed over several lines.
    body = f"data: {json.dumps(piece('Hi'))}\n\n" + json.dumps(
        {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}, indent=2)
    respx_mock.post(STREAM).respond(200, text=body, headers={"content-type": "text/event-stream"})
    stream = provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams())
    assert next(stream) == TextDelta("Hi")
    with pytest.raises(RateLimitError):
        list(stream)


def test_gemini_stream_blocked_prompt_is_content_filtered_before_any_text(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(STREAM).mock(return_value=sse({"promptFeedback": {"blockReason": "SAFETY",
                                                                      "safetyRatings": BLOCKED_RATINGS}}))
    events: list[object] = []
    with pytest.raises(ContentFilteredError) as info:
        events.extend(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))
    assert events == []
    assert "blocked the prompt (promptFeedback.blockReason SAFETY; HARM_CATEGORY_DANGEROUS_CONTENT)" in (
        info.value.message)


def test_gemini_stream_cut_by_a_safety_stop_yields_its_text_then_says_it_was_cut(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(STREAM).mock(return_value=sse(piece("Once"), piece(" upon", "RECITATION")))
    events: list[object] = []
    with pytest.raises(ContentFilteredError) as info:
        events.extend(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))
    assert events == [TextDelta("Once"), TextDelta(" upon")]
    assert info.value.reason == "RECITATION" and info.value.partial_text == "Once upon"
    assert "after 9 characters (finishReason RECITATION)" in info.value.message


def test_gemini_stream_http_400_bad_key_is_authentication(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(STREAM).respond(400, json=BAD_KEY)
    with pytest.raises(AuthenticationError):
        list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))


# -- errors over HTTP -----------------------------------------------------------------------------
def test_gemini_unknown_model_is_model_not_found(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{BASE}/v1/models/gemini-1.5-flash:generateContent").respond(404, json={"error": {
        "code": 404, "status": "NOT_FOUND", "message": "models/gemini-1.5-flash is not found for API version v1beta, "
        "or is not supported for generateContent. Call ListModels to see the list of available models."}})
    with pytest.raises(ModelNotFoundError):
        provider.chat("gemini-1.5-flash", HELLO, ChatParams())


def test_gemini_too_many_tokens_is_context_length(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(GENERATE).respond(400, json={"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}})
    with pytest.raises(ContextLengthError):
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())


def test_gemini_connection_refused_is_unavailable(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(STREAM).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ProviderUnavailableError):
        list(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))


def test_gemini_timeout_is_provider_timeout(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(GENERATE).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ProviderTimeoutError):
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())


# -- models and keys ------------------------------------------------------------------------------
def model(name: str, *methods: str) -> dict[str, object]:
    return {"name": f"models/{name}", "displayName": name, "supportedGenerationMethods": list(methods)}


def test_gemini_list_models_keeps_generators_and_follows_pages(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(MODELS)
    route.side_effect = [
        httpx.Response(200, json={"models": [model("gemini-2.5-flash", "generateContent", "countTokens"),
                                             model("text-embedding-004", "embedContent")], "nextPageToken": "p2"}),
        httpx.Response(200, json={"models": [model("gemini-2.5-pro", "generateContent")]}),
    ]
    assert provider.list_models() == ["gemini-2.5-flash", "gemini-2.5-pro"]
    first, second = (call.request for call in route.calls)
    assert first.url.params["pageSize"] == "1000"
    assert "pageToken" not in first.url.params
    assert second.url.params["pageToken"] == "p2"
    assert second.headers["x-goog-api-key"] == KEY


def test_gemini_list_models_stops_after_a_few_pages(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(MODELS).respond(json={"models": [model("g", "generateContent")], "nextPageToken": "again"})
    assert len(provider.list_models()) == route.call_count
    assert route.call_count == 5


@pytest.mark.parametrize(("answer", "expected"), [
    (httpx.Response(200, json={"models": [model("gemini-2.5-flash", "generateContent")]}), KeyCheck.OK),
    (httpx.Response(400, json=BAD_KEY), KeyCheck.REJECTED),
    (httpx.Response(403, json={"error": {"code": 403, "status": "PERMISSION_DENIED", "message":
                                         "Method doesn't allow unregistered callers"}}), KeyCheck.REJECTED),
    (httpx.Response(500, json={"error": {"code": 500, "status": "INTERNAL", "message": "Internal error"}}),
     KeyCheck.UNVERIFIED),
])
def test_gemini_test_key_outcomes(
    provider: GeminiProvider, respx_mock: respx.MockRouter, answer: httpx.Response, expected: KeyCheck
) -> None:
    respx_mock.get(MODELS).mock(return_value=answer)
    assert provider.test_key().status is expected


@pytest.mark.parametrize("body", [{}, {"data": [model("gemini-2.5-flash", "generateContent")]}, {"models": None}])
def test_gemini_test_key_without_a_models_array_could_not_verify(
    provider: GeminiProvider, respx_mock: respx.MockRouter, body: object
) -> None:
    respx_mock.get(MODELS).respond(json=body)  # a 200 that is not a model list: never "accepted; 0 models"
    result = provider.test_key()
    assert result.status is KeyCheck.UNVERIFIED
    assert "no 'models' array" in result.detail and "accepted" not in result.detail


def test_gemini_list_models_accepts_a_last_page_that_leaves_out_an_empty_list(
    provider: GeminiProvider, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(MODELS).side_effect = [
        httpx.Response(200, json={"models": [model("gemini-2.5-flash", "generateContent")], "nextPageToken": "p2"}),
        httpx.Response(200, json={}),  # proto3 JSON drops an empty repeated field
    ]
    assert provider.list_models() == ["gemini-2.5-flash"]


def test_gemini_test_key_unverified_when_unreachable(provider: GeminiProvider, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(MODELS).mock(side_effect=httpx.ConnectError("refused"))
    assert provider.test_key().status is KeyCheck.UNVERIFIED


def test_gemini_missing_key_raises_before_any_request(client: httpx.Client, respx_mock: respx.MockRouter) -> None:
    provider = GeminiProvider(client)
    with pytest.raises(MissingKeyError, match="GOOGLE_API_KEY"):
        provider.chat("gemini-2.5-flash", HELLO, ChatParams())
    with pytest.raises(MissingKeyError):
        next(provider.stream_chat("gemini-2.5-flash", HELLO, ChatParams()))
    assert respx_mock.calls.call_count == 0


@pytest.mark.parametrize("model", ["../../v1beta/cachedContents#", "x?alt=json&", "a/../../../files"])
def test_a_model_id_cannot_leave_the_models_path(
        provider: GeminiProvider, respx_mock: respx.MockRouter, model: str) -> None:
    route = respx_mock.route().respond(json=ANSWER)
    provider.chat(model, HELLO, ChatParams())
    url = route.calls.last.request.url
    assert url.path.startswith("/v1/models/") and url.path.endswith(":generateContent")
    assert (url.query, url.fragment) == (b"", "")
