"""bridge.bridged: a blocking iterator read on a worker thread, its items on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator_core.bridge import bridged, in_executor, on_loop


def test_every_item_arrives_in_order_then_the_stream_ends() -> None:
    async def run() -> list[int]:
        return [item async for item in bridged(lambda: iter(range(500)), in_executor)]

    assert asyncio.run(run()) == list(range(500))


def test_the_exception_that_ended_the_iterator_is_raised_on_the_loop_after_the_items_before_it() -> None:
    def items() -> Iterator[str]:
        yield "a"
        raise ValueError("the host broke off")

    async def run() -> list[str]:
        got = []
        with pytest.raises(ValueError, match="broke off"):
            async for item in bridged(items, in_executor):
                got.append(item)
        return got

    assert asyncio.run(run()) == ["a"]


def test_a_reader_that_leaves_closes_the_iterator_on_its_thread_at_the_next_item() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            n = 0
            while True:
                time.sleep(0.01)
                n += 1
                yield n
        finally:
            closed.set()

    async def run() -> None:
        stream = bridged(items, in_executor)
        async for item in stream:
            if item == 3:
                break
        await stream.aclose()

    asyncio.run(run())
    assert closed.wait(2), "the worker kept reading after the reader left"


def test_on_loop_calls_the_sink_on_the_loop_whichever_thread_calls_it() -> None:
    async def run() -> tuple[int, list[tuple[int, int]]]:
        seen: list[tuple[int, int]] = []
        sink = on_loop(lambda n: seen.append((n, threading.get_ident())), asyncio.get_running_loop())
        sink(1)
        await asyncio.to_thread(sink, 2)
        await asyncio.sleep(0.01)
        return threading.get_ident(), seen

    loop_thread, seen = asyncio.run(run())
    assert seen == [(1, loop_thread), (2, loop_thread)]
