"""The size limit on request bodies, enforced before anything reads them.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies, the token check
among them, and Starlette keeps the whole body in memory: without a limit, a client without any token could
make the server hold a body of any size. A declared Content-Length over the limit is answered 413 at once;
a chunked body (no length) is counted as it arrives and answered 413 once it passes the limit.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator_core.errors import RequestTooLargeError
from orchestrator_core.orchestrator import MAX_PROMPT_CHARS

from . import errors

# The largest prompt the core takes, even with every character sent as a 6-byte JSON escape, plus room for
# the rest of the body.
MAX_BODY_BYTES = 6 * MAX_PROMPT_CHARS + (1 << 20)
LIMITED_PREFIXES = ("/api", "/v1")  # the console's own routes (Streamlit, mounted at /) keep theirs


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` on the API's routes."""

    def __init__(self, app: ASGIApp, *, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes or MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        length = content_length(scope)
        if length is not None:  # the server itself refuses a body longer than it declared
            if length > self.max_bytes:
                await self._refuse(scope, receive, send, length)
                return
            await self.app(scope, receive, send)
            return
        body = await self._read_chunked(receive)
        if body is None:
            await self._refuse(scope, receive, send, None)
            return
        await self.app(scope, replay(body, receive), send)

    async def _read_chunked(self, receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)  # the client went away: the app sees the disconnect as it would
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, length: int | None) -> None:
        size = f"{length:,} bytes" if length is not None else "more"
        exc = RequestTooLargeError(f"The request body is {size}, over the limit of {self.max_bytes:,} bytes; "
                                   "send a shorter prompt.")
        response = errors.error_response(Request(scope), exc, headers={"connection": "close"})
        await response(scope, receive, send)


def content_length(scope: Scope) -> int | None:
    """The declared body length, or None (chunked, or malformed: the server refuses that one itself)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app runs
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read once, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the disconnect, when it comes

    return replay
