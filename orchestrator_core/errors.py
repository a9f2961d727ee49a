"""The one error tree of orchestrator_core, and the one place HTTP failures are classified.

    OrchestratorError                      base; fields: provider, model, status_code, retry_after
    ├── InputError                         the caller must fix something; never falls back
    │   ├── InvalidModelIdError            not "provider:model"
    │   ├── UnknownProviderError           provider prefix not registered
    │   │   └── UnknownConnectionError     no connection (or model group) of that name (404)
    │   ├── EmptyPromptError               no messages, or only whitespace
    │   ├── InvalidKeyInputError           empty key, whitespace inside, unknown provider, duplicate label
    │   ├── InvalidConnectionError         a connection or group that does not fit: says what to fix (422)
    │   ├── RequestTooLargeError           an HTTP API body over the size limit, refused unread (413)
    │   └── InvalidParameterError          an HTTP API body field that does not fit (names it: param)
    │       └── UnsupportedParameterError  a parameter the core cannot honour yet (tools, n > 1, ...)
    ├── ConfigurationError                 settings, database or secret problems found at start-up
    │   ├── DatabaseError                  path read-only, folder missing, corrupt file, bad URL
    │   └── SecretKeyError                 stored keys cannot be decrypted with this secret
    ├── DatabaseBusyError                  another process holds the database's write lock; try again
    ├── ProviderError                      a call to a provider or host failed
    │   ├── AuthenticationError            401, 403, Gemini 400 API_KEY_INVALID
    │   ├── MissingKeyError                hosted provider without a usable key
    │   ├── RateLimitError                 429 (retry_after from retry-after / retry-after-ms)
    │   ├── QuotaExceededError             insufficient_quota, spend limits, billing (402)
    │   ├── ModelNotFoundError             404, Mistral 400 invalid_model
    │   ├── ModelNotLoadedError            LM Studio "No models loaded" / "Invalid model identifier"
    │   ├── ModelLoadError                 the host refused or failed to load the model
    │   │   └── ModelLoadTimeoutError      the load did not finish in time
    │   ├── BadRequestError                other 4xx the caller caused
    │   │   └── ContextLengthError         prompt longer than the model's context
    │   ├── ProviderUnavailableError       refused, DNS, 5xx, Anthropic 529
    │   │   └── ConnectionDisabledError    the model's connection is disabled
    │   ├── ProviderTimeoutError           connect / read / pool timeouts
    │   ├── BadResponseError               non-JSON, HTML page, missing fields, broken SSE stream
    │   ├── ContentFilteredError           a refusal or safety block: OpenAI refusal / content_filter,
    │   │                                  Anthropic stop_reason refusal, Gemini SAFETY..., blockReason
    │   └── UnsupportedOperationError      the host has no such endpoint (e.g. unload on vLLM)
    ├── StreamInterruptedError             a stream failed after its first token (no fallback then)
    ├── AllModelsFailedError               every model in the fallback chain failed; lists attempts
    ├── BudgetExceededError                a connection's (or the overall) budget is spent: refused (402)
    ├── GatewayAccessError                 HTTP API: no, wrong or revoked gateway token (401)
    │   ├── TokenScopeError                the token's scope does not allow the route (403)
    │   └── TooManyTokenFailuresError      too many failed token checks from one address (429)
    └── TooManyWaitsError                  HTTP API: more load waits at once than the threads spare (429)

Each class carries its policy, one table to read (no caller keeps a parallel list):
- ``http_status`` and ``openai_type``: how the HTTP API answers it (400 input, 401/403 access, 402 budget
  spent, 404 unknown model, 409 wrong state, 429 rate limits, 502/503/504 upstream);
- ``falls_back``: another model could succeed, so the call moves on (a refusal: FALLBACK_ON_CONTENT_FILTER);
- ``connection_wide``: every model of the connection would fail now, so fallback skips the whole connection;
  ``host_wide``: the same, for a connection to a local host only (a host that is down);
- ``cooldown_factor``: how long the model sits out, in FAILURE_COOLDOWN_S (a 429 with retry-after: that
  long); None: not at all (a refusal says nothing about the model);
- ``key_fault``: what it says about the key that was used: ``cooling`` (429, for its retry-after),
  ``rejected`` (skipped until tested again or replaced), ``exhausted`` (quota: cools long). The call then
  tries the next key of the same connection before it falls back to another model.

Messages say what happened and what fixes it, and never contain a key: ``classify_response``
scrubs every secret it is given from provider text before it reaches a message.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import httpx

    from .types import Attempt

KeyFault = Literal["cooling", "rejected", "exhausted"]


class OrchestratorError(Exception):
    """Base of every error orchestrator_core raises on purpose."""

    kind: ClassVar[str] = "error"
    # How an HTTP route answers this error (api/errors.py reads only these two): the status, and the
    # OpenAI error "type" the /v1 gateway puts in its body (its "code" is ``kind``). Subclasses inherit.
    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    # Set by the orchestrator on the error that ends a chat call: the call's request id (its metric rows carry
    # it) and its attempts, so an API route can answer with them.
    request_id: str | None = None
    call_attempts: tuple[Attempt, ...] = ()
    falls_back: ClassVar[bool] = False
    connection_wide: ClassVar[bool] = False
    host_wide: ClassVar[bool] = False
    cooldown_factor: ClassVar[float | None] = 1.0
    key_fault: ClassVar[KeyFault | None] = None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after


class InputError(OrchestratorError):
    kind = "bad_input"
    http_status = 400
    openai_type = "invalid_request_error"


class InvalidModelIdError(InputError):
    kind = "invalid_model_id"


class UnknownProviderError(InputError):
    kind = "unknown_provider"
    http_status = 404
    openai_type = "invalid_request_error"


class EmptyPromptError(InputError):
    kind = "empty_prompt"


class InvalidKeyInputError(InputError):
    kind = "invalid_key_input"


class UnknownConnectionError(UnknownProviderError):
    kind = "unknown_connection"


class InvalidConnectionError(InputError):
    kind = "invalid_connection"
    http_status = 422


class RequestTooLargeError(InputError):
    kind = "request_too_large"
    http_status = 413


class ConfigurationError(OrchestratorError):
    kind = "configuration"
    http_status = 503
    openai_type = "server_error"


class DatabaseError(ConfigurationError):
    kind = "database"


class SecretKeyError(ConfigurationError):
    kind = "secret_key"


class DatabaseBusyError(OrchestratorError):
    """Another process held the write lock past the busy wait; nothing was changed, so trying again is safe."""

    kind = "database_busy"


class ProviderError(OrchestratorError):
    kind = "provider_error"
    http_status = 502
    openai_type = "upstream_error"


class AuthenticationError(ProviderError):
    kind = "auth"
    falls_back = connection_wide = True
    cooldown_factor = 5.0  # not fixed by waiting a minute: keep it out of the way longer
    key_fault = "rejected"


class MissingKeyError(ProviderError):
    kind = "no_key"
    falls_back = connection_wide = True
    cooldown_factor = 5.0


class RateLimitError(ProviderError):
    kind = "rate_limit"
    http_status = 429
    openai_type = "rate_limit_error"
    falls_back = True
    key_fault = "cooling"


class QuotaExceededError(ProviderError):
    kind = "quota"
    http_status = 429
    openai_type = "insufficient_quota"
    falls_back = connection_wide = True
    cooldown_factor = 5.0
    key_fault = "exhausted"


class ModelNotFoundError(ProviderError):
    kind = "model_not_found"
    http_status = 404
    openai_type = "invalid_request_error"
    falls_back = True
    cooldown_factor = 5.0


class ModelNotLoadedError(ProviderError):
    kind = "not_loaded"
    http_status = 409
    openai_type = "invalid_request_error"
    falls_back = True


class ModelLoadError(ProviderError):
    kind = "load_failed"
    http_status = 409
    openai_type = "upstream_error"
    falls_back = True


class ModelLoadTimeoutError(ModelLoadError):
    kind = "load_timeout"
    http_status = 504
    openai_type = "timeout"


class BadRequestError(ProviderError):
    kind = "bad_request"
    http_status = 400
    openai_type = "invalid_request_error"


class ContextLengthError(BadRequestError):
    kind = "context_length"


class ProviderUnavailableError(ProviderError):
    kind = "unavailable"
    http_status = 503
    openai_type = "upstream_error"
    falls_back = True
    host_wide = True  # a local host that is down takes all its models with it; a hosted 503 may be one model's


class ConnectionDisabledError(ProviderUnavailableError):
    """The model's connection is switched off: fallback skips all of it, and no model of it cools down."""

    kind = "connection_disabled"
    connection_wide = True
    cooldown_factor = None


