"""A streamed chat: the ChatStream runs on a worker thread; its pieces become OpenAI SSE chunks on the loop.

Before the first token the response may wait: if the call fails before anything was sent, the client gets
a plain HTTP error (the SDK raises its matching class). A local model that starts loading, or a first token
slower than STREAM_KEEPALIVE_S, starts the 200 stream at once; from then on an SSE comment
(``: loading lmstudio:x 12s``) goes out every STREAM_KEEPALIVE_S of silence, so no client times out on a
cold start. A failure after the stream started is an error event in OpenAI's shape, then the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from orchestrator_core.errors import OrchestratorError
from orchestrator_core.orchestrator import CallEvent, ChatStream
from orchestrator_core.types import OrchestratedResult

from . import errors
from .shapes import finish_reason, usage

log = logging.getLogger("api")
Kind = Literal["answering", "loading", "failed", "text", "done", "error"]
DONE = ServerSentEvent(data="[DONE]")


@dataclass(frozen=True)
class Item:
    kind: Kind
    model: str = ""
    text: str = ""
    result: OrchestratedResult | None = None
    error: OrchestratorError | None = None


class StreamRun:
    """One ChatStream iterated on a worker thread; its events and pieces are queued for the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.stopped = threading.Event()

    def on_event(self, event: CallEvent) -> None:
        """The call's progress (the orchestrator's on_event, on the worker thread)."""
        if event.kind == "answering":
            self._put(Item("answering", model=event.model_id))
        elif event.kind in ("loading", "load_progress"):
            self._put(Item("loading", model=event.model_id))
        elif event.kind == "attempt_failed":
            self._put(Item("failed", model=event.model_id))

    def run(self, stream: ChatStream) -> None:
        """Iterate the stream (worker thread); a reader that went away closes it, which records 'cancelled'."""
        pieces = iter(stream)
        try:
            for piece in pieces:
                if self.stopped.is_set():
                    pieces.close()  # a generator: GeneratorExit inside the call
                    return
                self._put(Item("text", text=piece))
            self._put(Item("done", result=stream.result))
        except OrchestratorError as exc:
            self._put(Item("error", error=exc))
        except Exception as exc:
            log.error("stream failed unexpectedly", exc_info=exc)
            self._put(Item("error", error=OrchestratorError(f"The stream failed unexpectedly ({type(exc).__name__}).")))

    def _put(self, item: Item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class _Progress:
    """What the loop knows of the call so far: the model at work, whether it is loading, attempts so far."""

    def __init__(self, requested: str) -> None:
        self.requested = requested
        self.model = requested
        self.loading = False
        self.failed = 0
        self.started = time.monotonic()

    def note(self, item: Item) -> None:
        if item.kind == "answering":
            self.model, self.loading = item.model, False
        elif item.kind == "loading":
            self.model, self.loading = item.model, True
        elif item.kind == "failed":
            self.failed += 1

    def comment(self) -> ServerSentEvent:
        what = "loading" if self.loading else "waiting for"
        return ServerSentEvent(comment=f"{what} {self.model} {time.monotonic() - self.started:.0f}s")

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id, "x-orchestrator-model": self.model,
                   "x-orchestrator-attempts": str(self.failed + 1)}
        if self.model != self.requested:
            headers["x-orchestrator-fallback-from"] = self.requested
        return headers


async def _next(queue: asyncio.Queue[Item], timeout: float) -> Item | None:
    if not queue.empty():
        return queue.get_nowait()
    try:
        return await asyncio.wait_for(queue.get(), timeout=max(timeout, 0.0))
    except TimeoutError:
        return None


async def respond(
    request: Request,
    run: StreamRun,
    stream: ChatStream,
    start: Callable[[], None],
    *,
    include_usage: bool,
    keepalive_s: float,
) -> Response:
    """Start the stream's thread and answer: an HTTP error if it fails before anything, else the SSE stream."""
    progress = _Progress(stream.requested_model)
    start()
    deadline = time.monotonic() + keepalive_s
    while True:
        item = await _next(run.queue, deadline - time.monotonic())
        if item is None or item.kind in ("text", "done", "error", "loading"):
            break
        progress.note(item)
    if item is not None and item.kind == "error" and item.error is not None:
        return errors.error_response(request, item.error, headers={"x-request-id": stream.request_id})
    if item is not None:
        progress.note(item)
    chunks = _Chunks(stream.request_id, include_usage)
    return EventSourceResponse(_events(run, progress, chunks, item, keepalive_s), ping=0, sep="\n",
                               headers=progress.headers(stream.request_id))


async def _events(run: StreamRun, progress: _Progress, chunks: _Chunks, first: Item | None,
                  keepalive_s: float) -> AsyncIterator[ServerSentEvent]:
    try:
        item = first
        next_comment = time.monotonic() + keepalive_s
        if item is None or item.kind == "loading":
            yield progress.comment()
        while True:
            if item is not None:
                progress.note(item)
                for event in chunks.events(item, progress.model):
                    yield event
                if item.kind in ("done", "error"):
                    return
                if item.kind == "text":
                    next_comment = time.monotonic() + keepalive_s
            item = await _next(run.queue, next_comment - time.monotonic())
            if item is None:
                yield progress.comment()
                next_comment = time.monotonic() + keepalive_s
    finally:
        run.stopped.set()  # the reader went away or the stream ended: the worker stops at its next piece


class _Chunks:
    """OpenAI chat.completion.chunk events for one call."""

    def __init__(self, request_id: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self.include_usage = include_usage
        self.sent_role = False

    def events(self, item: Item, model: str) -> list[ServerSentEvent]:
        if item.kind == "text":
            delta: dict[str, Any] = {"content": item.text}
            if not self.sent_role:
                delta = {"role": "assistant", "content": item.text}
                self.sent_role = True
            return [self._chunk(model, [{"index": 0, "delta": delta, "finish_reason": None}])]
        if item.kind == "error" and item.error is not None:
            return [ServerSentEvent(data=json.dumps(errors.openai_body(item.error)))]
        if item.kind == "done" and item.result is not None:
            return self._end(item.result)
        return []

    def _end(self, result: OrchestratedResult) -> list[ServerSentEvent]:
        delta = {} if self.sent_role else {"role": "assistant", "content": ""}
        events = [self._chunk(result.model_id, [{"index": 0, "delta": delta,
                                                 "finish_reason": finish_reason(result.result.finish_reason)}])]
        if self.include_usage:
            events.append(self._chunk(result.model_id, [], usage=usage(result)))
        events.append(DONE)
        return events

    def _chunk(self, model: str, choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                "choices": choices, **extra}
        if self.include_usage and "usage" not in extra:
            body["usage"] = None
        return ServerSentEvent(data=json.dumps(body, ensure_ascii=False))
