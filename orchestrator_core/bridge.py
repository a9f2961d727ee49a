"""A caller on an event loop and the blocking core: worker-thread hops, and a blocking stream read from the loop.

``Offload`` is how such a caller runs blocking work: the gateway passes its worker pool's ``call``; the default
is the loop's executor. ``bridged`` reads a blocking iterator (a provider's ``stream_chat`` without a native
``astream_chat``) on one worker thread and hands its items to the loop in batches: the thread wakes the loop only
when the loop has taken everything handed over so far, so a fast upstream's pieces cross in one wake-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Offload(Protocol):
    """Runs fn() off the loop (on a worker thread); the loop awaits its result."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


async def in_executor(fn: Callable[[], T]) -> T:
    """The default Offload: fn() on the running loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def on_loop(sink: Callable[[T], None], loop: asyncio.AbstractEventLoop) -> Callable[[T], None]:
    """sink, called on loop whichever thread calls the result (in the order of the calls)."""

    def deliver(item: T) -> None:
        if _running_loop() is loop:
            sink(item)
        else:
            loop.call_soon_threadsafe(sink, item)

    return deliver


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_END = object()


class _Handover:
    """Items from the worker thread to the loop; the worker stops at its next item once ``stopped`` is set."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stopped = threading.Event()
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._woken = False  # a wake-up is on its way (the loop has not taken the items yet)
        self._waiter: asyncio.Future[None] | None = None

    def read(self, items: Iterator[Any]) -> None:
        """(worker) Hand over every item, then the end or the exception that ended the iterator."""
        try:
            for item in items:
                if self.stopped.is_set():
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()  # a generator: GeneratorExit inside the provider closes its response
                    return
                self._put(item)
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which raises it where the stream is read
            self._put(_Raised(exc))

    async def take(self) -> list[Any]:
        """(loop) Everything handed over so far, waiting for the first item."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._woken = False
                    return items
            waiter = self.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def _put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            if self._woken:
                return
            self._woken = True
        self.loop.call_soon_threadsafe(self._arrived)

    def _arrived(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def bridged(make: Callable[[], Iterator[T]], offload: Offload) -> AsyncGenerator[T, None]:
    """The items of make() (a blocking iterator, built and read on one worker thread), on the loop."""
    handover = _Handover(asyncio.get_running_loop())
    reading = asyncio.ensure_future(offload(lambda: handover.read(make())))
    try:
        while True:
            for item in await handover.take():
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
    finally:
        handover.stopped.set()  # the reader left early: the worker stops at its next item
        if reading.done() and not reading.cancelled():
            reading.exception()  # read() hands every exception over; this only marks the future's as seen
