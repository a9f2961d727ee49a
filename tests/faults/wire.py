"""What each provider looks like on the fault server: paths, healthy answers, stream pieces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.faults.fault_server import Reply, Seen

FAKE_KEYS = {
    "openai": "sk-fault-openai-0123456789abcdef",
    "anthropic": "sk-ant-fault-0123456789abcdef",
    "google": "AIzaFault0123456789abcdefghij",
    "mistral": "mistral-fault-0123456789abcdef",
}
HELLO = [{"role": "user", "content": "Say hello"}]


@dataclass(frozen=True)
class Shape:
    """One provider on the fault server: its base path and the model a row calls."""

    provider: str
    base: str  # base URL path on the server (the provider's base URL minus the host)
    model: str

    @property
    def model_id(self) -> str:
        return f"{self.provider}:{self.model}"

    def call_path(self, stream: bool) -> str:
        """The path a chat (or stream) request of this shape goes to."""
        if self.provider == "anthropic":
            return f"{self.base}/v1/messages"
        if self.provider == "google":
            return f"{self.base}/v1/models/{self.model}:{'streamGenerateContent' if stream else 'generateContent'}"
        if self.provider == "lmstudio":
            return f"{self.base}/v1/chat/completions"
        return f"{self.base}/chat/completions"

    def models_path(self) -> str:
        if self.provider in ("anthropic", "lmstudio"):
            return f"{self.base}/v1/models"
        if self.provider == "google":
            return f"{self.base}/v1/models"
        return f"{self.base}/models"


SHAPES = {
    "openai": Shape("openai", "/openai/v1", "gpt-fault"),
    "anthropic": Shape("anthropic", "/anthropic", "claude-fault"),
    "google": Shape("google", "/google", "gemini-fault"),
    "mistral": Shape("mistral", "/mistral/v1", "mistral-fault"),
    "custom": Shape("custom", "/custom/v1", "vllm-fault"),
    "lmstudio": Shape("lmstudio", "/lmstudio", "qwen"),
}
# The healthy model a row falls back to: another provider, so a provider-wide failure does not exclude it.
HEALTHY = {"custom": Shape("openai", "/openai/v1", "healthy")}
HEALTHY_DEFAULT = Shape("custom", "/custom/v1", "healthy")

LMSTUDIO_STATUS = "/lmstudio/api/v1/models"
LMSTUDIO_LOAD = "/lmstudio/api/v1/models/load"
LMSTUDIO_V0 = "/lmstudio/api/v0/models"
LMSTUDIO_OPENAI_MODELS = "/lmstudio/v1/models"


def healthy_for(shape: Shape) -> Shape:
    return HEALTHY.get(shape.provider, HEALTHY_DEFAULT)


# ---------------------------------------------------------------------------------------------
# Bodies


def sse(*events: Any, event_names: tuple[str, ...] = ()) -> list[bytes]:
    """SSE pieces, one per event; strings are sent as raw data lines."""
    pieces = []
    for i, event in enumerate(events):
        data = event if isinstance(event, str) else json.dumps(event)
        name = f"event: {event_names[i]}\n" if event_names else ""
        pieces.append(f"{name}data: {data}\n\n".encode())
    return pieces


def openai_answer(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }


def openai_chunk(text: str, model: str) -> dict[str, Any]:
    return {"model": model, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def openai_stream(pieces: list[str], model: str, *, done: bool = True) -> list[bytes]:
    events: list[Any] = [openai_chunk(p, model) for p in pieces]
    events.append({"model": model, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces)}})
    if done:
        events.append("[DONE]")
    return sse(*events)


def anthropic_answer(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }


def anthropic_stream(pieces: list[str], model: str, *, stop: bool = True) -> list[bytes]:
    events: list[Any] = [{"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 5}}}]
    names = ["message_start"]
    for p in pieces:
        events.append({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        names.append("content_block_delta")
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})
    names.append("message_delta")
    if stop:
        events.append({"type": "message_stop"})
        names.append("message_stop")
    return sse(*events, event_names=tuple(names))


def gemini_chunk(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}], "modelVersion": "gemini-fault"}


def gemini_answer(text: str) -> dict[str, Any]:
    chunk = gemini_chunk(text)
    chunk["candidates"][0]["finishReason"] = "STOP"
    chunk["usageMetadata"] = {"promptTokenCount": 5, "candidatesTokenCount": 2}
    return chunk


def lmstudio_models(loaded: bool, name: str = "qwen") -> dict[str, Any]:
    instances = [{"id": name, "config": {"context_length": 4096}}] if loaded else []
    return {"models": [{"type": "llm", "key": name, "display_name": name, "loaded_instances": instances}]}


def answer(shape: Shape, text: str = "Hello", *, answered_by: str | None = None) -> Reply:
    """A healthy whole answer in this shape."""
    model = answered_by or shape.model
    if shape.provider == "anthropic":
        return Reply.json(200, anthropic_answer(text, model))
    if shape.provider == "google":
        return Reply.json(200, gemini_answer(text))
    return Reply.json(200, openai_answer(text, model))


def stream(shape: Shape, pieces: list[str]) -> Reply:
    """A healthy stream in this shape."""
    if shape.provider == "anthropic":
        return Reply.stream(anthropic_stream(pieces, shape.model))
    if shape.provider == "google":
        return Reply.stream(sse(*(gemini_chunk(p) for p in pieces)))
    return Reply.stream(openai_stream(pieces, shape.model))


def healthy(shape: Shape, text: str = "fine") -> Any:
    """A script answering as a stream or as a whole, as the request asks."""

    def reply(seen: Seen) -> Reply:
        wants_stream = "streamGenerateContent" in seen.path or bool((seen.json() or {}).get("stream"))
        return stream(shape, [text]) if wants_stream else answer(shape, text)

    return reply
