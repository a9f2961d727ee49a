"""The st.App middleware that turns a signed-in console session into a cookie (see console/session.py).

``POST /_console/session`` with ``{"grant": ...}`` redeems a grant and sets the cookie; ``DELETE`` clears it
(the console's Lock button). Every other request passes on, with the ``MARKER`` header that tells the script
the cookie can be set.
"""

from __future__ import annotations

import json
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from console import session
from console.auth import password_check_from_env
from orchestrator_core.config import Settings
from orchestrator_core.errors import ConfigurationError

_MARKER = session.MARKER.encode("latin-1")


class SessionCookieMiddleware:
    """Answers PATH itself; marks everything else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == session.PATH:
            response = await _answer(Request(scope, receive))
            await response(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != _MARKER]
            scope = {**scope, "headers": [*headers, (_MARKER, b"1")]}
        await self.app(scope, receive, send)


async def _answer(request: Request) -> Response:
    secure = request.url.scheme == "https"
    if request.method == "DELETE":
        response = Response(status_code=204)
        response.delete_cookie(session.COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
        return response
    if request.method != "POST":
        return Response(status_code=405, headers={"allow": "POST, DELETE"})
    grant = _grant_of(await request.body())
    if grant is None or not session.GRANTS.redeem(grant):
        return Response("The sign-in grant is unknown or used; sign in again.", status_code=403)
    try:
        token, lifetime = await run_in_threadpool(_token)
    except ConfigurationError:
        return Response("The session cannot be kept; the console stays signed in in this tab only.", status_code=503)
    response = Response(status_code=204)
    response.set_cookie(session.COOKIE, token, max_age=int(lifetime), path="/", secure=secure, httponly=True,
                        samesite="strict")
    return response


def _grant_of(body: bytes) -> str | None:
    try:
        grant = json.loads(body).get("grant")
    except (ValueError, AttributeError):
        return None
    return grant if isinstance(grant, str) else None


def _token() -> tuple[str, float]:
    settings = Settings.from_env()
    check = password_check_from_env(os.environ)
    if check is None:
        raise ConfigurationError("No console password is set; there is no session to keep.")
    return session.issue(check, settings), settings.session_lifetime_s
