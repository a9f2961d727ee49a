"""The lean path of ``POST /v1/chat/completions``: a plain ASGI handler in front of FastAPI's per-request layers.

FastAPI's middleware, routing, dependency solving and body parsing cost about as much CPU per chat request as
the rest of the gateway together (bench/gateway.py, README "Performance"). This handler answers the one hot
route itself with the parts the FastAPI route uses: ``authorize`` (the token, its scope, the failure limiter
per client address, the constant-time check), ``ChatCompletionRequest`` validated straight from the bytes
(pydantic's ``model_validate_json``), ``gateway.answer`` for the call and its answer, ``errors.openai_error``
for a failure. A body it does not take as it is (not JSON, not valid for the model, a content type other than
JSON) goes, its bytes replayed, to the FastAPI route, which answers it as before: the 400 naming a bad field
comes from one place. The FastAPI route stays registered, so the OpenAPI schema documents it.

Middleware added with ``app.add_middleware`` does not see this route; wrap the whole app instead. The body limit
(api/limits.py) holds all the same: the lean path takes only a body whose declared length is within it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from orchestrator_core.errors import OrchestratorError

from . import errors, gateway, limits
from .auth import authorize, bearer_token
from .schemas import ChatCompletionRequest

log = logging.getLogger("api")
PATH = "/v1/chat/completions"
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_AUTHORIZATION = b"authorization"
_CONTENT_TYPE = b"content-type"
_FALLBACK = b"x-orchestrator-fallback"


def takes(scope: Scope) -> bool:
    """Whether this request is the one the lean path answers: the chat route with a declared body length within
    the API's limit. Any other body (chunked, or too large) takes the full stack, whose BodyLimit answers it."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if path != root + PATH:
        return False
    length = limits.content_length(scope)  # the server reads no more than declared
    return length is not None and 0 <= length <= limits.MAX_BODY_BYTES


async def chat(backend: object, scope: Scope, receive: Receive, send: Send, fastapi: ASGIApp) -> None:
    """Answer one chat request, or hand it to fastapi (the full stack) when its body needs FastAPI's answer."""
    body = await _body(receive)
    if body is None:
        return  # the client left before its request was in
    response = await _answer(backend, scope, body)
    if response is None:
        await fastapi(scope, limits.replay(body, receive), send)
    else:
        await response(scope, receive, send)


async def _answer(backend: object, scope: Scope, body: bytes) -> Response | None:
    headers = scope["headers"]
    client = scope.get("client")
    try:
        token = bearer_token(_header(headers, _AUTHORIZATION))
        await authorize(backend, client[0] if client else "unknown", token, "chat")
        request = _parsed(headers, body)
        if request is None:
            return None
        return await gateway.answer(backend, request, _header(headers, _FALLBACK))
    except OrchestratorError as exc:
        return errors.openai_error(exc)
    except Exception as exc:
        log.error("unhandled error on %s", PATH, exc_info=exc)
        return errors.openai_error(errors.unexpected(exc))


def _parsed(headers: list[tuple[bytes, bytes]], body: bytes) -> ChatCompletionRequest | None:
    """The request when the body is JSON the model accepts; None when FastAPI must answer it."""
    content_type = _header(headers, _CONTENT_TYPE)
    # FastAPI reads a body as JSON for application/json (and *+json, rare: left to it); with no content type
    # it refuses the body (strict_content_type), so that answer is left to it too.
    if not content_type or content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError:
        return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first header of that (lower-case) name, as Starlette's Headers.get reads it."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _body(receive: Receive) -> bytes | None:
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


