"""OpenAI's answer shapes for an orchestrated result: chat.completion, usage, finish reasons, the headers."""

from __future__ import annotations

import time
from typing import Any

from orchestrator_core.types import OrchestratedResult


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


def result_headers(result: OrchestratedResult) -> dict[str, str]:
    headers = {"x-orchestrator-model": result.model_id, "x-orchestrator-attempts": str(len(result.attempts)),
               "x-request-id": result.request_id}
    if result.fell_back:
        headers["x-orchestrator-fallback-from"] = result.requested_model
    # USD as a plain decimal number; "unknown" for an unpriced model or an answer without usage (never "0").
    cost = result.cost_usd
    headers["x-orchestrator-cost-usd"] = "unknown" if cost is None else f"{cost:.10f}".rstrip("0").rstrip(".") or "0"
    return headers
