"""Pydantic models of the API's bodies and answers: the OpenAPI schema (/api/openapi.json) is the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator_core.loader import HostStatus

MAX_TOKENS_LIMIT = 2**31 - 1

# -- /api ------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    type: str
    message: str
    model: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class HostHealth(BaseModel):
    provider: str
    reachable: bool


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    hosts: list[HostHealth]


class ModelStatusOut(BaseModel):
    model_id: str
    state: str
    ready: bool
    detail: str
    local: bool
    checked_at: datetime
    cooldown_until: datetime | None = None


class ModelList(BaseModel):
    models: list[ModelStatusOut]


class WaitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float | None = Field(default=None, gt=0, le=3600, description="default LOAD_TIMEOUT_S")


class Alternative(BaseModel):
    model_id: str
    alternative: str | None
    ranked: list[str]


class ResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str | None = Field(default=None, description="one model, or none for all")


class ResetAnswer(BaseModel):
    cleared: int


class FailureOut(BaseModel):
    model_id: str
    error_type: str
    message: str
    since: datetime
    until: datetime
    failure_count: int
    active: bool


class FailureList(BaseModel):
    failures: list[FailureOut]


class HostList(BaseModel):
    hosts: list[HostStatus]  # the core's own dataclass: one definition of a host's status


# -- /v1 (OpenAI's shapes) -------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """What /v1/chat/completions reads. Unknown fields are kept so the route can name them in its 400."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=512)
    messages: list[ChatMessageIn] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    # At most int32: llama-server and other hosts parse it as one, and a host's 500 for a count it cannot read
    # would cool its model down for every caller (MAX_TOKENS_LIMIT).
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    user: str | None = None


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    state: str
    ready: bool


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = Field(default=None, description="the refusal sentence (finish_reason content_filter)")


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class UsageOut(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    system_fingerprint: None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


def api_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI 'responses' for the error statuses a management route can answer."""
    return {status: {"model": ErrorBody} for status in statuses}


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OpenAIErrorBody} for status in statuses}
