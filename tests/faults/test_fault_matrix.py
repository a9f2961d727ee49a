"""The fault matrix: every way a provider or host can misbehave, played on a real socket.

Each row runs twice, concurrently, on two orchestrators with their own databases: (a) fallback off,
which must raise the documented class with a message naming the cause, and (b) fallback on with a
healthy model on the same server, which must fall back or not as the row says. Both must leave a
``call_metrics`` row with the right error kind, the right cooldown, and no thread or connection behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator_core.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContentFilteredError,
    ContextLengthError,
    ModelLoadError,
    ModelLoadTimeoutError,
    ModelNotFoundError,
    ModelNotLoadedError,
    OrchestratorError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    StreamInterruptedError,
)
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import OrchestratedResult
from tests.faults.conftest import FAST, ROOMY, OrchFactory, assert_nothing_left_behind, metric_rows, running_threads
from tests.faults.fault_server import DNS_FAILURE_URL, Blackhole, FaultServer, RefusedPort, Reply
from tests.faults.wire import (
    HELLO,
    LMSTUDIO_LOAD,
    LMSTUDIO_OPENAI_MODELS,
    LMSTUDIO_STATUS,
    LMSTUDIO_V0,
    SHAPES,
    Shape,
    anthropic_stream,
    gemini_chunk,
    healthy,
    healthy_for,
    lmstudio_models,
    openai_answer,
    openai_chunk,
    openai_stream,
    sse,
)

BASE_COOLDOWN = 60.0
LONG_COOLDOWN = 300.0  # auth, quota, unknown model: waiting a minute would not fix them
HTML_502 = ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
            "</center><hr><center>nginx</center></body></html>")
NO_MODELS = "No models loaded. Please load a model in the developer page or use the `lms load` command."


@dataclass(frozen=True)
class Row:
    """One fault: where it happens, what the caller must see, and what the orchestrator must do."""

    id: str
    shape: str
    routes: dict[str, Reply]  # "call" is the row's chat/stream path; others are literal paths
    error: type[OrchestratorError] | None  # None: the call must work
    says: str  # the message names the cause
    falls_back: bool
    kind: str | None = None  # call_metrics.error_kind; default: the error's kind
    cooldown_s: float | None = None  # None: no cooldown
    stream: bool = False
    socket: str | None = None  # "refused" | "dns" | "blackhole": the provider's base URL is broken
    cause: type[OrchestratorError] | None = None  # StreamInterruptedError: the underlying failure
    retry_after: float | None = None
    note: str | None = None  # a result note a working call must carry

    @property
    def about_timing(self) -> bool:
        """Rows whose fault is a timeout or a stall need the short timeouts; the rest get roomy ones."""
        timeouts = (ProviderTimeoutError, ModelLoadTimeoutError)
        return (self.error in timeouts or self.cause in timeouts or self.socket == "blackhole"
                or "timeout" in self.id or "stall" in self.id or "never-finishes" in self.id)

    @property
    def error_kind(self) -> str | None:
        if self.kind is not None:
            return self.kind
        return self.error.kind if self.error is not None else None


def oa_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def an_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def g_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


J = Reply.json
OPENAI_TOKEN = sse(openai_chunk("Hel", "gpt-fault"))
ANTHROPIC_TOKEN = anthropic_stream(["Hel"], "claude-fault", stop=False)[:2]

ROWS: list[Row] = [
    # -- the socket ---------------------------------------------------------------------------------
    Row("refused-openai", "openai", {}, ProviderUnavailableError, "connection refused", True,
        cooldown_s=BASE_COOLDOWN, socket="refused"),
    Row("refused-anthropic-stream", "anthropic", {}, ProviderUnavailableError, "connection refused", True,
        cooldown_s=BASE_COOLDOWN, socket="refused", stream=True),
    Row("refused-lmstudio", "lmstudio", {}, ProviderUnavailableError, "connection refused", True,
        cooldown_s=BASE_COOLDOWN, socket="refused"),
    Row("dns-google", "google", {}, ProviderUnavailableError, "name not resolved", True,
        cooldown_s=BASE_COOLDOWN, socket="dns"),
    Row("dns-custom-host", "custom", {}, ProviderUnavailableError, "name not resolved", True,
        cooldown_s=BASE_COOLDOWN, socket="dns"),
    Row("connect-timeout-openai", "openai", {}, ProviderTimeoutError, "connect timeout", True,
        cooldown_s=BASE_COOLDOWN, socket="blackhole"),
    # A local host that cannot be reached in time is down as far as the caller is concerned.
    Row("connect-timeout-lmstudio", "lmstudio", {}, ProviderUnavailableError, "connect timeout", True,
        cooldown_s=BASE_COOLDOWN, socket="blackhole"),
    Row("read-timeout-openai", "openai", {"call": Reply.stall()}, ProviderTimeoutError, "ReadTimeout", True,
        cooldown_s=BASE_COOLDOWN),
    Row("read-timeout-anthropic", "anthropic", {"call": Reply.stall()}, ProviderTimeoutError, "ReadTimeout", True,
        cooldown_s=BASE_COOLDOWN),
    Row("read-timeout-lmstudio-chat", "lmstudio", {"call": Reply.stall()}, ProviderTimeoutError, "ReadTimeout",
        True, cooldown_s=BASE_COOLDOWN),
    Row("read-timeout-lmstudio-status", "lmstudio", {LMSTUDIO_STATUS: Reply.stall()}, ProviderUnavailableError,
        "ReadTimeout", True, cooldown_s=BASE_COOLDOWN),
    Row("body-stalls-google", "google", {"call": Reply.partial({"candidates": []}, sent=5, then="stall")},
        ProviderTimeoutError, "ReadTimeout", True, cooldown_s=BASE_COOLDOWN),
    Row("body-cut-mistral", "mistral", {"call": Reply.partial(openai_answer("x" * 100, "m"), sent=20, then="cut")},
        ProviderUnavailableError, "closed the connection", True, cooldown_s=BASE_COOLDOWN),
    Row("stream-stalls-before-first-token-google", "google", {"call": Reply.stream([], then="stall")},
        ProviderTimeoutError, "ReadTimeout", True, cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-stalls-after-first-token-openai", "openai", {"call": Reply.stream(OPENAI_TOKEN, then="stall")},
        StreamInterruptedError, "ReadTimeout", False, kind="timeout", cause=ProviderTimeoutError,
        cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-stalls-after-first-token-anthropic", "anthropic",
        {"call": Reply.stream(ANTHROPIC_TOKEN, then="stall")}, StreamInterruptedError, "ReadTimeout", False,
        kind="timeout", cause=ProviderTimeoutError, cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-cut-openai", "openai", {"call": Reply.stream(OPENAI_TOKEN, then="cut")}, StreamInterruptedError,
        "closed the connection", False, kind="unavailable", cause=ProviderUnavailableError,
        cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-cut-google", "google", {"call": Reply.stream(sse(gemini_chunk("Hel")), then="cut")},
        StreamInterruptedError, "closed the connection", False, kind="unavailable", cause=ProviderUnavailableError,
        cooldown_s=BASE_COOLDOWN, stream=True),
    # -- HTTP status ----------------------------------------------------------------------------------
    Row("400-openai", "openai", {"call": J(400, oa_error("Invalid value for 'temperature'", "invalid_request_error",
                                                         "invalid_value"))},
        BadRequestError, "HTTP 400: Invalid value for 'temperature'", False),
    Row("400-anthropic", "anthropic", {"call": J(400, an_error("invalid_request_error", "messages: roles must "
                                                                                          "alternate"))},
        BadRequestError, "roles must alternate", False),
    Row("400-google", "google", {"call": J(400, g_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))},
        BadRequestError, "Invalid JSON payload", False),
    Row("400-mistral", "mistral", {"call": J(400, {"object": "error", "message": "Assistant message must have "
                                                   "content", "type": "invalid_request_message_order", "code": None})},
        BadRequestError, "Assistant message must have content", False),
    Row("400-custom-vllm", "custom", {"call": J(400, {"object": "error", "message": "temperature must be "
                                                      "non-negative", "type": "BadRequestError", "code": 400})},
        BadRequestError, "temperature must be non-negative", False),
    Row("400-context-too-long-openai", "openai",
        {"call": J(400, oa_error("This model's maximum context length is 128000 tokens.", "invalid_request_error",
                                 "context_length_exceeded"))},
        ContextLengthError, "too long", False),
    Row("400-context-too-long-anthropic", "anthropic",
        {"call": J(400, an_error("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"))},
        ContextLengthError, "too long", False),
    Row("401-openai", "openai", {"call": J(401, oa_error("Incorrect API key provided.", "invalid_request_error",
                                                         "invalid_api_key"))},
        AuthenticationError, "rejected the credentials (HTTP 401", True, cooldown_s=LONG_COOLDOWN),
    Row("401-anthropic-stream", "anthropic", {"call": J(401, an_error("authentication_error", "invalid x-api-key"))},
        AuthenticationError, "invalid x-api-key", True, cooldown_s=LONG_COOLDOWN, stream=True),
    Row("403-anthropic", "anthropic", {"call": J(403, an_error("permission_error", "Your API key does not have "
                                                                                   "permission"))},
        AuthenticationError, "HTTP 403", True, cooldown_s=LONG_COOLDOWN),
    Row("404-model-openai", "openai", {"call": J(404, oa_error("The model `gpt-fault` does not exist",
                                                               "invalid_request_error", "model_not_found"))},
        ModelNotFoundError, "does not exist", True, cooldown_s=LONG_COOLDOWN),
    Row("404-model-anthropic", "anthropic", {"call": J(404, an_error("not_found_error", "model: claude-fault"))},
        ModelNotFoundError, "HTTP 404", True, cooldown_s=LONG_COOLDOWN),
    Row("400-invalid-model-mistral", "mistral", {"call": J(400, {"object": "error", "message": "Invalid model: "
                                                                 "mistral-fault", "type": "invalid_model",
                                                                 "code": "1500"})},
        ModelNotFoundError, "Invalid model", True, cooldown_s=LONG_COOLDOWN),
    Row("400-api-key-invalid-google", "google",
        {"call": J(400, g_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                          "reason": "API_KEY_INVALID"}]))},
        AuthenticationError, "API key not valid", True, cooldown_s=LONG_COOLDOWN),
    Row("402-billing-custom", "custom", {"call": J(402, {"error": {"message": "Insufficient credits", "code": 402}})},
        QuotaExceededError, "billing", True, cooldown_s=LONG_COOLDOWN),
    Row("429-retry-after-openai", "openai",
        {"call": J(429, oa_error("Rate limit reached", "requests", "rate_limit_exceeded"), {"retry-after": "7"})},
        RateLimitError, "retry after 7s", True, cooldown_s=7.0, retry_after=7.0),
    Row("429-retry-after-ms-openai", "openai",
        {"call": J(429, oa_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                   {"retry-after-ms": "2500"})},
        RateLimitError, "HTTP 429", True, cooldown_s=2.5, retry_after=2.5),
    Row("429-no-header-anthropic", "anthropic", {"call": J(429, an_error("rate_limit_error", "per-minute rate "
                                                                                             "limit"))},
        RateLimitError, "rate limiting", True, cooldown_s=BASE_COOLDOWN),
    Row("429-insufficient-quota-openai", "openai",
        {"call": J(429, oa_error("You exceeded your current quota", "insufficient_quota", "insufficient_quota"))},
        QuotaExceededError, "exceeded your current quota", True, cooldown_s=LONG_COOLDOWN),
    Row("500-openai", "openai", {"call": J(500, oa_error("The server had an error", "server_error"))},
        ProviderUnavailableError, "HTTP 500", True, cooldown_s=BASE_COOLDOWN),
    Row("502-html-mistral", "mistral", {"call": Reply.text(502, HTML_502, "text/html")},
        ProviderUnavailableError, "an HTML error page: 502 Bad Gateway", True, cooldown_s=BASE_COOLDOWN),
    Row("503-google", "google", {"call": J(503, g_error(503, "UNAVAILABLE", "The model is overloaded."))},
        ProviderUnavailableError, "HTTP 503", True, cooldown_s=BASE_COOLDOWN),
    Row("529-anthropic", "anthropic", {"call": J(529, an_error("overloaded_error", "Overloaded"))},
        ProviderUnavailableError, "HTTP 529", True, cooldown_s=BASE_COOLDOWN),
    # -- a 200 that is not what was asked for ------------------------------------------------------------
    Row("200-not-json-openai", "openai", {"call": Reply.text(200, "<html>maintenance</html>", "text/html")},
        BadResponseError, "not JSON", True, cooldown_s=BASE_COOLDOWN),
    Row("200-missing-fields-anthropic", "anthropic", {"call": J(200, {"id": "msg_1", "type": "message"})},
        BadResponseError, "no content blocks", True, cooldown_s=BASE_COOLDOWN),
    Row("200-missing-fields-google", "google", {"call": J(200, {"modelVersion": "gemini-fault"})},
        BadResponseError, "no candidates", True, cooldown_s=BASE_COOLDOWN),
    Row("200-empty-choices-openai", "openai", {"call": J(200, {"id": "c", "model": "gpt-fault", "choices": []})},
        BadResponseError, "no choices", True, cooldown_s=BASE_COOLDOWN),
    Row("sse-malformed-event-openai", "openai", {"call": Reply.stream(sse("{not json"))},
        BadResponseError, "not valid JSON", True, cooldown_s=BASE_COOLDOWN, stream=True),
    Row("sse-malformed-event-after-text-anthropic", "anthropic",
        {"call": Reply.stream([*ANTHROPIC_TOKEN, b"event: content_block_delta\ndata: {oops\n\n"])},
        StreamInterruptedError, "not valid JSON", False, kind="bad_response", cause=BadResponseError,
        cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-without-done-openai", "openai", {"call": Reply.stream(openai_stream(["Hel"], "gpt-fault", done=False))},
        StreamInterruptedError, "[DONE]", False, kind="bad_response", cause=BadResponseError,
        cooldown_s=BASE_COOLDOWN, stream=True),
    Row("stream-without-message-stop-anthropic", "anthropic",
        {"call": Reply.stream(anthropic_stream([], "claude-fault", stop=False))},
        BadResponseError, "message_stop", True, cooldown_s=BASE_COOLDOWN, stream=True),
    Row("sse-answered-with-json-error-mistral", "mistral",
        {"call": J(200, {"object": "error", "message": "Service unavailable", "type": "service_unavailable"})},
        BadResponseError, "expected an event stream", True, cooldown_s=BASE_COOLDOWN, stream=True),
    # -- refusals and safety blocks: the model is fine, so no cooldown; another model may answer ------------
    Row("200-refusal-openai", "openai", {"call": J(200, {"id": "c", "model": "gpt-fault", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None,
                                                         "refusal": "I can't help with that."}}]})},
        ContentFilteredError, "refused to answer: \"I can't help with that.\"", True),
    Row("200-stop-reason-refusal-anthropic", "anthropic",
        {"call": J(200, {"id": "m", "type": "message", "content": [], "stop_reason": "refusal"})},
        ContentFilteredError, "(stop_reason refusal)", True),
    Row("200-finish-safety-google", "google", {"call": J(200, {"candidates": [{"finishReason": "SAFETY"}]})},
        ContentFilteredError, "blocked the answer for safety (finishReason SAFETY)", True),
    Row("prompt-blocked-google-stream", "google",
        {"call": Reply.stream(sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))},
        ContentFilteredError, "blocked the prompt (promptFeedback.blockReason PROHIBITED_CONTENT)", True, stream=True),
    Row("stream-cut-by-content-filter-after-text-mistral", "mistral",
        {"call": Reply.stream([*OPENAI_TOKEN, *sse({"model": "m", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "content_filter"}]}, "[DONE]")])},
        StreamInterruptedError, "cut by a safety stop", False, kind="content_filter", cause=ContentFilteredError,
        stream=True),
    # -- LM Studio ---------------------------------------------------------------------------------------
    Row("lmstudio-no-models-loaded-400-string", "lmstudio", {"call": J(400, {"error": NO_MODELS})},
        ModelNotLoadedError, "not loaded on the host", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-no-models-loaded-400-object", "lmstudio",
        {"call": J(400, {"error": {"message": NO_MODELS, "type": "invalid_request_error"}})},
        ModelNotLoadedError, "No models loaded", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-no-models-loaded-404-string", "lmstudio", {"call": J(404, {"error": NO_MODELS})},
        ModelNotLoadedError, "No models loaded", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-no-models-loaded-404-object", "lmstudio",
        {"call": J(404, {"error": {"message": NO_MODELS, "type": "invalid_request_error", "code": "model_not_found"}})},
        ModelNotLoadedError, "No models loaded", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-old-host-without-api-v1", "lmstudio",
        {LMSTUDIO_STATUS: J(404, {"error": "Unexpected endpoint or method. (GET /api/v1/models)"}),
         LMSTUDIO_V0: J(200, {"data": [{"id": "qwen", "type": "llm", "state": "loaded"}]})},
        None, "", False),
    Row("lmstudio-oldest-host-jit-off", "lmstudio",
        {LMSTUDIO_STATUS: J(404, {"error": "Unexpected endpoint"}), LMSTUDIO_V0: J(404, {"error": "Unexpected"}),
         LMSTUDIO_OPENAI_MODELS: J(200, {"data": [{"id": "qwen", "object": "model"}]}),
         "call": J(400, {"error": NO_MODELS})},
        ModelLoadError, "Just in Time", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-load-never-finishes", "lmstudio",
        {LMSTUDIO_STATUS: J(200, lmstudio_models(loaded=False)), LMSTUDIO_LOAD: Reply.stall()},
        ModelLoadTimeoutError, "did not finish loading", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-load-fails", "lmstudio",
        {LMSTUDIO_STATUS: J(200, lmstudio_models(loaded=False)),
         LMSTUDIO_LOAD: J(400, {"error": {"message": "Error loading model: insufficient system resources",
                                          "type": "model_load_failed"}})},
        ModelLoadError, "insufficient system resources", True, cooldown_s=BASE_COOLDOWN),
    Row("lmstudio-answers-with-another-model", "lmstudio", {"call": J(200, openai_answer("hi", "gemma-3-1b"))},
        None, "", False, note="gemma-3-1b"),
]


# ---------------------------------------------------------------------------------------------
# Running one row


@dataclass
class Run:
    """What one call did: its result or error, the text it streamed, the rows and cooldown it left."""

    result: OrchestratedResult | None = None
    error: BaseException | None = None
    pieces: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    cooldown_s: float | None = None
    elapsed_s: float = 0.0


def call(orch: Orchestrator, model_id: str, *, stream: bool, fallback: bool, run: Run, on_loop: bool = False) -> None:
    started = time.monotonic()
    try:
        if on_loop:
            asyncio.run(call_on_loop(orch, model_id, stream, fallback, run))
        elif stream:
            chat_stream = orch.stream_chat(model_id, HELLO, fallback=fallback)
            for piece in chat_stream:
                run.pieces.append(piece)
            run.result = chat_stream.result
        else:
            run.result = orch.chat(model_id, HELLO, fallback=fallback)
    except BaseException as exc:
        run.error = exc
    run.elapsed_s = time.monotonic() - started
    run.rows = [(r.model, r.outcome, r.error_kind, r.fallback_from) for r in metric_rows(orch)]
    entry = orch.failures.get(model_id)
    run.cooldown_s = (entry.until - entry.since).total_seconds() if entry else None


async def call_on_loop(orch: Orchestrator, model_id: str, stream: bool, fallback: bool, run: Run) -> None:
    """The gateway's way: Orchestrator.achat or astream_chat on an event loop."""
    try:
        if not stream:
            run.result = await orch.achat(model_id, HELLO, fallback=fallback)
            return
        chat_stream = orch.astream_chat(model_id, HELLO, fallback=fallback)
        async for piece in chat_stream:
            run.pieces.append(piece)
        run.result = chat_stream.result
    finally:
        await orch.aclose()


