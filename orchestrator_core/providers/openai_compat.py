"""OpenAI Chat Completions wire format: serves OpenAI, Mistral, Genspark, custom endpoints and local /v1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from ..errors import bad_response, content_filtered
from ..types import ChatParams, ChatResult, Message, StreamEvent, TextDelta, Usage, token_count
from .base import Provider, data_json


class OpenAICompatibleProvider(Provider):
    """POST {base}/chat/completions with Bearer auth; SSE chunks ending in ``data: [DONE]``."""

    display_name = "OpenAI-compatible endpoint"
    needs_key = False
    native_async = True  # astream_chat reads on the event loop (providers/aio.py); achat answers there
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
        return self.answer_of(data, model)

    async def achat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        from . import aio  # noqa: PLC0415 - imports aiohttp, which only the event loop's calls need

        data = await aio.request_json(self, "POST", self.chat_path, model=model, headers=self.headers(),
                                      body=self.body(model, messages, params, stream=False))
        return self.answer_of(data, model)

    def answer_of(self, data: Any, model: str) -> ChatResult:
        """The answer in a chat completion body; an error, refusal or malformed body raises its error class."""
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
        answer = ChunkParser(self, model)
        events = self.stream_events(
            "POST", self.chat_path, model=model, headers=self.headers(),
            json=self.body(model, messages, params, stream=True),
        )
        with contextlib.closing(events):  # after [DONE] the connection goes back to the pool at once
            for event in events:
                yield from answer.feed(event.data)
                if answer.done:
                    break
        yield answer.result()

    async def astream_chat(self, model: str, messages: list[Message], params: ChatParams
                           ) -> AsyncIterator[StreamEvent]:
        from . import aio  # noqa: PLC0415 - imports aiohttp, which only the event loop's streams need

        answer = ChunkParser(self, model)
        events = aio.stream_events(self, "POST", self.chat_path, model=model, headers=self.headers(),
                                   body=self.body(model, messages, params, stream=True), last="[DONE]")
        async with contextlib.aclosing(events):
            async for event in events:
                for delta in answer.feed(event.data):
                    yield delta
                if answer.done:
                    break  # the result goes out before the connection is let go (that waits for the body's end)
            yield answer.result()

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


class ChunkParser:
    """One streamed answer's chunks, fed one event's data at a time: stream_chat and astream_chat share it."""

    def __init__(self, provider: OpenAICompatibleProvider, model: str) -> None:
        self.provider = provider
        self.model = model
        self.parts = provider.answer_text(model)
        self.refusal: list[str] = []  # delta.refusal pieces: kept for the error, never yielded as answer text
        self.finish: str | None = None
        self.usage = Usage()
        self.answered_by = model
        self.done = False  # the [DONE] marker came

    def feed(self, data: str) -> list[TextDelta]:
        """The text pieces of one event's data; an error, malformed or non-object chunk raises its error class."""
        if data.strip() == "[DONE]":
            self.done = True
            return []
        if not data.strip():
            return []
        provider, model = self.provider, self.model
        chunk = data_json(data, provider=provider.name, model=model)
        provider.raise_for_error_payload(chunk, model)
        if not isinstance(chunk, dict):
            raise bad_response(provider.name, model, "a stream chunk is not a JSON object")
        self.answered_by = str(chunk.get("model") or self.answered_by)
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        return [delta for choice in chunk.get("choices") or [] if (delta := self._choice(choice))]

    def result(self) -> ChatResult:
        """The whole answer once the stream ended; a refusal, content_filter or missing [DONE] raises instead."""
        text = str(self.parts)
        self.provider.raise_for_refusal(self.model, "".join(self.refusal), self.finish, text, field="delta.refusal")
        if not self.done:
            raise bad_response(self.provider.name, self.model, "the stream ended without its [DONE] marker")
        return ChatResult(text, self.finish, self.usage, self.answered_by, self.provider.name)

    def _choice(self, choice: Any) -> TextDelta | None:
        if not isinstance(choice, dict):
            raise bad_response(self.provider.name, self.model, "a stream choice is not a JSON object")
        delta = choice.get("delta") or {}
        self.refusal.append(_content_text(delta.get("refusal")))
        self.finish = choice.get("finish_reason") or self.finish
        text = _content_text(delta.get("content"))
        if not text:
            return None
        self.parts.add(text)
        return TextDelta(text)


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
