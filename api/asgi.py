"""The ASGI apps. ``app``: the console at / and the API beside it on one port (what `make run` serves);
``api_app``: the API alone, for several workers on one database (``uvicorn api.asgi:api_app --workers N``).

FastAPI is the parent and Streamlit's st.App is mounted at /: API requests never pass through
Streamlit's session and gzip middleware, and the parent answers /_stcore/metrics itself (404), so
Streamlit's own metrics cannot tell an unsigned visitor whether anyone has signed in. See
/work/notes/gateway.md for the measurements behind this layout.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from .app import create_api
from .console_session import SessionCookieMiddleware

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = ROOT / "streamlit_app.py"


async def _not_found(_: Request) -> PlainTextResponse:
    return PlainTextResponse("Not found", status_code=404)


def console_and_api() -> FastAPI:
    """The console (st.App at /) with the API routes in front of it."""
    import streamlit as st  # noqa: PLC0415 - streamlit loads only when the app is built
    # The session cookie (console/session.py) is set here: a Streamlit script cannot answer with a header.
    console = st.App(str(CONSOLE_SCRIPT), middleware=[Middleware(SessionCookieMiddleware)])
    parent = create_api(outer_lifespan=console.lifespan())
    # Streamlit's /_stcore/metrics counts sessions and their state: closed (issue 7). Matched before the mount.
    parent.add_route("/_stcore/metrics", _not_found, methods=["GET", "HEAD", "POST"], include_in_schema=False)
    parent.mount("/", console)
    return parent


def __getattr__(name: str) -> FastAPI:
    # Built on first access, so importing api.asgi for api_app does not start Streamlit, and the reverse.
    if name == "app":
        globals()["app"] = built = console_and_api()
        return built
    if name == "api_app":
        globals()["api_app"] = built = create_api()
        return built
    raise AttributeError(name)
