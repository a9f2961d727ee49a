"""Orchestrator.astream_chat, the gateway's stream: what the fault matrix's on-loop rows do not show.

A reader that leaves mid-stream or during a load, progress events on the loop's thread, and the worker-thread bridge
of a provider without a native async stream (Anthropic here) stopping when the reader leaves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from orchestrator_core.bridge import Offload, in_executor
from orchestrator_core.orchestrator import Orchestrator
from tests.faults.conftest import OrchFactory, assert_nothing_left_behind, metric_rows, running_threads
from tests.faults.fault_server import FaultServer, Reply, Seen
from tests.faults.wire import (
    HELLO,
    LMSTUDIO_LOAD,
    LMSTUDIO_STATUS,
    SHAPES,
    anthropic_stream,
    healthy,
    healthy_for,
    lmstudio_models,
    openai_stream,
)

T = TypeVar("T")


async def read_one_piece_then_leave(orch: Orchestrator, model_id: str) -> list[str]:
    """Read the first piece, then cancel the reading task as the gateway does when its client leaves."""
    pieces: list[str] = []
    got_one = asyncio.Event()

    async def read() -> None:
        async for piece in orch.astream_chat(model_id, HELLO, fallback=False):
            pieces.append(piece)
            got_one.set()

    task = asyncio.ensure_future(read())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await orch.aclose()
    return pieces


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
def test_a_reader_that_leaves_mid_stream_leaves_a_cancelled_row_and_nothing_running(
    shape: str, server: FaultServer, make_orch: OrchFactory,
) -> None:
    target = SHAPES[shape]
    first = openai_stream(["Hel"], target.model)[:1] if shape == "openai" else anthropic_stream(
        ["Hel"], target.model, stop=False)[:2]
    server.script(target.call_path(True), Reply.stream(first, then="stall"))
    orch = make_orch()
    baseline = running_threads()

    pieces = asyncio.run(read_one_piece_then_leave(orch, target.model_id))

    assert pieces == ["Hel"]
    rows = [(r.model, r.outcome, r.error_kind) for r in metric_rows(orch)]
    assert rows == [(target.model_id, "error", "cancelled")]
    assert orch.cooldown(target.model_id) is None, "a reader leaving is not the model's failure"
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_progress_events_reach_the_sink_on_the_loop_thread_in_order(server: FaultServer,
                                                                     make_orch: OrchFactory) -> None:
    dead = SHAPES["custom"]
    healthy = healthy_for(dead)
    server.script(dead.call_path(True), Reply.json(503, {"error": {"message": "down"}}))
    server.script(healthy.call_path(True), Reply.stream(openai_stream(["fi", "ne"], healthy.model)))
    orch = make_orch(inactive=("custom:healthy",))
    seen: list[tuple[str, str, int]] = []

    async def run() -> tuple[int, str, str | None]:
        stream = orch.astream_chat(dead.model_id, HELLO, fallback=True,
                                   on_event=lambda e: seen.append((e.kind, e.model_id, threading.get_ident())))
        text = "".join([piece async for piece in stream])
        assert stream.result is not None
        await orch.aclose()
        return threading.get_ident(), text, stream.result.model_id

    loop_thread, text, answered_by = asyncio.run(run())

    assert (text, answered_by) == ("fine", healthy.model_id)
    assert {thread for *_, thread in seen} == {loop_thread}
    kinds = [(kind, model) for kind, model, _ in seen]
    assert kinds[0] == ("answering", dead.model_id)
    assert ("attempt_failed", dead.model_id) in kinds
    assert kinds[-1] == ("answering", healthy.model_id)
    rows = [(r.model, r.outcome, r.fallback_from) for r in metric_rows(orch)]
    assert rows == [(dead.model_id, "error", None), (healthy.model_id, "ok", dead.model_id)]


def test_a_reader_that_leaves_during_a_load_gets_its_attempt_recorded_as_cancelled_once_the_load_ends(
    server: FaultServer, make_orch: OrchFactory,
) -> None:
    state = {"loaded": False}

    def load(_: Seen) -> Reply:
        time.sleep(0.5)  # the reader leaves meanwhile
        state["loaded"] = True
        return Reply.json(200, {"instance_id": "qwen", "status": "loaded"})

    server.script(LMSTUDIO_STATUS, lambda _: Reply.json(200, lmstudio_models(loaded=state["loaded"])))
    server.script(LMSTUDIO_LOAD, load)
    orch = make_orch(local_hosts=("lmstudio",), status_cache_ttl_s=0.0, poll_interval_s=0.02, load_timeout_s=5.0)

    async def leave_while_loading() -> None:
        async def read() -> None:
            async for _ in orch.astream_chat("lmstudio:qwen", HELLO, fallback=False):
                pass

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while not orch.metrics.flush() or not metric_rows(orch):
            assert time.monotonic() < deadline, "the prepared attempt was never recorded"
            await asyncio.sleep(0.05)
        await orch.aclose()

    asyncio.run(leave_while_loading())
    rows = [(r.model, r.outcome, r.error_kind) for r in metric_rows(orch)]
    assert rows == [("lmstudio:qwen", "error", "cancelled")]
    assert state["loaded"], "the load went on: another caller will want the model"


def counting_offload(hops: list[str]) -> Offload:
    async def offload(fn: Callable[[], T]) -> T:
        hops.append(getattr(getattr(fn, "func", fn), "__name__", "?"))
        return await in_executor(fn)

    return offload  # type: ignore[return-value]


@pytest.mark.parametrize("stream", [True, False])
def test_a_ready_hosted_model_answers_with_no_worker_hop(stream: bool, server: FaultServer,
                                                         make_orch: OrchFactory) -> None:
    target = SHAPES["openai"]
    server.script(target.call_path(stream), healthy(target))
    orch = make_orch()
    hops: list[str] = []

    async def run() -> str:
        offload = counting_offload(hops)
        try:
            if not stream:
                return (await orch.achat(target.model_id, HELLO, offload=offload)).text
            return "".join([piece async for piece in orch.astream_chat(target.model_id, HELLO, offload=offload)])
        finally:
            await orch.aclose()

    assert asyncio.run(run()) == "fine"
    assert hops == [], "check-and-load of a ready hosted model needs no worker, nor does its bookkeeping"
    assert [(r.model, r.outcome) for r in metric_rows(orch)] == [(target.model_id, "ok")]


def test_a_local_model_whose_status_is_not_known_fresh_is_checked_on_a_worker(server: FaultServer,
                                                                             make_orch: OrchFactory) -> None:
    target = SHAPES["lmstudio"]
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models(loaded=True)))
    server.script(target.call_path(True), healthy(target))
    orch = make_orch(local_hosts=("lmstudio",), status_cache_ttl_s=60.0)
    hops: list[str] = []

    async def stream_twice() -> None:
        offload = counting_offload(hops)
        for _ in range(2):
            assert "".join([p async for p in orch.astream_chat(target.model_id, HELLO, offload=offload)]) == "fine"
        await orch.aclose()

    asyncio.run(stream_twice())
    assert hops == ["begin"], "the first call asks the host on a worker; the second uses its fresh answer"
    assert orch.manager.ready_from_cache(target.model_id)
    orch.reset_cooldowns()
    orch.manager.invalidate("lmstudio")
    assert not orch.manager.ready_from_cache(target.model_id), "no answer kept: the host must be asked"


def test_a_model_in_cooldown_is_not_ready_from_the_cache(make_orch: OrchFactory) -> None:
    orch = make_orch()
    assert orch.manager.ready_from_cache("openai:gpt-fault")
    orch.failures.record("openai:gpt-fault", "unavailable", "down", 60.0)
    assert not orch.manager.ready_from_cache("openai:gpt-fault")


def test_a_stream_whose_answer_was_whole_when_the_reader_left_is_recorded_as_answered(
    server: FaultServer, make_orch: OrchFactory,
) -> None:
    target = SHAPES["openai"]
    server.script(target.call_path(True), Reply.stream(openai_stream(["Hel", "lo"], target.model), then="stall"))
    orch = make_orch()  # the host sends [DONE] and then nothing: its connection is let go after aio.DRAIN_S

    async def leave_after_the_last_piece() -> None:
        whole = asyncio.Event()

        async def read() -> None:
            async for piece in orch.astream_chat(target.model_id, HELLO, fallback=False):
                if piece == "lo":
                    whole.set()

        task = asyncio.ensure_future(read())
        await asyncio.wait_for(whole.wait(), 5)
        await asyncio.sleep(0.03)  # within the wait for the body's end
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await orch.aclose()

    asyncio.run(leave_after_the_last_piece())
    rows = [(r.model, r.outcome, r.completion_tokens) for r in metric_rows(orch)]
    assert rows == [(target.model_id, "ok", 2)], "a whole answer is an answer: its tokens and cost count"


def test_a_cancelled_achat_leaves_a_cancelled_row(server: FaultServer, make_orch: OrchFactory) -> None:
    target = SHAPES["openai"]
    server.script(target.call_path(False), Reply.stall())
    orch = make_orch(read_timeout_s=5.0)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await orch.achat(target.model_id, HELLO, fallback=False)
        await orch.aclose()

    asyncio.run(give_up())
    assert [(r.model, r.outcome, r.error_kind) for r in metric_rows(orch)] == [(target.model_id, "error", "cancelled")]
    assert orch.cooldown(target.model_id) is None


def test_a_local_model_unloaded_after_the_cache_said_ready_is_never_probed_nor_loaded_on_the_loop(
    server: FaultServer, make_orch: OrchFactory,
) -> None:
    target = SHAPES["lmstudio"]
    state = {"loaded": True}
    server.script(LMSTUDIO_STATUS, lambda _: Reply.json(200, lmstudio_models(loaded=state["loaded"])))
    server.script(LMSTUDIO_LOAD, Reply.json(200, {"instance_id": "qwen", "status": "loaded"}))
    server.script(target.call_path(True), healthy(target))
    orch = make_orch(local_hosts=("lmstudio",), status_cache_ttl_s=60.0)
    manager = orch.manager
    on_threads: list[str] = []
    for name in ("check_status", "ensure_ready"):
        real = getattr(manager, name)

        def spy(*args: object, _real: Callable[..., object] = real, **kwargs: object) -> object:
            on_threads.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        setattr(manager, name, spy)

    async def stream() -> str:
        text = "".join([p async for p in orch.astream_chat(target.model_id, HELLO)])
        await orch.aclose()
        return text

    assert asyncio.run(stream()) == "fine"  # the first call asks the host, on a worker
    assert "MainThread" not in on_threads
    on_threads.clear()
    state["loaded"] = False  # unloaded on the host since: the cached answer still says loaded
    assert asyncio.run(stream()) == "fine"
    assert on_threads == [], "the fresh cached answer was used as it was: no probe and no load on the loop"


def test_with_a_budget_the_spend_is_summed_on_a_worker_not_on_the_loop(
    server: FaultServer, make_orch: OrchFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator_core.store import spend

    target = SHAPES["openai"]
    server.script(target.call_path(False), healthy(target))
    orch = make_orch()
    orch.set_budget(target.provider, "month", 1000.0)
    summed_on: list[str] = []
    real = spend.spend_by_provider

    def spy(*args: object, **kwargs: object) -> object:
        summed_on.append(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spend, "spend_by_provider", spy)

    async def calls() -> None:
        for _ in range(3):
            assert (await orch.achat(target.model_id, HELLO, fallback=False)).text == "fine"
            orch.metrics.flush()  # the costed row bumps the spend counter: the next check sums again
        await orch.aclose()

    asyncio.run(calls())
    assert summed_on, "the budget was checked against the spend"
    assert "MainThread" not in summed_on
