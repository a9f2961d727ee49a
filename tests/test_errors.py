"""classify_response / classify_transport against real provider error bodies; retry-after; key scrubbing."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from orchestrator_core.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextLengthError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    classify_response,
    classify_transport,
    map_http_errors,
    mask_key,
    parse_retry_after,
    scrub,
    should_fall_back,
)

KEY = "sk-proj-SECRET-abcdefghijklmnop"


def classify(status: int, body: object = None, *, text: str | None = None, headers: dict[str, str] | None = None,
             provider: str = "openai") -> ProviderError:
    response = httpx.Response(status, json=body, headers=headers) if text is None else httpx.Response(
        status, text=text, headers=headers)
    return classify_response(response, provider=provider, model="m", secrets=[KEY])


def anthropic(kind: str, message: str, **extra: object) -> dict[str, object]:
    return {"type": "error", "error": {"type": kind, "message": message, **extra}, "request_id": "req_011"}


def google(code: int, status: str, message: str, *details: dict[str, object]) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def openai(message: str, kind: str, code: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


GEMINI_QUOTA = "You exceeded your current quota, please check your plan and billing details."
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}


def quota_failure(quota_id: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": quota_id}]}


CASES: list[tuple[str, str, int, object, type[ProviderError]]] = [
    # (id, provider, status, body, class)
    ("openai-401", "openai", 401, openai("Incorrect API key provided: sk-VKMIs***wjh3.", "invalid_request_error",
                                         "invalid_api_key"), AuthenticationError),
    ("anthropic-401", "anthropic", 401, anthropic("authentication_error", "invalid x-api-key"), AuthenticationError),
    ("gemini-400-bad-key", "google", 400, google(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}),
     AuthenticationError),
    ("mistral-401", "mistral", 401, {"detail": "Unauthorized"}, AuthenticationError),
    ("openai-403-region", "openai", 403, openai("Country, region, or territory not supported", "request_forbidden",
                                                "unsupported_country_region_territory"), AuthenticationError),
    ("anthropic-403", "anthropic", 403, anthropic("permission_error", "Your API key does not have permission"),
     AuthenticationError),
    ("openai-429-quota", "openai", 429, openai("You exceeded your current quota, please check your plan and billing "
                                               "details.", "insufficient_quota", "insufficient_quota"),
     QuotaExceededError),
    ("anthropic-402", "anthropic", 402, anthropic("billing_error", "There is a problem with your billing."),
     QuotaExceededError),
    ("anthropic-429-spend-cap", "anthropic", 429, anthropic("rate_limit_error", "You have reached your monthly limit",
                                                            details={"error_code": "enforced_spend_limit_reached"}),
     QuotaExceededError),
    ("anthropic-400-credit", "anthropic", 400, anthropic("invalid_request_error", "Your credit balance is too low to "
                                                         "access the Anthropic API."), QuotaExceededError),
    ("gemini-429-per-day", "google", 429, google(429, "RESOURCE_EXHAUSTED", GEMINI_QUOTA,
                                                 quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier")),
     QuotaExceededError),
    ("openai-429-rate", "openai", 429, openai(
        "Rate limit reached for gpt-4o in organization org-x on requests per min. Limit: 3 / min. Please add a "
        "payment method to your account to increase your rate limit. Visit https://platform.openai.com/account/"
        "billing to add a payment method.", "requests", "rate_limit_exceeded"), RateLimitError),
    ("gemini-429-per-minute", "google", 429, google(429, "RESOURCE_EXHAUSTED", GEMINI_QUOTA, quota_failure(
        "GenerateContentInputTokensPerModelPerMinute-FreeTier"), RETRY_INFO), RateLimitError),
    ("mistral-429", "mistral", 429, {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
                                     "param": None, "code": "1300", "raw_status_code": 429}, RateLimitError),
    ("openai-404", "openai", 404, openai(
        "The model `gpt-4o-2024-05-13` does not exist or you do not have access to it.", "invalid_request_error",
        "model_not_found"), ModelNotFoundError),
    ("anthropic-404", "anthropic", 404, anthropic("not_found_error", "model: claude-3-5-sonnet-20241022 "),
     ModelNotFoundError),
    ("gemini-404", "google", 404, google(
        404, "NOT_FOUND", "models/gemini-1.5-flash is not found for API version v1beta, or is not supported for "
        "generateContent."), ModelNotFoundError),
    ("mistral-400-invalid-model", "mistral", 400, {"object": "error", "message": "Invalid model: mistral-medium-3.5",
                                                   "type": "invalid_model", "param": None, "code": "1500",
                                                   "raw_status_code": 400}, ModelNotFoundError),
    ("lmstudio-no-models-loaded", "lmstudio", 400, {"error": {
        "message": "No models loaded. Please load a model in the developer page or use the 'lms load' command.",
        "type": "invalid_request_error", "param": "model", "code": None}}, ModelNotLoadedError),
    ("lmstudio-string-error", "lmstudio", 404, {"error": "No models loaded. Please load a model."},
     ModelNotLoadedError),
    ("openai-400-context", "openai", 400, openai("This model's maximum context length is 8192 tokens. However, your "
                                                 "messages resulted in 8227 tokens.", "invalid_request_error",
                                                 "context_length_exceeded"), ContextLengthError),
    ("anthropic-400-too-long", "anthropic", 400, anthropic("invalid_request_error",
                                                           "prompt is too long: 208656 tokens > 200000 maximum"),
     ContextLengthError),
    ("gemini-400-too-many-tokens", "google", 400, google(400, "INVALID_ARGUMENT", "The input token count (1200000) "
                                                         "exceeds the maximum number of tokens allowed (1048576)."),
     ContextLengthError),
    ("openai-400-temperature", "openai", 400, openai("Unsupported value: 'temperature' does not support 0.5 with this "
                                                     "model. Only the default (1) value is supported.",
                                                     "invalid_request_error", "unsupported_value"), BadRequestError),
    ("anthropic-413", "anthropic", 413, anthropic("request_too_large", "Request exceeds the maximum allowed size"),
     BadRequestError),
    ("mistral-422", "mistral", 422,
     {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]}, BadRequestError),
    ("anthropic-504", "anthropic", 504, anthropic("timeout_error", "Request timed out"), ProviderTimeoutError),
    ("gemini-504", "google", 504, google(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
     ProviderTimeoutError),
    ("anthropic-529", "anthropic", 529, anthropic("overloaded_error", "Overloaded"), ProviderUnavailableError),
    ("anthropic-500", "anthropic", 500, anthropic("api_error", "Internal server error"), ProviderUnavailableError),
    ("openai-500", "openai", 500,
     openai("The server had an error while processing your request.", "server_error", None), ProviderUnavailableError),
    ("gemini-503", "google", 503, google(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
     ProviderUnavailableError),
]


@pytest.mark.parametrize(("provider", "status", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_response_maps_real_bodies_to_classes(
    provider: str, status: int, body: object, expected: type[ProviderError]
) -> None:
    error = classify(status, body, provider=provider)
    assert type(error) is expected
    assert (error.provider, error.model, error.status_code) == (provider, "m", status)


def test_gemini_429_takes_retry_after_from_retry_info() -> None:
    error = classify(429, google(429, "RESOURCE_EXHAUSTED", GEMINI_QUOTA, RETRY_INFO), provider="google")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 26.0
    assert "retry after 26s" in error.message


def test_anthropic_429_takes_retry_after_header() -> None:
    error = classify(429, anthropic("rate_limit_error", "rate limited"), headers={"retry-after": "30"})
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 30.0


def test_retry_after_header_wins_over_gemini_retry_info() -> None:
    body = google(429, "RESOURCE_EXHAUSTED", GEMINI_QUOTA, RETRY_INFO)
    error = classify(429, body, headers={"retry-after-ms": "500"})
    assert error.retry_after == 0.5


def test_html_error_page_is_summarised_not_quoted() -> None:
    page = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
            "<body><center><h1>502 Bad Gateway</h1></center><hr>cloudflare</body></html>")
    error = classify(502, text=page)
    assert isinstance(error, ProviderUnavailableError)
    assert "HTML error page: 502 Bad Gateway" in error.message
    assert "<" not in error.message


def test_unexpected_redirect_is_bad_response() -> None:
    error = classify(302, text="", headers={"location": "https://login.example.com"})
    assert isinstance(error, BadResponseError)
    assert "302" in error.message


def test_a_key_echoed_in_an_error_body_is_scrubbed() -> None:
    error = classify(401, openai(f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key"))
    assert KEY not in error.message
    assert str(error) == error.message
    assert mask_key(KEY) in error.message


def test_a_key_echoed_in_a_plain_text_body_is_scrubbed() -> None:
    error = classify(500, text=f"upstream rejected Authorization: Bearer {KEY}")
    assert KEY not in error.message
    assert "Bearer ***" in error.message or mask_key(KEY) in error.message


def test_messages_say_what_to_do() -> None:
    assert "API Keys page" in classify(401, {"detail": "Unauthorized"}).message
    assert "shorten" in classify(400, anthropic("invalid_request_error", "prompt is too long: 9 > 8")).message
    assert "model list" in classify(404, openai("no such model", "invalid_request_error", "model_not_found")).message


def test_only_failures_another_model_could_fix_fall_back() -> None:
    assert should_fall_back(classify(429, {"message": "Requests rate limit exceeded"}))
    assert should_fall_back(classify(529, anthropic("overloaded_error", "Overloaded")))
    assert not should_fall_back(classify(400, anthropic("invalid_request_error", "prompt is too long: 9 > 8")))
    assert not should_fall_back(classify(400, openai("bad", "invalid_request_error", "unsupported_value")))


# -- transport ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("exc", "expected", "words"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), ProviderUnavailableError, "connection refused"),
    (httpx.ConnectError("[Errno -2] Name or service not known"), ProviderUnavailableError, "name not resolved"),
    (httpx.ConnectTimeout("timed out"), ProviderTimeoutError, "connect timeout"),
    (httpx.ReadTimeout("timed out"), ProviderTimeoutError, "ReadTimeout"),
    (httpx.RemoteProtocolError("peer closed connection"), ProviderUnavailableError, "mid-response"),
    (httpx.DecodingError("bad gzip"), BadResponseError, "decoded"),
])
def test_classify_transport_names_the_failure(exc: httpx.HTTPError, expected: type, words: str) -> None:
    error = classify_transport(exc, provider="lmstudio", model="qwen", base_url="http://127.0.0.1:1234")
    assert type(error) is expected
    assert words in error.message


def test_map_http_errors_translates_status_errors_with_cause() -> None:
    request = httpx.Request("GET", "https://api.mistral.ai/v1/models")
    response = httpx.Response(401, json={"detail": "Unauthorized"}, request=request)
    with pytest.raises(AuthenticationError) as info, map_http_errors("mistral", None):
        response.raise_for_status()
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)


# -- retry-after ----------------------------------------------------------------------------------
def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "12"})) == 12.0


def test_parse_retry_after_ms_wins_over_seconds() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5


def test_parse_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": when})) == pytest.approx(30, abs=2)


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    # "-0000" parses to a naive datetime; reading it as local time would be off by the machine's UTC offset.
    when = email.utils.formatdate(time.time() + 60).replace("+0000", "-0000")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "America/New_York")
        time.tzset()
        seconds = parse_retry_after(httpx.Headers({"retry-after": when}))
    time.tzset()
    assert seconds == pytest.approx(60, abs=2)


def test_parse_retry_after_past_date_is_zero() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


@pytest.mark.parametrize("headers", [{}, {"retry-after": "soon"}, {"retry-after": "nan"}, {"retry-after-ms": "inf"}])
def test_parse_retry_after_absent_or_unusable_is_none(headers: dict[str, str]) -> None:
    assert parse_retry_after(httpx.Headers(headers)) is None


# -- keys -----------------------------------------------------------------------------------------
def test_mask_key_shows_only_the_last_four() -> None:
    assert mask_key("sk-test-123456") == "••••3456"
    assert mask_key("short") == "••••"


def test_scrub_replaces_secrets_and_bearer_tokens() -> None:
    text = f"key {KEY} and header Authorization: Bearer abcdefghijklmnop"
    cleaned = scrub(text, [KEY, None])
    assert KEY not in cleaned
    assert "abcdefghijklmnop" not in cleaned
    assert cleaned == f"key {mask_key(KEY)} and header Authorization: Bearer ***"


def test_scrub_leaves_too_short_secrets_alone() -> None:
    # A 3-character "secret" would mangle ordinary words.
    assert scrub("the cat sat", ["cat"]) == "the cat sat"


def test_gemini_failed_precondition_region_is_a_quota_failure_that_falls_back() -> None:
    body = {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                      "message": "User location is not supported for the API use without a billing account linked."}}
    error = classify_response(httpx.Response(400, json=body), provider="google", model="gemini-2.5-flash")
    assert isinstance(error, QuotaExceededError)
    assert should_fall_back(error)


SECRET = "sk-proj-VKMIs0aB1cD2eF3gH4iJ5kL6wjh3"


@pytest.mark.parametrize("echo", [
    SECRET, SECRET.upper(), SECRET[:20], SECRET[9:25], f"{SECRET[:6]}…{SECRET[-3:]}",
    f"{SECRET[:8]}***…{SECRET[-4:]}", f"{SECRET[:7]}...{SECRET[-2:]}", f"İİ{SECRET}",
], ids=["whole", "upper", "head-20", "middle-16", "head-ellipsis-tail", "stars", "dots", "two-char-lowercase"])
def test_scrub_masks_a_key_whole_in_part_in_any_case_or_abbreviated(echo: str) -> None:
    text = scrub(f"Incorrect API key provided: {echo}. Find your key at https://x", [SECRET])
    assert "••••wjh3" in text and text.startswith("Incorrect API key provided: ")
    lowered = text.lower()
    assert not any(SECRET[i : i + 8].lower() in lowered for i in range(len(SECRET) - 7))
    assert SECRET[:6].lower() not in lowered


def test_scrub_leaves_text_without_the_key_alone() -> None:
    text = "sk-abc…xyz is another key; Bearer *** stays; 1234 wjh3"
    assert scrub(text, [SECRET]) == text
