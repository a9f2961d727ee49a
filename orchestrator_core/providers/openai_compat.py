"""OpenAI Chat Completions wire format: serves OpenAI, Mistral, Genspark, custom endpoints and local /v1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from ..errors import bad_response, content_filtered
from ..types import ChatParams, ChatResult, Message, StreamEvent, TextDelta, Usage, token_count
from .base import Provider, event_json


class OpenAICompatibleProvider(Provider):
    """POST {base}/chat/completions with Bearer auth; SSE chunks ending in ``data: [DONE]``."""

    display_name = "OpenAI-compatible endpoint"
    needs_key = False
    chat_path: ClassVar[str] = "/chat/completions"
    models_path: ClassVar[str] = "/models"
    max_tokens_field: ClassVar[str] = "max_tokens"
    forbidden_list_means_restricted = True  # OpenAI project keys without the models scope
    send_stream_usage_option: ClassVar[bool] = True  # stream_options.include_usage (Mistral rejects it)
    # Model-name prefixes that answer a non-default temperature or top_p with a 400: sampling is dropped there,
    # so a fallback hop never turns a good request into a bad one. Endpoints we know nothing about send it.
    fixed_sampling_models: ClassVar[tuple[str, ...]] = ()

    # -- request building ---------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        key = self.require_key() if self.needs_key else self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def body(self, model: str, messages: list[Message], params: ChatParams, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], "stream": stream}
        if params.max_tokens is not None:
            body[self.max_tokens_field] = params.max_tokens
        if self.takes_sampling(model):
            if params.temperature is not None:
                body["temperature"] = params.temperature
            if params.top_p is not None:
                body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        if stream and self.send_stream_usage_option:
            body["stream_options"] = {"include_usage": True}
        return body

    def takes_sampling(self, model: str) -> bool:
        """False for models whose family rejects temperature / top_p (see ``fixed_sampling_models``)."""
        return not model.lower().startswith(self.fixed_sampling_models)

    # -- operations ---------------------------------------------------------------------------
    def chat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        data = self.request_json(
            "POST", self.chat_path, model=model, headers=self.headers(),
            json=self.body(model, messages, params, stream=False),
        )
        self.raise_for_error_payload(data, model)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad_response(self.name, model, "no choices in the answer")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise bad_response(self.name, model, "missing choices[0].message")
        text, finish = _content_text(message.get("content")), choices[0].get("finish_reason")
        self.raise_for_refusal(model, _content_text(message.get("refusal")), finish, text)
        return ChatResult(
            text=text,
            finish_reason=finish,
            usage=_usage(data.get("usage")),
            model=str(data.get("model") or model),
            provider=self.name,
        )

    def stream_chat(self, model: str, messages: list[Message], params: ChatParams) -> Iterator[StreamEvent]:
        parts = self.answer_text(model)
        refusal: list[str] = []  # delta.refusal pieces: kept for the error, never yielded as answer text
        finish: str | None = None
        usage = Usage()
        answered_by = model
        done = False
        events = self.stream_events(
            "POST", self.chat_path, model=model, headers=self.headers(),
            json=self.body(model, messages, params, stream=True),
        )
        with contextlib.closing(events):  # after [DONE] the connection goes back to the pool at once
            for event in events:
                if event.data.strip() == "[DONE]":
                    done = True
                    break
                if not event.data.strip():
                    continue
                chunk = event_json(event, provider=self.name, model=model)
                self.raise_for_error_payload(chunk, model)
                if not isinstance(chunk, dict):
                    raise bad_response(self.name, model, "a stream chunk is not a JSON object")
                answered_by = str(chunk.get("model") or answered_by)
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        raise bad_response(self.name, model, "a stream choice is not a JSON object")
                    delta = choice.get("delta") or {}
                    text = _content_text(delta.get("content"))
                    if text:
                        parts.add(text)
                        yield TextDelta(text)
                    refusal.append(_content_text(delta.get("refusal")))
                    finish = choice.get("finish_reason") or finish
        self.raise_for_refusal(model, "".join(refusal), finish, str(parts), field="delta.refusal")
        if not done:
            raise bad_response(self.name, model, "the stream ended without its [DONE] marker")
        yield ChatResult(str(parts), finish, usage, answered_by, self.name)

    def list_models(self) -> list[str]:
        data = self.request_json("GET", self.models_path, headers=self.headers())
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise bad_response(self.name, None, "the model list has no 'data' array")
        return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]

    # -- errors inside a 200 ------------------------------------------------------------------
    def raise_for_refusal(
        self, model: str, refusal: str, finish: str | None, text: str, *, field: str = "message.refusal"
    ) -> None:
        """A refusal (``message.refusal`` / ``delta.refusal``) or a ``content_filter`` stop is never a blank answer."""
        if refusal.strip():
            raise content_filtered(self.name, model, reason="refusal", field=field, refusal=refusal,
                                   partial_text=text, secrets=self.secrets)
        if finish == "content_filter":
            raise content_filtered(self.name, model, reason="content_filter", field="finish_reason",
                                   partial_text=text, secrets=self.secrets)

    def raise_for_error_payload(self, data: Any, model: str) -> None:
        """OpenAI-style servers may put ``{"error": ...}`` in a 200 body or a stream chunk."""
        if isinstance(data, dict) and data.get("error"):
            raise self.in_band_error(data, model)


def _content_text(content: Any) -> str:
    """Text of a message: a string, or Mistral's list of typed chunks (keep only type "text")."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return str(content)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(token_count(raw.get("prompt_tokens")), token_count(raw.get("completion_tokens")), token_count(cached))
