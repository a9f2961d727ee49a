"""Many threads at once: no metric row lost, no "database is locked", one shared failure cache that stays consistent."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import OrchestratedResult
from tests.faults.conftest import OrchFactory, assert_nothing_left_behind, metric_rows, running_threads
from tests.faults.fault_server import FaultServer, Reply, Seen
from tests.faults.wire import HEALTHY_DEFAULT, HELLO, SHAPES, healthy, openai_answer

THREADS = 8
CALLS = 250
# A fallback call costs three times a plain one (skip, suggest, answer); the race is in the first calls anyway.
STORM_CALLS = 20
PRIMARY = SHAPES["openai"]
RELAXED = {"read_timeout_s": 10.0, "connect_timeout_s": 5.0}  # 8 busy threads share one GIL


def hammer(
    orchs: list[Orchestrator], model_id: str, calls: int, on_result: Callable[[float, OrchestratedResult], None]
) -> list[BaseException]:
    """THREADS threads (spread over the orchestrators) start together and make `calls` chats each;
    returns every exception that escaped a chat."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(orch: Orchestrator) -> None:
        start.wait()
        for _ in range(calls):
            began = time.time()
            try:
                on_result(began, orch.chat(model_id, HELLO))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(orchs[i % len(orchs)],), name=f"hammer-{i}")
               for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.no_cover  # load tests: their paths are covered elsewhere, tracing 2,000 calls triples the time
def test_8_threads_x_250_chats_keep_all_2000_metric_rows(
    server: FaultServer, make_orch: OrchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator_core")
    server.script(HEALTHY_DEFAULT.call_path(False), Reply.json(200, openai_answer("fine", "healthy")))
    baseline = running_threads()
    orch = make_orch(**RELAXED)
    results: list[OrchestratedResult] = []
    errors = hammer([orch], HEALTHY_DEFAULT.model_id, CALLS, lambda _t, r: results.append(r))

    assert errors == []
    assert len(results) == THREADS * CALLS
    rows = metric_rows(orch)
    assert len(rows) == THREADS * CALLS
    assert {r.request_id for r in rows} == {r.request_id for r in results}  # every call has its own row
    assert Counter(r.outcome for r in rows) == {"ok": THREADS * CALLS}
    assert len(server.requests_to(HEALTHY_DEFAULT.call_path(False))) == THREADS * CALLS
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [] and "database is locked" not in caplog.text
    orch.close()
    assert_nothing_left_behind(server, baseline)


@pytest.mark.no_cover  # load tests: their paths are covered elsewhere, tracing 2,000 calls triples the time
def test_shared_failure_cache_under_8_threads_counts_every_failure_once_and_keeps_resets(
    server: FaultServer, make_orch: OrchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    state = {"healthy": False}

    def primary(seen: Seen) -> Reply:
        if state["healthy"]:
            return Reply.json(200, openai_answer("primary", PRIMARY.model))
        return Reply.json(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, {"retry-after": "30"})

    server.script(PRIMARY.call_path(False), primary)
    server.script(HEALTHY_DEFAULT.call_path(False), healthy(HEALTHY_DEFAULT))
    baseline = running_threads()
    # Two orchestrators on one database: two processes sharing the failure cache, as console and CLI do.
    first = make_orch(**RELAXED)
    second = make_orch(share_with=first)
    storm = Counter[str]()
    lock = threading.Lock()

    def count(_began: float, result: OrchestratedResult) -> None:
        with lock:
            storm[result.model_id] += 1

    errors = hammer([first, second], PRIMARY.model_id, STORM_CALLS, count)
    assert errors == []
    assert storm == {HEALTHY_DEFAULT.model_id: THREADS * STORM_CALLS}  # every call answered by the fallback

    served_429 = len(server.requests_to(PRIMARY.call_path(False)))
    assert served_429 > 1, "the threads did not fail concurrently, so the race was not exercised"
    assert first.failures.flush() and second.failures.flush()  # both writers have taken their cooldowns down
    entry = first.failures.get(PRIMARY.model_id)
    assert entry is not None
    assert entry.failure_count == served_429  # every failure counted, none lost to a race
    assert (entry.until - entry.since).total_seconds() == pytest.approx(30, abs=2)  # no double cooldown
    assert second.metrics.flush()
    rows = metric_rows(first)
    outcomes = Counter((r.model, r.outcome) for r in rows)
    assert outcomes[(PRIMARY.model_id, "error")] == served_429
    assert outcomes[(PRIMARY.model_id, "skipped")] == THREADS * STORM_CALLS - served_429
    assert outcomes[(HEALTHY_DEFAULT.model_id, "ok")] == THREADS * STORM_CALLS

    # The provider recovers and the operator resets the model while both "processes" keep chatting.
    after_reset: list[OrchestratedResult] = []
    reset_at: list[float] = []
    finished = [0]

    def watch(began: float, result: OrchestratedResult) -> None:
        with lock:
            finished[0] += 1
            if not reset_at and finished[0] == THREADS:
                # The reset happens inside the storm, at a point every run reaches: later calls of
                # this thread (and of the others) begin after it, on both "processes".
                state["healthy"] = True
                first.manager.reset_failed(PRIMARY.model_id)
                reset_at.append(time.time())
            elif reset_at and began > reset_at[0]:
                after_reset.append(result)

    errors = hammer([first, second], PRIMARY.model_id, STORM_CALLS, watch)
    assert errors == []
    assert after_reset, "some calls started after the reset"
    # No lost reset: every call that began after it went to the primary model, none was skipped.
    assert {r.model_id for r in after_reset} == {PRIMARY.model_id}
    assert all(a.outcome == "ok" for r in after_reset for a in r.attempts)
    assert second.failures.get(PRIMARY.model_id) is None
    assert "database is locked" not in caplog.text
    second.close()
    first.close()
    assert_nothing_left_behind(server, baseline)