class ProviderTimeoutError(ProviderError):
    kind = "timeout"
    http_status = 504
    openai_type = "timeout"
    falls_back = True


class BadResponseError(ProviderError):
    kind = "bad_response"
    falls_back = True


class UnsupportedOperationError(ProviderError):
    kind = "unsupported"
    http_status = 400
    openai_type = "invalid_request_error"


class ContentFilteredError(ProviderError):
    """The provider refused the prompt or stopped the answer for safety: the model works, this prompt did not.

    ``reason`` is the provider's own word (``refusal``, ``content_filter``, ``SAFETY``...), ``refusal`` the
    refusal sentence when the provider gave one, ``partial_text`` whatever answer text came before the stop.
    """

    kind = "content_filter"
    falls_back = True  # unless FALLBACK_ON_CONTENT_FILTER is off (should_fall_back)
    cooldown_factor = None  # the prompt was refused; the model itself is fine

    def __init__(
        self, message: str, *, reason: str, refusal: str | None = None, partial_text: str = "", **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.reason = reason
        self.refusal = refusal
        self.partial_text = partial_text


class StreamInterruptedError(OrchestratorError):
    kind = "stream_interrupted"
    http_status = 502
    openai_type = "upstream_error"

    def __init__(self, message: str, *, cause: OrchestratorError | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.cause = cause


class AllModelsFailedError(OrchestratorError):
    kind = "all_failed"
    http_status = 503
    openai_type = "upstream_error"

    def __init__(self, attempts: Sequence[Attempt], *, model: str | None = None,
                 refused: tuple[str, ContentFilteredError] | None = None) -> None:
        lines = [f"  {a.model}: {a.error_kind or a.outcome} - {a.error or ''}".rstrip(" -") for a in attempts]
        message = "Every model tried failed:\n" + "\n".join(lines) if lines else "No model could be tried."
        message += "\nFix the first failure above, add a key, start the local host, or reset the failure cache."
        super().__init__(message, model=model)
        self.attempts = list(attempts)
        # (model id, error) of the last refusal or safety stop, when one came before every model failed: a
        # model did answer, with a refusal, which an OpenAI client expects as finish_reason content_filter.
        self.refused = refused


class BudgetExceededError(OrchestratorError):
    """The operator's budget for a connection or for all of them is spent; no request was sent.

    402, not 429: a 429 tells clients (the OpenAI SDK among them) to retry after a pause, and a monthly
    budget does not come back in seconds; 402 Payment Required says "spending limit reached" and is not
    retried. It never falls back by itself: the fallback chain skips over-budget connections beforehand.
    """

    kind = "budget_exceeded"
    http_status = 402
    openai_type = "insufficient_quota"

    def __init__(self, message: str, *, scope: str, period: str, limit_usd: float, spent_usd: float,
                 **fields: Any) -> None:
        super().__init__(message, **fields)
        self.scope = scope
        self.period = period
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd


class InvalidParameterError(InputError):
    """A request parameter with a value that does not fit (an HTTP API body field); param names it."""

    kind = "invalid_parameter"

    def __init__(self, message: str, *, param: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.param = param


class UnsupportedParameterError(InvalidParameterError):
    """A request parameter the core cannot honour yet (tools, response_format, n > 1, ...): refused, never dropped."""

    kind = "unsupported_parameter"


class GatewayAccessError(OrchestratorError):
    """The HTTP API refused the caller: no token, a wrong or revoked one (401)."""

    kind = "invalid_token"
    http_status = 401
    openai_type = "invalid_request_error"


class TokenScopeError(GatewayAccessError):
    """A valid token whose scope does not allow the route (a chat token on load / unload / reset)."""

    kind = "insufficient_scope"
    http_status = 403
    openai_type = "permission_error"


class TooManyTokenFailuresError(GatewayAccessError):
    """Too many failed token checks from one client address; retry_after says when it may try again."""

    kind = "too_many_token_failures"
    http_status = 429
    openai_type = "rate_limit_error"


class TooManyWaitsError(OrchestratorError):
    """HTTP API: more /wait requests at once than the gateway's threads can spare (each holds one until the
    load ends); the caller retries later or polls the status instead."""

    kind = "too_many_waits"
    http_status = 429
    openai_type = "rate_limit_error"


def should_fall_back(exc: BaseException, *, on_content_filter: bool = True) -> bool:
    """True when another model could succeed where this one failed.

    A refusal or safety block falls back only when ``on_content_filter`` (the FALLBACK_ON_CONTENT_FILTER
    setting) says so: another provider may well answer, but an operator may want a refusal to stand.
    """
    if isinstance(exc, ContentFilteredError):
        return on_content_filter
    return isinstance(exc, OrchestratorError) and exc.falls_back


# ---------------------------------------------------------------------------------------------
# Secret scrubbing

_MIN_SECRET_LEN = 6
_PIECE_LEN = 8  # any run of this many characters of a key is masked wherever it appears, in any case
# What providers put between the ends of a key they abbreviate: "sk-abc…wxyz", "sk-VKMIs***…wjh3", "sk-ab...yz".
_ELISION = r"(?:[*•…]|\.{2,})+"


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask every secret in text: whole, in part (any 8 of its characters in a row), in any case, or abbreviated
    around an ellipsis; and bearer tokens of any shape. Scrub before cutting text, never after."""
    text = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}", r"\1***", text)
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LEN:
            text = _mask_pieces(_mask_abbreviated(text, secret), secret)
    return text


def _mask_abbreviated(text: str, secret: str) -> str:
    """A key's first (3+) or last (2+) characters next to an elision mark, the way providers echo a key."""
    heads = "|".join(re.escape(secret[:n]) for n in range(min(12, len(secret) - 1), 2, -1))
    tails = "|".join(re.escape(secret[-n:]) for n in range(min(8, len(secret) - 1), 1, -1))
    pattern = f"(?:{heads}){_ELISION}(?:{tails})?|{_ELISION}(?:{tails})"
    return re.sub(pattern, mask_key(secret), text, flags=re.IGNORECASE)


def _mask_pieces(text: str, secret: str) -> str:
    """Every stretch of text made of overlapping runs of _PIECE_LEN characters of the secret, case-insensitively."""
    size = min(_PIECE_LEN, len(secret))
    key = secret.lower()
    pieces = {key[i : i + size] for i in range(len(key) - size + 1)}
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower-case to two ("İ"): keep positions aligned
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    covered = [False] * len(text)
    for i in range(len(text) - size + 1):
        if lowered[i : i + size] in pieces:
            covered[i : i + size] = [True] * size
    if not any(covered):
        return text
    out: list[str] = []
    for i, ch in enumerate(text):
        if not covered[i]:
            out.append(ch)
        elif i == 0 or not covered[i - 1]:
            out.append(mask_key(secret))
    return "".join(out)


def mask_key(key: str) -> str:
    """The only form of a key that may be shown: dots and its last 4 characters."""
    return "••••" + key[-4:] if len(key) > 8 else "••••"


def redact_url(url: str) -> str:
    """A URL as it may be shown: credentials in it (``https://user:password@host``) become ``***@host``.

    Everything up to the last '@' is masked, wherever it is: a password with an unescaped '/' or '?' in it
    must not show either, and a base URL whose path holds an '@' only loses its host from view."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


# ---------------------------------------------------------------------------------------------
# Classification: the single place a status code or transport failure becomes an error class

_LMSTUDIO_NOT_LOADED = ("no models loaded", "invalid model identifier", "model is not loaded")
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceeds the maximum number of tokens",
    "context length",
    "context window",
    "too many tokens",
    "request payload size exceeds",  # Gemini
)
# Quota codes are matched in type/code fields; message markers stay narrow, because OpenAI's plain
# rate-limit message also says "Visit https://platform.openai.com/account/billing to add a payment method".
_QUOTA_CODES = ("insufficient_quota", "billing_error", "enforced_spend_limit_reached")
_QUOTA_TEXT = (
    "exceeded your current quota",
    "spend limit",
    "credit balance",
    "usage limit",
    "billing account",
)
_AUTH_REASONS = ("API_KEY_INVALID", "API_KEY_EXPIRED", "invalid_api_key")  # Gemini sends a bad key as 400


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from retry-after-ms, retry-after (seconds or HTTP date); None if absent."""
    value = headers.get("retry-after-ms")
    if value and math.isfinite(ms := _float_or_nan(value)):
        return max(0.0, ms / 1000.0)
    value = headers.get("retry-after")
    if not value:
        return None
    if math.isfinite(seconds := _float_or_nan(value)):
        return max(0.0, seconds)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always UTC
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - time.time())
    return None


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _quota_exhausted(status: int, message: str, codes: str, body: Any) -> bool:
    """Billing or quota: another try soon will not help (unlike a rate limit)."""
    if status == 402 or "FAILED_PRECONDITION" in codes:
        return True  # Gemini's FAILED_PRECONDITION: free tier not offered in this region, billing needed
    if "RESOURCE_EXHAUSTED" in codes:
        # Gemini says "You exceeded your current quota" for per-minute limits too; only a per-day one lasts.
        return _gemini_daily_quota(body)
    lowered_codes = codes.lower()
    return any(c in lowered_codes for c in _QUOTA_CODES) or any(t in message.lower() for t in _QUOTA_TEXT)


def _gemini_daily_quota(body: Any) -> bool:
    for detail in _error_details(body):
        violations = detail.get("violations") if isinstance(detail, dict) else None
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict) and "perday" in str(violation.get("quotaId", "")).lower():
                return True
    return False


def _gemini_retry_delay(body: Any) -> float | None:
    for detail in _error_details(body):
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            with contextlib.suppress(ValueError):
                return float(delay[:-1])
    return None


def _error_details(body: Any) -> list[Any]:
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return details if isinstance(details, list) else []


def error_text(body: Any, raw: str) -> tuple[str, str]:
    """(message, codes) from any provider's error body: codes joins type/code/status/reason fields."""
    if not isinstance(body, dict):
        return _short(raw), ""
    err = body.get("error", body)
    if isinstance(err, str):
        return err, ""
    if not isinstance(err, dict):
        return _short(raw), ""
    message = err.get("message") or body.get("message") or body.get("detail") or _short(raw)
    codes = [str(err.get(f)) for f in ("type", "code", "status") if err.get(f) is not None]
    codes += [str(body.get(f)) for f in ("type", "code") if body.get(f) is not None and body is not err]
    codes += [str(d.get("reason")) for d in _error_details(body) if isinstance(d, dict) and d.get("reason")]
    details = err.get("details")
    if isinstance(details, dict) and details.get("error_code"):
        codes.append(str(details["error_code"]))
    return str(message), " ".join(codes)


def host_message(body: Any, raw: str, secrets: Iterable[str | None]) -> str:
    """The message of a host's error body, with every secret masked before the text is cut."""
    return scrub(error_text(body, scrub(raw, secrets))[0], secrets)


def _short(raw: str, limit: int = 300) -> str:
    text = raw.strip()
    if text.lower().startswith(("<!doctype", "<html")) or "<body" in text.lower()[:500]:
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        return f"an HTML error page{': ' + title.group(1).strip() if title else ''}"
    return text[:limit] + ("…" if len(text) > limit else "")


def classify_response(
    response: httpx.Response,
    *,
    provider: str,
    model: str | None,
    secrets: Sequence[str | None] = (),
    key_hint: str = "",
) -> ProviderError:
    """Turn a non-2xx response into the right error class with a message that says what to fix."""
    return classify_status(response.status_code, response.headers, _read_text(response), provider=provider,
                           model=model, secrets=secrets, key_hint=key_hint)


def classify_status(
    status: int,
    headers: Mapping[str, str],
    text: str,
    *,
    provider: str,
    model: str | None,
    secrets: Sequence[str | None] = (),
    key_hint: str = "",
) -> ProviderError:
    """classify_response for any HTTP client: the status, the headers (lower-case names) and the body's text."""
    raw = scrub(text, secrets)  # before anything parses or cuts the text
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = None
    message, codes = error_text(body, raw)
    message = scrub(message, secrets)  # again: a JSON escape ("\u0073k-...") hides a key from the first pass
    lowered = f"{message} {codes}".lower()
    where = f"{provider}:{model}" if model else provider
    fields: dict[str, Any] = {"provider": provider, "model": model, "status_code": status}
    fix_key = key_hint or f"check the {provider} key on the API Keys page"

    quota = _quota_exhausted(status, message, codes, body)
    if any(reason in codes for reason in _AUTH_REASONS) or (status in (401, 403) and not quota):
        return AuthenticationError(f"{where} rejected the credentials (HTTP {status}: {message}); {fix_key}.", **fields)
    if quota:
        return QuotaExceededError(
            f"{where} refused for billing or quota (HTTP {status}: {message}); "
            "check the account's plan and billing, or use another provider.",
            **fields,
        )
    if status == 429:
        retry = parse_retry_after(headers) or _gemini_retry_delay(body)
        wait = f" retry after {retry:.0f}s or" if retry else ""
        return RateLimitError(
            f"{where} is rate limiting requests (HTTP 429: {message});{wait} use another model.",
            retry_after=retry,
            **fields,
        )
    if status in (400, 404, 422) and any(m in lowered for m in _LMSTUDIO_NOT_LOADED):
        return ModelNotLoadedError(
            f"{where} is not loaded on the host ({message}); load it on the Models page or with "
            f"'python -m orchestrator_core load {where}'.",
            **fields,
        )
    if status == 404 or "invalid_model" in lowered or "model_not_found" in lowered:
        return ModelNotFoundError(
            f"{where} does not exist or this key has no access to it (HTTP {status}: {message}); "
            "check the model name against the provider's model list.",
            **fields,
        )
    if status in (400, 413, 422) and any(m in lowered for m in _CONTEXT_MARKERS):
        return ContextLengthError(
            f"The prompt is too long for {where} ({message}); shorten it or pick a model with a larger context.",
            **fields,
        )
    if status in (408, 504):
        return ProviderTimeoutError(f"{where} timed out on its side (HTTP {status}: {message}); try again.", **fields)
    if status >= 500 or status == 529:
        return ProviderUnavailableError(
            f"{where} is unavailable (HTTP {status}: {message}); it is failing on its side, try again later.",
            **fields,
        )
    if 400 <= status < 500:
        return BadRequestError(f"{where} rejected the request (HTTP {status}: {message}); fix the request.", **fields)
    return BadResponseError(f"{where} answered with unexpected HTTP {status}: {message}.", **fields)


def _read_text(response: httpx.Response) -> str:
    import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

    try:
        response.read()
        return response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""


# What went wrong below HTTP, whichever client saw it (httpx here, http.client in providers/plain.py).
TransportFailure = Literal["connect_timeout", "timeout", "connect", "dns", "closed", "decoding", "other"]


def classify_transport(exc: httpx.HTTPError, *, provider: str, model: str | None, base_url: str = "") -> ProviderError:
    """Turn an httpx transport failure into ProviderTimeoutError, ProviderUnavailableError or BadResponseError."""
    import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

    failure: TransportFailure = "other"
    if isinstance(exc, httpx.ConnectTimeout):
        failure = "connect_timeout"
    elif isinstance(exc, httpx.TimeoutException):
        failure = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        failure = "dns" if is_dns_failure(exc) else "connect"
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        failure = "closed"
    elif isinstance(exc, httpx.DecodingError):
        failure = "decoding"
    return transport_error(failure, type(exc).__name__, provider=provider, model=model, base_url=base_url)


def transport_error(
    failure: TransportFailure, name: str, *, provider: str, model: str | None, base_url: str = ""
) -> ProviderError:
    """The error class and message of a transport failure; ``name`` is the failure's httpx class name."""
    where = f"{provider}:{model}" if model else provider
    at = f" at {redact_url(base_url)}" if base_url else ""
    fields: dict[str, Any] = {"provider": provider, "model": model}
    if failure == "connect_timeout":
        return ProviderTimeoutError(
            f"Could not connect to {provider}{at} in time (connect timeout); check the host is running and reachable.",
            **fields,
        )
    if failure == "timeout":
        return ProviderTimeoutError(
            f"{where} did not answer in time ({name}); the host may be overloaded "
            "or the read timeout too short.",
            **fields,
        )
    if failure in ("connect", "dns"):
        reason = "name not resolved" if failure == "dns" else "connection refused or unreachable"
        return ProviderUnavailableError(
            f"Cannot reach {provider}{at} ({reason}); start the server or fix its base URL.", **fields
        )
    if failure == "closed":
        return ProviderUnavailableError(f"{where} closed the connection mid-response ({name}); try again.", **fields)
    if failure == "decoding":
        return BadResponseError(f"{where} sent a body that could not be decoded.", **fields)
    return ProviderUnavailableError(f"{where} failed at the transport level ({name}).", **fields)


def is_dns_failure(exc: BaseException) -> bool:
    """True when a connect failed because the host name did not resolve."""
    text = str(exc).lower()
    markers = ("name or service not known", "nodename nor servname", "getaddrinfo", "name resolution")
    return any(m in text for m in markers)


@contextlib.contextmanager
def map_http_errors(
    provider: str, model: str | None, *, secrets: Sequence[str | None] = (), base_url: str = ""
) -> Iterator[None]:
    """Translate httpx failures raised inside the block into the error tree (``raise ... from``)."""
    import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise classify_response(exc.response, provider=provider, model=model, secrets=secrets) from exc
    except httpx.HTTPError as exc:
        raise classify_transport(exc, provider=provider, model=model, base_url=base_url) from exc


def content_filtered(
    provider: str,
    model: str | None,
    *,
    reason: str,
    field: str,
    refusal: str | None = None,
    partial_text: str = "",
    detail: str = "",
    what: str = "",
    secrets: Sequence[str | None] = (),
) -> ContentFilteredError:
    """A ContentFilteredError whose message names the provider's reason (``field`` is where it was read)."""
    where = f"{provider}:{model}" if model else provider
    if not what and (refusal or reason == "refusal"):
        what = "declined to go on" if partial_text else "refused to answer"
    what = what or _FILTER_WORDS.get(reason, "stopped the answer")
    cut = f" after {len(partial_text):,} characters" if partial_text else ""
    said = f": \"{_short(scrub(refusal, secrets))}\"" if refusal else ""
    source = field if field.endswith(reason) else f"{field} {reason}"  # "message.refusal", "finishReason SAFETY"
    source += f"; {scrub(detail, secrets)}" if detail else ""
    return ContentFilteredError(
        f"{where} {what}{cut}{said} ({source}). Rephrase the prompt, or send it to another model.",
        reason=reason,
        refusal=refusal,
        partial_text=partial_text,
        provider=provider,
        model=model,
    )


# The provider's reason in words; the reason itself is always quoted beside them.
_FILTER_WORDS: dict[str, str] = {
    "content_filter": "stopped the answer at its content filter",
    "SAFETY": "blocked the answer for safety",
    "RECITATION": "blocked the answer as recitation of existing text",
    "PROHIBITED_CONTENT": "blocked the answer as prohibited content",
    "BLOCKLIST": "blocked the answer for a blocklisted term",
    "SPII": "blocked the answer for sensitive personal information",
    "IMAGE_SAFETY": "blocked the image for safety",
    "IMAGE_PROHIBITED_CONTENT": "blocked the image as prohibited content",
    "IMAGE_RECITATION": "blocked the image as recitation",
}


def bad_response(provider: str, model: str | None, what: str) -> BadResponseError:
    """A BadResponseError for a 2xx body that is not what the provider documents."""
    where = f"{provider}:{model}" if model else provider
    return BadResponseError(
        f"{where} sent a response that could not be understood ({what}); the server may not be "
        f"{provider}-compatible or its base URL may point at the wrong service.",
        provider=provider,
        model=model,
    )
