"""The one place an error becomes an HTTP answer: status from the class, body in the route family's shape.

/api answers ``{"error": {"type", "message", "model"}}``; /v1 answers OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` so the official SDK raises its own matching exception class. The status comes from
``http_status`` on the error class (orchestrator_core/errors.py), never from a table here.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator_core.errors import (
    AllModelsFailedError,
    InputError,
    InvalidParameterError,
    OrchestratorError,
)

OPENAI_PREFIX = "/v1"


def status_of(exc: OrchestratorError) -> int:
    return type(exc).http_status


def headers_of(exc: OrchestratorError) -> dict[str, str]:
    """retry-after on a 429 (whole seconds, at least 1), as RFC 9110 and the OpenAI SDK read it."""
    if status_of(exc) == 429 and exc.retry_after is not None and math.isfinite(exc.retry_after):
        return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
    return {}


def openai_body(exc: OrchestratorError) -> dict[str, Any]:
    param = exc.param if isinstance(exc, InvalidParameterError) else None
    body: dict[str, Any] = {"message": exc.message, "type": type(exc).openai_type, "param": param, "code": exc.kind}
    if isinstance(exc, AllModelsFailedError):
        body["attempts"] = [_attempt(a) for a in exc.attempts]
    return {"error": body}


def api_body(exc: OrchestratorError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": exc.kind, "message": exc.message, "model": exc.model}
    if isinstance(exc, AllModelsFailedError):
        body["attempts"] = [_attempt(a) for a in exc.attempts]
    return {"error": body}


def _attempt(attempt: Any) -> dict[str, Any]:
    return {"model": attempt.model, "outcome": attempt.outcome, "error_type": attempt.error_kind,
            "message": attempt.error, "latency_ms": round(attempt.latency_ms, 1)}


def error_response(request: Request, exc: OrchestratorError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to exc for this route family."""
    if request.url.path.startswith(OPENAI_PREFIX):
        return openai_error(exc, headers)
    return JSONResponse(api_body(exc), status_code=status_of(exc), headers={**headers_of(exc), **(headers or {})})


def openai_error(exc: OrchestratorError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to exc on a /v1 route: OpenAI's error shape."""
    return JSONResponse(openai_body(exc), status_code=status_of(exc), headers={**headers_of(exc), **(headers or {})})


async def on_orchestrator_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, OrchestratorError):  # registered for OrchestratorError only
        raise exc
    return error_response(request, exc)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A body or query that does not fit the schema: 400 naming the first bad field, as OpenAI answers."""
    if not isinstance(exc, RequestValidationError):  # registered for RequestValidationError only
        raise exc
    first = exc.errors()[0] if exc.errors() else {}
    where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(where) or "body"
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid request')}; fix it and send again."
    return error_response(request, InvalidParameterError(message, param=param) if where else InputError(message))


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, wrong method) in the route family's shape too."""
    if not isinstance(exc, StarletteHTTPException):  # registered for StarletteHTTPException only
        raise exc
    message = f"{exc.detail}: {request.method} {request.url.path}; see /api/docs for the routes."
    if request.url.path.startswith(OPENAI_PREFIX):
        body: dict[str, Any] = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    else:
        body = {"type": "http_error", "message": message, "model": None}
    return JSONResponse({"error": body}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug must still answer in the route family's shape, with no traceback or request data in it."""
    logging.getLogger("api").error("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(request, unexpected(exc))


def unexpected(exc: Exception) -> OrchestratorError:
    """What a client is told of a bug: its class name, nothing of the request or the traceback."""
    return OrchestratorError(f"The server failed unexpectedly ({type(exc).__name__}); see its log.")
