"""OpenAI's answer shapes for an orchestrated result: chat.completion, usage, finish reasons, the headers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from orchestrator_core.errors import (
    AllModelsFailedError,
    ContentFilteredError,
    OrchestratorError,
    StreamInterruptedError,
)
from orchestrator_core.types import OrchestratedResult

NO_USAGE: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


def completion(result: OrchestratedResult) -> dict[str, Any]:
    """OpenAI's chat.completion for an orchestrated result; model names who really answered."""
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": finish_reason(result.result.finish_reason), "logprobs": None}],
        "usage": usage(result),
    }


def usage(result: OrchestratedResult) -> dict[str, int | None]:
    u = result.result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def finish_reason(reason: str | None) -> str:
    """Every provider's stop reason as one of OpenAI's (Anthropic end_turn, Gemini MAX_TOKENS, ...)."""
    lowered = (reason or "stop").lower()
    if lowered in ("length", "max_tokens", "max_output_tokens"):
        return "length"
    if "filter" in lowered or lowered in ("safety", "recitation", "blocklist", "prohibited_content"):
        return "content_filter"
    return "stop"


def header_safe(headers: dict[str, str]) -> dict[str, str]:
    """Header values as HTTP can carry them: a model id is text from a host or a client (a GGUF file name, a
    Cyrillic model name, a control character), and a value outside printable ASCII made the answer a 500 (latin-1
    cannot encode it, h11 refuses a control character) after the model had answered. Such characters are
    percent-encoded as UTF-8, as in a URL."""
    return {name: value if value.isascii() and value.isprintable() else
            "".join(c if c.isascii() and c.isprintable() else quote(c, safe="") for c in value)
            for name, value in headers.items()}


def result_headers(result: OrchestratedResult) -> dict[str, str]:
    headers = {"x-orchestrator-model": result.model_id, "x-orchestrator-attempts": str(len(result.attempts)),
               "x-request-id": result.request_id}
    if result.fell_back:
        headers["x-orchestrator-fallback-from"] = result.requested_model
    if result.group:  # a call through a model group: the body's model is the member that answered
        headers["x-orchestrator-group"] = result.group
    # USD as a plain decimal number; "unknown" for an unpriced model or an answer without usage (never "0").
    cost = result.cost_usd
    headers["x-orchestrator-cost-usd"] = "unknown" if cost is None else f"{cost:.10f}".rstrip("0").rstrip(".") or "0"
    return header_safe(headers)


# -- a refusal is an answer ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """A call that ended in a refusal or safety stop: OpenAI answers it with 200 and finish_reason content_filter.

    The core still records it as a failed attempt (and falls back from it when FALLBACK_ON_CONTENT_FILTER
    says so); only when no model answered is the refusal the answer the client gets.
    """

    model_id: str
    error: ContentFilteredError
    requested_model: str
    request_id: str
    attempts: int

    def headers(self) -> dict[str, str]:
        headers = {"x-orchestrator-model": self.model_id, "x-orchestrator-attempts": str(self.attempts),
                   "x-request-id": self.request_id}
        if self.model_id != self.requested_model:
            headers["x-orchestrator-fallback-from"] = self.requested_model
        return header_safe(headers)

    def message(self) -> dict[str, Any]:
        """The assistant message: whatever text came before the stop, and the refusal sentence if any."""
        return {"role": "assistant", "content": self.error.partial_text, "refusal": self.error.refusal}


def refusal_of(exc: OrchestratorError) -> Refusal | None:
    """The refusal that ended this call, when no model answered but one refused; else None."""
    if isinstance(exc, AllModelsFailedError) and exc.refused is not None:
        model_id, error = exc.refused
    elif isinstance(exc, ContentFilteredError):
        model_id, error = (exc.call_attempts[-1].model if exc.call_attempts else f"{exc.provider}:{exc.model}"), exc
    else:
        return None
    requested = exc.call_attempts[0].model if exc.call_attempts else model_id
    return Refusal(model_id, error, requested, exc.request_id or "", max(len(exc.call_attempts), 1))


def is_content_stop(exc: OrchestratorError) -> bool:
    """A stream cut by a safety stop after its first token (its text so far stands; the stream ends normally)."""
    return isinstance(exc, StreamInterruptedError) and isinstance(exc.cause, ContentFilteredError)


def refused_completion(refusal: Refusal) -> dict[str, Any]:
    """OpenAI's chat.completion for a refusal: finish_reason content_filter, no token counts."""
    return {
        "id": f"chatcmpl-{refusal.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": refusal.model_id,
        "choices": [{"index": 0, "message": refusal.message(), "finish_reason": "content_filter", "logprobs": None}],
        "usage": NO_USAGE,
    }
