"""A streamed chat: the AsyncChatStream is read on the loop; its pieces become OpenAI SSE chunks.

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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import Response
from sse_starlette import ServerSentEvent
from starlette.types import Receive, Scope, Send

from orchestrator_core.errors import OrchestratorError
from orchestrator_core.orchestrator import AsyncChatStream, CallEvent
from orchestrator_core.types import OrchestratedResult

from . import errors
from .shapes import NO_USAGE, finish_reason, header_safe, is_content_stop, refusal_of, usage

log = logging.getLogger("api")
Kind = Literal["answering", "loading", "failed", "text", "done", "error"]
SSE_HEADERS = {"cache-control": "no-store", "connection": "keep-alive", "x-accel-buffering": "no"}


@dataclass(frozen=True)
class Item:
    kind: Kind
    model: str = ""
    text: str = ""
    result: OrchestratedResult | None = None
    error: OrchestratorError | None = None


class StreamRun:
    """One AsyncChatStream read by a task of the loop; its events and pieces wait here for the response to take.

    Pieces that arrive together (one read of a fast upstream, or a bridged provider's batch) are taken together
    and go out in one write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, running: set[asyncio.Task[None]]) -> None:
        self.loop = loop
        self._items: list[Item] = []
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = running  # the server's reading tasks: its shutdown stops them before its connections go

    def on_event(self, event: CallEvent) -> None:
        """The call's progress (the orchestrator's on_event, on the loop)."""
        if event.kind == "answering":
            self._put(Item("answering", model=event.model_id))
        elif event.kind in ("loading", "load_progress"):
            self._put(Item("loading", model=event.model_id))
        elif event.kind == "attempt_failed":
            self._put(Item("failed", model=event.model_id))

    def start(self, stream: AsyncChatStream) -> None:
        self._task = task = self.loop.create_task(self._read(stream))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def stop(self) -> None:
        """The reader went away or the stream ended: a stream still running records 'cancelled'."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _read(self, stream: AsyncChatStream) -> None:
        try:
            async for piece in stream:
                self._put(Item("text", text=piece))
            self._put(Item("done", result=stream.result))
        except OrchestratorError as exc:
            self._put(Item("error", error=exc))
        except Exception as exc:
            log.error("stream failed unexpectedly", exc_info=exc)
            self._put(Item("error", error=OrchestratorError(f"The stream failed unexpectedly ({type(exc).__name__}).")))

    async def take(self, timeout: float) -> list[Item]:
        """Everything that arrived so far, waiting up to timeout for the first item; [] when none came.

        A bare future and a timer rather than asyncio.wait_for (Python 3.11 makes a task for each wait):
        a paced stream waits once per piece."""
        if not self._items:
            if timeout <= 0:
                return []
            waiter = self.loop.create_future()
            self._waiter = waiter
            timer = self.loop.call_later(timeout, _wake_up, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        items, self._items = self._items, []
        return items

    def _put(self, item: Item) -> None:
        self._items.append(item)
        if self._waiter is not None:
            _wake_up(self._waiter)


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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

    def comment(self) -> bytes:
        what = "loading" if self.loading else "waiting for"
        return ServerSentEvent(comment=f"{what} {self.model} {time.monotonic() - self.started:.0f}s").encode()

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id, "x-orchestrator-model": self.model,
                   "x-orchestrator-attempts": str(self.failed + 1)}
        if self.model != self.requested:
            headers["x-orchestrator-fallback-from"] = self.requested
        return header_safe(headers)


async def respond(
    run: StreamRun,
    stream: AsyncChatStream,
    *,
    include_usage: bool,
    keepalive_s: float,
) -> Response:
    """Start reading the stream and answer: an HTTP error if it fails before anything, else the SSE stream."""
    progress = _Progress(stream.requested_model)
    run.start(stream)
    try:
        pending = await _first_items(run, progress, keepalive_s)
    except BaseException:  # this request was cancelled (the server stopping): the reading task goes too
        run.stop()
        raise
    first = pending[0] if pending else None
    refusal = None
    if first is not None and first.kind == "error" and first.error is not None:
        refusal = refusal_of(first.error)  # a refusal before the first token is the answer: a 200 stream
        if refusal is None:
            return errors.openai_error(first.error, headers={"x-request-id": stream.request_id})
    elif first is not None:
        progress.note(first)
    headers = refusal.headers() if refusal is not None else progress.headers(stream.request_id)
    chunks = _Chunks(stream.request_id, include_usage)
    return EventStream(_events(run, progress, chunks, pending, keepalive_s), headers, on_close=run.stop)


async def stop_all(running: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Cancel the streams still being read (a server's shutdown) and wait for them to record their attempts."""
    tasks = list(running)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)


async def _first_items(run: StreamRun, progress: _Progress, keepalive_s: float) -> list[Item]:
    """What the response starts with: the items from the first text, error or load on; [] after keepalive_s."""
    deadline = time.monotonic() + keepalive_s
    while True:
        batch = await run.take(deadline - time.monotonic())
        if not batch:
            return []  # nothing to send yet after keepalive_s: the stream starts with a comment
        for i, item in enumerate(batch):
            if item.kind in ("text", "done", "error", "loading"):
                return batch[i:]
            progress.note(item)


