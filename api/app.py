"""create_api(): the FastAPI app of the HTTP API, on any orchestrator (the process's shared one by default)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from functools import partial
from queue import SimpleQueue
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from orchestrator_core import shared
from orchestrator_core.errors import ConfigurationError, OrchestratorError, TooManyWaitsError
from orchestrator_core.orchestrator import Orchestrator

from . import connections, errors, gateway, lean, management, prom, streaming
from .auth import FailureLimiter
from .limits import BodyLimit

log = logging.getLogger("api")
T = TypeVar("T")
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]
DEFAULT_THREADS = 64  # until the orchestrator (and GATEWAY_THREADS) is known
STREAMS_STOP_S = 2.0  # at shutdown, how long the streams still read get to record their attempts


class Workers:
    """Threads for the blocking calls, started as needed up to size; idle ones wait on one queue.

    A call crosses as (future, fn) on a SimpleQueue and comes back with one call_soon_threadsafe: about 10 µs
    of CPU a hop, against 20-35 µs for loop.run_in_executor's concurrent-future wrapping (measured on uvloop).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: SimpleQueue[tuple[asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None,
                                       Callable[[], Any]] | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """fn() on a worker thread, as a future of this event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((loop, future, fn))
        return future

    def submit(self, fn: Callable[[], object]) -> None:
        """fn() on a worker thread, nobody waiting for it (it reports by itself)."""
        self._put((None, None, fn))

    @property
    def threads(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def shutdown(self) -> None:
        """Let every thread end once the calls queued before this are done."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)

    def _put(self, job: tuple[asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None,
                              Callable[[], Any]]) -> None:
        self._queue.put(job)
        if self._idle.acquire(blocking=False):
            return  # an idle thread takes it
        with self._lock:
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name=f"api-call_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            loop, future, fn = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task, as an executor does
                if loop is None:
                    log.error("a background call failed", exc_info=exc)
                else:
                    _answer(loop, future, None, exc)
            else:
                if loop is not None:
                    _answer(loop, future, result, None)
            del job, loop, future, fn
            self._idle.release()


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any] | None, result: Any,
            exc: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed (the server stopped during the call)
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any] | None, result: Any, exc: BaseException | None) -> None:
    if future is None or future.done():  # the awaiting task was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Backend:
    """What every route needs: the orchestrator, a thread pool for its blocking calls, metrics, the limiter."""

    def __init__(self, orchestrator: Callable[[], Orchestrator]) -> None:
        self._orchestrator = orchestrator
        self.metrics = prom.GatewayMetrics(self.orchestrator)
        self.token_failures = FailureLimiter()
        self._pool: Workers | None = None
        self._pool_lock = threading.Lock()
        self._built: Orchestrator | None = None
        self.waits = 0  # /wait requests holding a worker thread now (changed on the event loop only)
        self.streams: set[asyncio.Task[None]] = set()  # the streams being read now (api/streaming.StreamRun)

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
    def pool(self) -> Workers:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    # Never build the orchestrator here: this may run on the event loop.
                    size = self._built.settings.gateway_threads if self._built is not None else DEFAULT_THREADS
                    self._pool = Workers(size)
        return self._pool

    @contextmanager
    def wait_slot(self) -> Iterator[None]:
        """Hold one of the threads /wait may use (a quarter of the pool): long load waits must leave threads
        for chat calls. Past the limit, TooManyWaitsError (429) at once. Used on the event loop only."""
        limit = max(1, self.pool.size // 4)
        if self.waits >= limit:
            raise TooManyWaitsError(
                f"{self.waits} load waits are running already, the most this gateway allows at once ({limit}, a "
                "quarter of GATEWAY_THREADS); retry in a few seconds, or poll GET /api/models/{id}/status.",
                retry_after=5.0)
        self.waits += 1
        try:
            yield
        finally:
            self.waits -= 1

    async def call(self, fn: Callable[[Orchestrator], T]) -> T:
        """Run fn(orchestrator) on a worker thread: a provider call never blocks the event loop."""
        return await self.pool.call(partial(_with_orchestrator, self, fn))

    def close(self) -> None:
        """Stop the worker threads; a later start (a second lifespan) makes a new pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()


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
    app.add_middleware(BodyLimit)  # before FastAPI reads a body, the token check included (api/limits.py)
    return app


def _freeze_start_up_objects() -> None:
    """Leave the objects of the start-up (~170k: modules, the price table, schemas) out of every later collection.

    Under load a full collection scanned them all every few seconds and held the loop for 65-75 ms each time:
    the p99 of 64 streams (bench/gateway.py). gc.freeze(), as the gc docs advise for a server after its start-up."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _own_lifespan(backend: Backend, close: Callable[[], None] | None) -> AsyncIterator[None]:
    try:
        built = await asyncio.to_thread(backend.orchestrator)  # migrate and warm up before the first request
        await asyncio.to_thread(built.warm_for_serving)
    except ConfigurationError as exc:
        log.warning("The API starts without an orchestrator and answers 503 until this is fixed: %s", exc.message)
    _freeze_start_up_objects()
    try:
        yield
    finally:
        # Streams still read at shutdown end as cancelled (their rows say so) before their connections close.
        await streaming.stop_all(backend.streams, STREAMS_STOP_S)
        orch = backend.orchestrator_if_built()
        if orch is not None:
            await orch.aclose()  # this loop's upstream connections (the gateway's calls and streams)
        gc.unfreeze()  # what was frozen may be collected again: a process serving several apps (tests) leaks none
        backend.close()
        if close is not None:
            await asyncio.to_thread(close)