def socket_base(row: Row, stack: list[Any]) -> dict[str, str]:
    """The broken base URL of a socket-level row."""
    if row.socket == "refused":
        port = RefusedPort()
        stack.append(port)
        return {row.shape: port.url}
    if row.socket == "blackhole":
        hole = Blackhole()
        stack.append(hole)
        return {row.shape: hole.url}
    if row.socket == "dns":
        return {row.shape: DNS_FAILURE_URL}
    return {}


def script(server: FaultServer, row: Row, shape: Shape, target: Shape) -> None:
    server.script(target.call_path(False), healthy(target))
    if shape.provider == "lmstudio":
        server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models(loaded=True)))
        server.script(LMSTUDIO_LOAD, Reply.json(200, {"instance_id": "qwen", "status": "loaded"}))
    server.script(shape.call_path(row.stream), healthy(shape, "from the faulty model"))
    for path, reply in row.routes.items():
        server.script(shape.call_path(row.stream) if path == "call" else path, reply)


def check_failed_run(row: Row, run: Run, model_id: str) -> None:
    assert run.error is not None, f"expected {row.error.__name__ if row.error else None}, got {run.result}"
    assert type(run.error) is row.error, f"{type(run.error).__name__}: {run.error}"
    assert row.says.lower() in str(run.error).lower(), str(run.error)
    if row.cause is not None:
        assert isinstance(run.error, StreamInterruptedError)
        assert type(run.error.cause) is row.cause
        assert run.pieces, "the text before the break reached the reader"
    if row.retry_after is not None:
        assert run.error.retry_after == pytest.approx(row.retry_after)
    assert run.rows == [(model_id, "error", row.error_kind, None)]