class EventStream(Response):
    """The SSE answer: headers as sse-starlette's EventSourceResponse sends them, then each batch as one write.

    Not EventSourceResponse itself: its task group (a sender, a pinger, a shutdown listener and a disconnect
    listener per stream) cost more CPU than the rest of a short stream. Here one task watches for the client
    leaving and cancels the sender, which closes the body (the worker stops, the attempt is 'cancelled').
    A stream still running at server shutdown ends when its answer does (uvicorn waits for it).
    """

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str], *,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self.body_iterator = body
        self.on_close = on_close  # also when the body never started (its own finally would not run then)
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, **SSE_HEADERS})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        finished = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished and sender is not None:
                sender.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if finished or not watcher.done() or sender is None:
                raise  # not the watcher's doing: a cancellation from outside
            sender.uncancel()  # the client left: the stream ends here, as if it had been read to the end
        finally:
            finished = True
            watcher.cancel()
            self.on_close()
            await _close(self.body_iterator)


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


async def _events(run: StreamRun, progress: _Progress, chunks: _Chunks, pending: list[Item],
                  keepalive_s: float) -> AsyncIterator[bytes]:
    """The SSE body: each batch the worker handed over goes out as one write."""
    try:
        next_comment = time.monotonic() + keepalive_s
        if not pending or pending[0].kind == "loading":
            yield progress.comment()
        batch = pending
        while True:
            events: list[bytes] = []
            for item in batch:
                progress.note(item)
                events.extend(chunks.events(item, progress.model))
                if item.kind == "text":
                    next_comment = time.monotonic() + keepalive_s
                if item.kind in ("done", "error"):
                    yield _joined(events)
                    return
            if events:
                yield _joined(events)
            batch = await run.take(next_comment - time.monotonic())
            if not batch:
                yield progress.comment()
                next_comment = time.monotonic() + keepalive_s
    finally:
        run.stop()


def _joined(events: list[bytes]) -> bytes:
    return b"".join(events)


def data_event(text: str) -> bytes:
    """One SSE data event of single-line text, byte for byte what ServerSentEvent(data=text).encode() gives."""
    return b"data: " + text.encode() + b"\r\n\r\n"


DONE = data_event("[DONE]")


class _Chunks:
    """OpenAI chat.completion.chunk events for one call."""

    def __init__(self, request_id: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self.include_usage = include_usage
        self.sent_role = False
        self._text_model = ""
        self._text_around = ("", "")

    def events(self, item: Item, model: str) -> list[bytes]:
        if item.kind == "text":
            if self.sent_role:
                return [self._text(model, item.text)]
            self.sent_role = True
            delta = {"role": "assistant", "content": item.text}
            return [self._chunk(model, [{"index": 0, "delta": delta, "finish_reason": None}])]
        if item.kind == "error" and item.error is not None:
            return self._failed(item.error, model)
        if item.kind == "done" and item.result is not None:
            result = item.result
            return self._end(result.model_id, finish_reason(result.result.finish_reason), usage(result))
        return []

    def _failed(self, error: OrchestratorError, model: str) -> list[bytes]:
        refusal = refusal_of(error)
        if refusal is not None:  # nothing streamed yet: the refusal is the answer
            delta: dict[str, Any] = {"role": "assistant", "content": refusal.error.partial_text}
            if refusal.error.refusal:
                delta["refusal"] = refusal.error.refusal
            self.sent_role = True
            first = self._chunk(refusal.model_id, [{"index": 0, "delta": delta, "finish_reason": None}])
            return [first, *self._end(refusal.model_id, "content_filter", NO_USAGE)]
        if is_content_stop(error):  # a safety stop after the first token: the text so far stands
            return self._end(model, "content_filter", NO_USAGE)
        return [data_event(json.dumps(errors.openai_body(error)))]

    def _end(self, model: str, finish: str, counts: dict[str, int | None]) -> list[bytes]:
        delta = {} if self.sent_role else {"role": "assistant", "content": ""}
        events = [self._chunk(model, [{"index": 0, "delta": delta, "finish_reason": finish}])]
        if self.include_usage:
            events.append(self._chunk(model, [], usage=counts))
        events.append(DONE)
        return events

    def _text(self, model: str, text: str) -> bytes:
        """A text chunk after the first: what _chunk makes, the JSON around the text made once per model."""
        if model != self._text_model:
            marker = "\x00"  # json.dumps writes it as "\u0000"
            whole = self._chunk(model, [{"index": 0, "delta": {"content": marker}, "finish_reason": None}]).decode()
            before, _, after = whole.rpartition(json.dumps(marker))  # the last string in the chunk
            self._text_model, self._text_around = model, (before, after)
        before, after = self._text_around
        return (before + json.dumps(text, ensure_ascii=False) + after).encode()

    def _chunk(self, model: str, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                "choices": choices, **extra}
        if self.include_usage and "usage" not in extra:
            body["usage"] = None
        return data_event(json.dumps(body, ensure_ascii=False))  # JSON text has no line break: one data line
