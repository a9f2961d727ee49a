"""Plain data types shared by providers, the model manager, the orchestrator and the console."""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypedDict

from .errors import EmptyPromptError, InvalidModelIdError


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatParams:
    """Generation parameters; None means "do not send", so the provider's default applies."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None


def token_count(value: object) -> int | None:
    """A token count a provider reported, or None when it is not a whole number of at least 0.

    A host's usage is JSON: a string ("12"), a negative or fractional number, true or an object there would
    break the answer's usage sum or the metric row after the answer came, and a negative count would lower the
    spend a budget is checked against."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 0 else None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None  # every input token, cached ones included
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # input tokens read from the provider's prompt cache (billed lower)

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


@dataclass(frozen=True)
class ChatResult:
    """One provider answer: the text, why it stopped, tokens, and the model that actually answered."""

    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    provider: str


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed text."""

    text: str


StreamEvent = TextDelta | ChatResult  # a stream yields TextDelta..., then exactly one ChatResult


class KeyCheck(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    UNVERIFIED = "could_not_verify"


@dataclass(frozen=True)
class KeyTestResult:
    status: KeyCheck
    detail: str
    latency_ms: float
    tested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return self.status is KeyCheck.OK


class ModelState(enum.StrEnum):
    LOADED = "loaded"
    SLEEPING = "sleeping"  # llama-server --sleep-idle-seconds: weights freed, process kept, wakes on a request
    LOADING = "loading"
    DOWNLOADING = "downloading"  # llama-server router fetching the model's files
    NOT_LOADED = "not_loaded"
    UNLOADING = "unloading"  # unload requested, the host still lists the model as in memory
    LOAD_FAILED = "load_failed"  # the host's last load of this model failed (llama-server: exit code)
    HOST_DOWN = "host_down"
    COOLING_DOWN = "cooling_down"
    EXTERNAL_READY = "external_ready"
    EXTERNAL_NO_KEY = "external_no_key"
    EXTERNAL_KEY_REJECTED = "external_key_rejected"  # the key a call would use failed its last test: rejected

    @property
    def ready(self) -> bool:
        """A prompt may be sent right away (a sleeping llama-server model wakes on that prompt; nothing can load it)."""
        return self in (ModelState.LOADED, ModelState.SLEEPING, ModelState.EXTERNAL_READY)

    @property
    def usable(self) -> bool:
        """A prompt may be sent, after a load if needed."""
        return self.ready or self in (ModelState.NOT_LOADED, ModelState.LOADING)


@dataclass(frozen=True)
class ModelFacts:
    """What a local host reports about a model beside its state (None where it does not say)."""

    size_bytes: int | None = None  # the model's files
    context_length: int | None = None  # the loaded instance's context window
    max_context_length: int | None = None  # the most the model supports
    memory_bytes: int | None = None  # in (GPU) memory while loaded


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    state: ModelState
    detail: str
    checked_at: datetime
    cooldown_until: datetime | None = None
    local: bool = False
    progress: float | None = None  # percent, while loading or downloading, where the host reports it
    facts: ModelFacts | None = None  # size, context, memory: where the host reports them


@dataclass(frozen=True)
class HostModel:
    """One model as a local host lists it (one request per host gives all of them)."""

    name: str
    state: ModelState  # one of the host-reported states (never COOLING_DOWN, HOST_DOWN, UNLOADING, EXTERNAL_*)
    instance_ids: tuple[str, ...] = ()
    detail: str = ""
    progress: float | None = None  # percent, while loading or downloading, where the host reports it
    facts: ModelFacts | None = None


# Every column holding a model id (ai_models, call_metrics, model_failures, the rollups) is VARCHAR(255).
MAX_MODEL_ID_LEN = 255


@dataclass(frozen=True)
class ModelRef:
    """A model addressed as ``connection:model``, parsed once at the facade and passed down a call."""

    provider: str  # the connection's name (the seeded connection of a kind is named after it): see connection
    name: str

    @property
    def connection(self) -> str:
        return self.provider

    @functools.cached_property  # read for every model on every status list and fallback hop
    def id(self) -> str:
        return f"{self.provider}:{self.name}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, model_id: str) -> ModelRef:
        """Split ``provider:model``; the model part may itself contain colons (``ollama:llama3.2:3b``)."""
        return _parse_model_id(model_id)


@functools.lru_cache(maxsize=4096)  # a call parses its model ids several times; there are few distinct ones
def _parse_model_id(model_id: str) -> ModelRef:
    text = (model_id or "").strip()
    provider, sep, name = text.partition(":")
    if not sep or not provider.strip() or not name.strip() or _WHITESPACE.search(text):
        raise InvalidModelIdError(
            f"Model id {model_id[:MAX_MODEL_ID_LEN]!r} is not of the form provider:model "
            "(for example lmstudio:qwen2.5-7b-instruct or openai:gpt-4o-mini)."
        )
    if len(text) > MAX_MODEL_ID_LEN:
        raise InvalidModelIdError(
            f"Model id {text[:60]!r}… is {len(text)} characters long, over the limit of {MAX_MODEL_ID_LEN}; "
            "rename the model on its host (or use a shorter alias) to use it here."
        )
    return ModelRef(provider.lower(), name)


_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Attempt:
    """One try of one model within a call: what the console shows and the metrics record."""

    model: str
    outcome: Literal["ok", "error", "skipped"]
    latency_ms: float
    error_kind: str | None = None
    error: str | None = None
    ttft_ms: float | None = None
    fallback_from: str | None = None
    cost_usd: float | None = None  # None: unknown (unpriced model or no usage reported), never 0 for that


@dataclass(frozen=True)
class OrchestratedResult:
    """What ``Orchestrator.chat`` returns: the answer, who gave it, and how it got there."""

    result: ChatResult
    model_id: str
    requested_model: str
    attempts: tuple[Attempt, ...]
    latency_ms: float
    ttft_ms: float | None
    request_id: str
    notes: tuple[str, ...] = ()
    group: str | None = None  # the model group asked for, when the call went through one (model_id: its member)

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def fell_back(self) -> bool:
        return self.model_id != self.requested_model

    @property
    def cost_usd(self) -> float | None:
        """What the answer cost in USD; None when unknown (unpriced model, no usage reported)."""
        answered = [a for a in self.attempts if a.outcome == "ok"]
        return answered[-1].cost_usd if answered else None

    @property
    def failed_cost_usd(self) -> float | None:
        """What the failed attempts before the answer cost, where known; None when none reported a cost."""
        known = [a.cost_usd for a in self.attempts if a.outcome == "error" and a.cost_usd is not None]
        return sum(known) if known else None

    @property
    def fallback_path(self) -> list[str]:
        return [a.model for a in self.attempts if a.outcome != "skipped"]


def validate_messages(messages: list[Message]) -> list[Message]:
    """Reject an empty conversation or one whose user turns are all blank."""
    if not messages:
        raise EmptyPromptError("The prompt is empty; type a message before sending.")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise EmptyPromptError(
                "Each message needs a role of system, user or assistant and text content; "
                f"got role {m.get('role')!r}."
            )
    if not any(m["role"] != "system" and m["content"].strip() for m in messages):
        raise EmptyPromptError("The prompt is empty or only whitespace; type a message before sending.")
    return messages
