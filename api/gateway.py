"""/v1: an OpenAI-compatible gateway. Every chat runs through Orchestrator exactly as the chat page's does:
check-and-load, fallback (header ``x-orchestrator-fallback: off`` turns it off), metrics, cooldown.

Parameters the core knows are passed on; harmless ones are ignored (``user``, ``n: 1``, ``store``, ...);
anything else it cannot honour yet (``tools``, ``response_format``, image parts, ``n > 1``, ...) is a 400
that names it, never silently dropped.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from orchestrator_core.errors import InvalidParameterError, OrchestratorError, UnsupportedParameterError
from orchestrator_core.types import Message

from . import streaming
from .auth import ChatToken
from .schemas import ChatCompletion, ChatCompletionRequest, ChatMessageIn, OpenAIModel, OpenAIModelList, openai_errors
from .shapes import completion, refusal_of, refused_completion, result_headers

router = APIRouter(prefix="/v1", tags=["openai"])

# Fields that change nothing about the answer: accepted and ignored.
IGNORED = frozenset({"store", "metadata", "service_tier", "parallel_tool_calls", "safety_identifier",
                     "prompt_cache_key"})
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
FALLBACK_HEADER = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
CHAT_ERRORS = openai_errors(400, 401, 402, 403, 404, 409, 429, 502, 503, 504)  # 402: a budget is spent


@router.get("/models", response_model=OpenAIModelList, responses=openai_errors(401, 429, 503))
async def list_models(request: Request, _: ChatToken, ready: bool = False) -> OpenAIModelList:
    """Every active model in OpenAI's list shape, with its state, then the model groups (owned_by "group", ready
    when a member is); ready=true: only those that can answer now."""
    statuses, groups = await request.app.state.backend.call(lambda o: (o.statuses(), o.groups()))
    data = [OpenAIModel(id=s.model_id, owned_by=s.model_id.partition(":")[0], state=s.state.value, ready=s.state.ready)
            for s in statuses if s.state.ready or not ready]
    ready_ids = {s.model_id for s in statuses if s.state.ready}
    for group in groups:
        usable = any(m in ready_ids for m in group.members)
        if usable or not ready:
            data.append(OpenAIModel(id=group.name, owned_by="group", state="ready" if usable else "unavailable",
                                    ready=usable))
    return OpenAIModelList(data=data)


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}}, **CHAT_ERRORS})
async def chat_completions(
    request: Request,
    body: ChatCompletionRequest,
    _: ChatToken,
    x_orchestrator_fallback: Annotated[str | None, Header(description="off: no fallback for this call")] = None,
) -> Response:
    """A chat completion, plain or streamed (stream: true), from the model asked for or its fallback."""
    return await answer(request.app.state.backend, body, x_orchestrator_fallback)


async def answer(backend: Any, body: ChatCompletionRequest, fallback_header: str | None) -> Response:
    """The answer to a validated chat request; the route above and the lean path (api/lean.py) share it."""
    messages = to_messages(body.messages)
    params = to_params(body)
    fallback = _fallback(fallback_header)
    if body.stream:
        return await _stream(backend, body, messages, params, fallback)
    orch = await backend.ready_orchestrator()
    try:
        result = await orch.achat(body.model, messages, fallback=fallback, offload=backend.pool.call, **params)
    except OrchestratorError as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            raise
        return JSONResponse(refused_completion(refusal), headers=refusal.headers())
    return JSONResponse(completion(result), headers=result_headers(result))


async def _stream(backend: Any, body: ChatCompletionRequest, messages: list[Message], params: dict[str, Any],
                  fallback: bool | None) -> Response:
    orch = await backend.ready_orchestrator()
    run = streaming.StreamRun(asyncio.get_running_loop(), backend.streams)
    stream = orch.astream_chat(body.model, messages, fallback=fallback, on_event=run.on_event,
                               offload=backend.pool.call, **params)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await streaming.respond(run, stream, include_usage=include_usage,
                                   keepalive_s=orch.settings.stream_keepalive_s)


# -- translation ------------------------------------------------------------------------------------------
def to_params(body: ChatCompletionRequest) -> dict[str, Any]:
    """The core's parameters, or UnsupportedParameterError naming the first one it cannot honour."""
    for name, value in (body.model_extra or {}).items():
        if name not in IGNORED and value not in (None, False, 0, "", [], {}):
            raise UnsupportedParameterError(
                f"The parameter '{name}' is not supported by this gateway (the orchestrator cannot honour it yet); "
                "remove it from the request.", param=name)
    if body.n not in (None, 1):
        raise UnsupportedParameterError("n > 1 is not supported: this gateway returns one choice; send n: 1 or "
                                        "make several requests.", param="n")
    if body.stream_options is not None and not body.stream:
        raise InvalidParameterError("stream_options is only allowed with stream: true.", param="stream_options")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = {"temperature": body.temperature, "top_p": body.top_p, "max_tokens": max_tokens,
              "stop": tuple(stop) if stop else None}
    return {k: v for k, v in params.items() if v is not None}


def to_messages(messages: list[ChatMessageIn]) -> list[Message]:
    """OpenAI messages as the core's: text content only; developer counts as system."""
    return [_message(i, m) for i, m in enumerate(messages)]


def _message(index: int, message: ChatMessageIn) -> Message:
    where = f"messages[{index}]"
    role = ROLES.get(message.role)
    if role is None:
        raise UnsupportedParameterError(f"{where}.role {message.role!r} is not supported (tool and function turns "
                                        "need tool calling, which this gateway does not offer yet); use system, "
                                        "developer, user or assistant.", param=f"{where}.role")
    for name, value in (message.model_extra or {}).items():
        if value not in (None, [], {}, ""):
            raise UnsupportedParameterError(f"{where}.{name} is not supported by this gateway; remove it.",
                                            param=f"{where}.{name}")
    return {"role": role, "content": _text(where, message.content)}  # type: ignore[typeddict-item]


def _text(where: str, content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise UnsupportedParameterError(f"{where}.content[{j}] is a {part.type!r} part; this gateway takes text "
                                            "parts only (no images, audio or files yet).",
                                            param=f"{where}.content[{j}].type")
        texts.append(part.text)
    return "\n".join(texts)


def _fallback(header: str | None) -> bool | None:
    if header is None:
        return None
    value = FALLBACK_HEADER.get(header.strip().lower())
    if value is None:
        raise InvalidParameterError(f"x-orchestrator-fallback must be 'on' or 'off', not {header!r}.",
                                    param="x-orchestrator-fallback")
    return value