def check_cooldown(row: Row, run: Run) -> None:
    if row.cooldown_s is None:
        assert run.cooldown_s is None, "a caller error must not cool the model down"
    else:
        assert run.cooldown_s == pytest.approx(row.cooldown_s, abs=0.5)


# Every row runs twice: as the console calls (chat / stream_chat on its thread) and as the gateway does
# (achat / astream_chat on an event loop); the two must end the same way.
CASES = [(r, False) for r in ROWS] + [(r, True) for r in ROWS]


@pytest.mark.parametrize(("row", "on_loop"), CASES, ids=[f"{r.id}{'-on-loop' if loop else ''}" for r, loop in CASES])
def test_fault(row: Row, on_loop: bool, server: FaultServer, make_orch: OrchFactory) -> None:
    shape = SHAPES[row.shape]
    target = healthy_for(shape)
    script(server, row, shape, target)
    stack: list[Any] = []
    base_urls = socket_base(row, stack)
    baseline = running_threads()
    options: dict[str, Any] = {**(FAST if row.about_timing else ROOMY), "base_urls": base_urls,
                               "local_hosts": ("lmstudio",) if row.shape == "lmstudio" else ()}
    if shape.provider == "custom":
        options["inactive"] = ("custom:healthy",)
    orchs = [make_orch(**options), make_orch(**options)]
    runs = [Run(), Run()]
    threads = [
        threading.Thread(target=call, args=(orch, shape.model_id), kwargs={"stream": row.stream, "fallback": fb,
                                                                           "run": run, "on_loop": on_loop})
        for orch, fb, run in zip(orchs, (False, True), runs, strict=False)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for orch in orchs:
        orch.close()
    for s in stack:
        s.close()
    plain, with_fallback = runs

    if row.error is None:
        for run in runs:
            assert run.error is None and run.result is not None, repr(run.error)
            assert run.result.model_id == shape.model_id and not run.result.fell_back
            assert run.rows == [(shape.model_id, "ok", None, None)]
            if row.note:
                assert any(row.note in n for n in run.result.notes), run.result.notes
    else:
        # (a) fallback off: the documented class, a message naming the cause, one error row.
        check_failed_run(row, plain, shape.model_id)
        check_cooldown(row, plain)
        # (b) fallback on with a healthy model next door.
        if row.falls_back:
            assert with_fallback.error is None, repr(with_fallback.error)
            result = with_fallback.result
            assert result is not None and result.model_id == target.model_id and result.text == "fine"
            assert [a.error_kind for a in result.attempts] == [row.error_kind, None]
            assert with_fallback.rows == [
                (shape.model_id, "error", row.error_kind, None),
                (target.model_id, "ok", None, shape.model_id),
            ]
        else:
            check_failed_run(row, with_fallback, shape.model_id)
        check_cooldown(row, with_fallback)
    for run in runs:
        assert run.elapsed_s < 3.0, "a fault must not hang the caller"
    assert_nothing_left_behind(server, baseline)


def test_matrix_has_at_least_35_rows_covering_every_shape() -> None:
    assert len(ROWS) >= 35
    assert {r.shape for r in ROWS} == set(SHAPES)
    assert len({r.id for r in ROWS}) == len(ROWS)
