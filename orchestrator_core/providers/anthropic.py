"""Anthropic Messages API: x-api-key auth, a top-level system prompt, required max_tokens, named SSE events."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx

from ..errors import EmptyPromptError, bad_response, content_filtered
from ..types import ChatParams, ChatResult, Message, StreamEvent, TextDelta, Usage, token_count
from .base import Provider, event_json, system_and_turns

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"


class AnthropicProvider(Provider):
    """POST {base}/v1/messages; the base URL has no /v1 (https://api.anthropic.com)."""

    kind = name = "anthropic"
    display_name = "Anthropic"
    default_base_url = "https://api.anthropic.com"
    base_url_env_vars = ("ANTHROPIC_BASE_URL",)
    key_env_vars = ("ANTHROPIC_API_KEY",)
    needs_key = True
    price_table_id = "anthropic"
    option_names = ("anthropic_version",)  # the seeded connection's: ANTHROPIC_VERSION
    # The anthropic-version the current SDK sends (anthropic 2.13 to 2.15, _constants.py); ANTHROPIC_VERSION
    # pins another one, such as 2023-06-01 for an older gateway.
    default_version: ClassVar[str] = "2026-10-21"
    # Model-name prefixes whose family rejects temperature, top_p and top_k with a 400. Source: the wire reference
    # (shared/reference/providers.md §2.2: "removed" for Opus 4.7 / 4.8 / Opus 5 / Fable 5 and 5.1, per Anthropic's
    # anthropics/skills; §9-10: anthropic 2.x messages.create has no temperature, the newest models reject
    # sampling, hence Sonnet 5 and Mythos 5 too). Sampling fields are never sent to these; others get them.
    fixed_sampling_models: ClassVar[tuple[str, ...]] = (
        "claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-fable-5", "claude-sonnet-5",
        "claude-mythos-5",
    )

    def __init__(
        self,
        client: httpx.Client,
        api_key: str | None = None,
        *,
        anthropic_version: str | None = None,
        default_max_tokens: int = 1024,
        **options: Any,
    ) -> None:
        super().__init__(client, api_key, **options)
        self.anthropic_version = anthropic_version or self.default_version
        self.default_max_tokens = default_max_tokens

    # -- request building ---------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.require_key(),
            "anthropic-version": self.anthropic_version,
            "content-type": "application/json",
        }

    def body(self, model: str, messages: list[Message], params: ChatParams, *, stream: bool) -> dict[str, Any]:
        """The Messages request; sampling fields only when asked (newer Claude models reject them)."""
        system, turns = system_and_turns(messages)
        # The API rejects a conversation that opens with an assistant turn. Inventing a user turn would put
        # words in the user's mouth, so a leading assistant turn (typically a greeting) is left out.
        while turns and turns[0][0] == "assistant":
            turns.pop(0)
        if not turns:
            raise EmptyPromptError(
                "Anthropic needs at least one user message; this conversation has only assistant or system text.",
                provider=self.name,
                model=model,
            )
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens if params.max_tokens is not None else self.default_max_tokens,
            "messages": [{"role": role, "content": "\n\n".join(texts)} for role, texts in turns],
        }
        if turns[-1][0] == "assistant":
            # A final assistant turn is a prefill, which the API rejects when it ends in whitespace.
            body["messages"][-1]["content"] = body["messages"][-1]["content"].rstrip()
        if system:
            body["system"] = system
        if self.takes_sampling(model):
            if params.temperature is not None:
                body["temperature"] = params.temperature
            if params.top_p is not None:
                body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        if stream:
            body["stream"] = True
        return body

    def takes_sampling(self, model: str) -> bool:
        """False for the Claude families that reject sampling parameters (see ``fixed_sampling_models``)."""
        return not model.lower().startswith(self.fixed_sampling_models)

    def raise_for_refusal(self, model: str, stop_reason: Any, text: str) -> None:
        """``stop_reason: "refusal"``: the model declined (the partial text, if any, goes with the error)."""
        if stop_reason == "refusal":
            raise content_filtered(self.name, model, reason="refusal", field="stop_reason", partial_text=text,
                                   secrets=self.secrets)

    # -- operations ---------------------------------------------------------------------------
    def chat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        data = self.request_json(
            "POST", MESSAGES_PATH, model=model, headers=self.headers(),
            json=self.body(model, messages, params, stream=False),
        )
        if isinstance(data, dict) and data.get("type") == "error":
            raise self.in_band_error(data, model)
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, list):
            raise bad_response(self.name, model, "no content blocks in the answer")
        text = "".join(_block_text(block) for block in content)
        self.raise_for_refusal(model, data.get("stop_reason"), text)
        return ChatResult(
            text=text,
            finish_reason=data.get("stop_reason"),
            usage=_usage(data.get("usage")),
            model=str(data.get("model") or model),
            provider=self.name,
        )

    def stream_chat(self, model: str, messages: list[Message], params: ChatParams) -> Iterator[StreamEvent]:
        parts = self.answer_text(model)
        state = _StreamState(answered_by=model)
        events = self.stream_events(
            "POST", MESSAGES_PATH, model=model, headers=self.headers(),
            json=self.body(model, messages, params, stream=True),
        )
        with contextlib.closing(events):
            for event in events:
                if event.event == "ping" or not event.data.strip():
                    continue
                payload = event_json(event, provider=self.name, model=model)
                if not isinstance(payload, dict):
                    raise bad_response(self.name, model, "a stream event is not a JSON object")
                kind = event.event if event.event != "message" else str(payload.get("type"))
                if kind == "error" or payload.get("type") == "error":
                    raise self.in_band_error(payload, model)  # e.g. overloaded_error after HTTP 200
                if kind == "message_stop":
                    state.done = True
                    break
                text = state.apply(kind, payload)
                if text:
                    parts.add(text)
                    yield TextDelta(text)
        self.raise_for_refusal(model, state.stop_reason, str(parts))
        if not state.done:
            raise bad_response(self.name, model, "the stream ended without its message_stop event")
        usage = Usage(state.input_tokens, state.output_tokens, state.cached_tokens)
        yield ChatResult(str(parts), state.stop_reason, usage, state.answered_by, self.name)

    def list_models(self) -> list[str]:
        data = self.request_json("GET", MODELS_PATH, headers=self.headers(), params={"limit": 1000})
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise bad_response(self.name, None, "the model list has no 'data' array")
        return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]


