"""A host's usage block is JSON it wrote: a count that is not a whole number of at least 0 is unknown, never
summed, priced or stored as is (a string made the gateway's total_tokens a 500 after the answer; a negative
count lowered the spend a budget is checked against)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from orchestrator_core.providers.anthropic import AnthropicProvider
from orchestrator_core.providers.custom import CustomProvider
from orchestrator_core.providers.gemini import GeminiProvider
from orchestrator_core.types import ChatParams, Message, Usage, token_count

HELLO: list[Message] = [{"role": "user", "content": "Hi"}]
BAD = ("12", -40, True, 1.5, {"n": 1}, None)


def test_token_count_keeps_whole_numbers_of_at_least_zero_only() -> None:
    assert [token_count(v) for v in (0, 12, 12.0, 2**40)] == [0, 12, 12, 2**40]
    assert [token_count(v) for v in (*BAD, float("nan"), float("inf"), -0.5)] == [None] * 9


def _chat(provider_class: type[Any], base: str, path: str, body: dict[str, Any]) -> Usage:
    with respx.mock, httpx.Client(base_url=base) as client:
        respx.post(f"{base}{path}").respond(json=body)
        return provider_class(client, "key-0123456789abcdef").chat("m", HELLO, ChatParams()).usage  # type: ignore[no-any-return]


@pytest.mark.parametrize("bad", BAD)
def test_openai_compatible_usage_with_a_bad_count_is_unknown(bad: object) -> None:
    usage = _chat(CustomProvider, "http://127.0.0.1:8000/v1", "/chat/completions", {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hey"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": bad, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": bad}}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.total_tokens) == (None, 3, None, 3)


@pytest.mark.parametrize("bad", BAD)
def test_anthropic_usage_with_a_bad_count_is_unknown(bad: object) -> None:
    usage = _chat(AnthropicProvider, "https://api.anthropic.com", "/v1/messages", {
        "type": "message", "role": "assistant", "model": "m", "content": [{"type": "text", "text": "Hey"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": bad, "cache_creation_input_tokens": bad,
                  "cache_read_input_tokens": bad}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (5, None, None)


@pytest.mark.parametrize("bad", BAD)
def test_gemini_usage_with_a_bad_count_is_unknown(bad: object) -> None:
    usage = _chat(GeminiProvider, "https://generativelanguage.googleapis.com", "/v1/models/m:generateContent", {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hey"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": bad, "candidatesTokenCount": 2, "thoughtsTokenCount": bad}})
    assert (usage.prompt_tokens, usage.completion_tokens) == (None, 2)
