"""create_api(): the FastAPI app of the HTTP API, on any orchestrator (the process's shared one by default)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from orchestrator_core import shared
from orchestrator_core.errors import ConfigurationError, OrchestratorError
from orchestrator_core.orchestrator import Orchestrator

from . import connections, errors, gateway, lean, management, prom
from .auth import FailureLimiter

log = logging.getLogger("api")
T = TypeVar("T")
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]
DEFAULT_THREADS = 64  # until the orchestrator (and GATEWAY_THREADS) is known


class Backend:
    """What every route needs: the orchestrator, a thread pool for its blocking calls, metrics, the limiter."""

    def __init__(self, orchestrator: Callable[[], Orchestrator]) -> None:
        self._orchestrator = orchestrator
        self.metrics = prom.GatewayMetrics(self.orchestrator)
        self.token_failures = FailureLimiter()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._built: Orchestrator | None = None

    def orchestrator(self) -> Orchestrator:
        """The orchestrator (built on first use; a configuration error is raised, as a 503)."""
        orch = self._orchestrator()
        if orch is not self._built:
            self.metrics.attach(orch)
            self._built = orch
        return orch

    def orchestrator_if_built(self) -> Orchestrator | None:
        """The orchestrator when it exists already (no build, no blocking), else None."""
        return self._built

    async def ready_orchestrator(self) -> Orchestrator:
        """The orchestrator, without a thread hop once it is built (building it blocks: on a worker thread)."""
        orch = self._built
        return orch if orch is not None else await self.call(lambda o: o)

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    # Never build the orchestrator here: this may run on the event loop.
                    size = self._built.settings.gateway_threads if self._built is not None else DEFAULT_THREADS
                    self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="api-call")
        return self._pool

    async def call(self, fn: Callable[[Orchestrator], T]) -> T:
        """Run fn(orchestrator) on a worker thread: a provider call never blocks the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(_with_orchestrator, self, fn))

    def close(self) -> None:
        """Stop the worker threads; a later start (a second lifespan) makes a new pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _with_orchestrator(backend: Backend, fn: Callable[[Orchestrator], T]) -> T:
    return fn(backend.orchestrator())


class GatewayApp(FastAPI):
    """FastAPI with the lean path of POST /v1/chat/completions in front of its middleware and routing."""

    lean = True  # False: every request through FastAPI's stack (the lean path's reference in tests and bench)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lean and lean.takes(scope):
            await lean.chat(self.state.backend, scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


def backend_of(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def create_api(
    orchestrator: Callable[[], Orchestrator] = shared.orchestrator,
    *,
    close: Callable[[], None] | None = shared.close,
    outer_lifespan: Lifespan | None = None,
    lean_chat: bool = True,
) -> FastAPI:
    """The API app. close runs at shutdown (flushes metrics); outer_lifespan wraps ours (Streamlit's runtime);
    lean_chat=False sends POST /v1/chat/completions through FastAPI's stack too (api/lean.py)."""
    backend = Backend(orchestrator)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if outer_lifespan is not None:
            async with outer_lifespan(app), _own_lifespan(backend, close):
                yield
        else:
            async with _own_lifespan(backend, close):
                yield

    app = GatewayApp(
        title="LLM orchestrator API",
        version="1",
        summary="Model management (/api) and an OpenAI-compatible gateway (/v1) with check-and-load and fallback.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.lean = lean_chat
    app.include_router(management.router)
    app.include_router(connections.router)
    app.include_router(gateway.router)
    app.include_router(management.metrics_router)
    app.add_exception_handler(OrchestratorError, errors.on_orchestrator_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(StarletteHTTPException, errors.on_http_error)
    app.add_exception_handler(Exception, errors.on_unexpected)
    return app


@asynccontextmanager
async def _own_lifespan(backend: Backend, close: Callable[[], None] | None) -> AsyncIterator[None]:
    try:
        await asyncio.to_thread(backend.orchestrator)  # migrate and warm up before the first request
    except ConfigurationError as exc:
        log.warning("The API starts without an orchestrator and answers 503 until this is fixed: %s", exc.message)
    try:
        yield
    finally:
        backend.close()
        if close is not None:
            await asyncio.to_thread(close)