class _StreamState:
    """What a Messages stream has said so far besides text."""

    def __init__(self, answered_by: str) -> None:
        self.answered_by = answered_by
        self.stop_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.done = False

    def apply(self, kind: str, payload: dict[str, Any]) -> str:
        """Record one event; return its text delta ("" for events without text)."""
        if kind == "message_start":
            message = payload.get("message") or {}
            self.answered_by = str(message.get("model") or self.answered_by)
            self._take_usage(message.get("usage"))
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":  # thinking and tool-input deltas are not answer text
                return str(delta.get("text") or "")
        elif kind == "message_delta":
            self.stop_reason = (payload.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._take_usage(payload.get("usage"))
        return ""

    def _take_usage(self, raw: Any) -> None:
        usage = _usage(raw)
        # message_delta counts are cumulative, so the latest value replaces the earlier one.
        self.input_tokens = usage.prompt_tokens if usage.prompt_tokens is not None else self.input_tokens
        self.output_tokens = usage.completion_tokens if usage.completion_tokens is not None else self.output_tokens
        self.cached_tokens = usage.cached_tokens if usage.cached_tokens is not None else self.cached_tokens


def _block_text(block: Any) -> str:
    """Text of one content block; thinking, tool_use and fallback blocks are not answer text."""
    if isinstance(block, dict) and block.get("type") == "text":
        return str(block.get("text") or "")
    return ""


def _usage(raw: Any) -> Usage:
    """input_tokens excludes cached prompt tokens, which still count as prompt tokens."""
    if not isinstance(raw, dict):
        return Usage()
    prompt, cached = token_count(raw.get("input_tokens")), token_count(raw.get("cache_read_input_tokens"))
    if prompt is not None:
        prompt += (token_count(raw.get("cache_creation_input_tokens")) or 0) + (cached or 0)
    return Usage(prompt, token_count(raw.get("output_tokens")), cached)
