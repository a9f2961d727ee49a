"""The hot path: a call where nothing changed runs no SQL, and a fallback hop asks no host and starts no thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats

from orchestrator_core.errors import ProviderUnavailableError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, FailureCache
from orchestrator_core.store.generations import generations_for
from tests.helpers import ANTHROPIC, FAKE_OPENAI_KEY, LMSTUDIO, OLLAMA, OPENAI, lmstudio_models, openai_answer, settings

HELLO = [{"role": "user", "content": "Say hello"}]
KEYS = {"openai": FAKE_OPENAI_KEY, "anthropic": "sk-ant-test-0123456789"}
CLAUDE_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Claude here"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


class Clock:
    """A monotonic clock the test moves by hand, so "within the freshness window" is not a race."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1", port=8080).mock(side_effect=httpx.ConnectError("refused"))
        yield router


@pytest.fixture
def orch(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    o = Orchestrator.from_settings(settings(db_url, env_keys=KEYS, local_hosts=("lmstudio", "ollama")))
    o.registry.add("lmstudio:qwen", priority=50)
    assert o.warming is not None
    o.warming.result(timeout=30)  # its reads poll the counters too: done before a test moves the clock
    yield o
    o.close()


@pytest.fixture
def clock(orch: Orchestrator) -> Clock:
    fake = Clock()
    generations_for(orch.db)._clock = fake
    generations_for(orch.db).refresh()  # reads before the swap (the warm-up, registry.add's connection check) ran on the real clock
    orch.manager._clock = fake
    return fake


def statements_on_this_thread(orch: Orchestrator) -> list[str]:
    """Every SQL statement the calling thread runs from now on (the metrics writer has its own thread)."""
    caller = threading.get_ident()
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == caller:
            seen.append(statement)

    event.listen(orch.db.engine, "before_cursor_execute", note)
    generations = generations_for(orch.db)
    if generations._direct:  # SQLite: the change counters are read on a driver connection of their own
        generations.refresh()
        generations.token("failures")  # opened now (if the warm-up's poll did not), then traced
        assert generations._connection is not None
        driver = generations._connection.dbapi_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_trace_callback(lambda statement: note(None, None, statement))
    return seen


def test_a_steady_state_call_runs_no_sql_statement(
    orch: Orchestrator, wire: respx.MockRouter, clock: Clock
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("Hi"))
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    wire.get(f"{OLLAMA}/api/ps").respond(json={"models": []})
    wire.get(f"{OLLAMA}/api/tags").respond(json={"models": []})
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(json=openai_answer("local", "qwen"))
    orch.chat("openai:gpt-4.1-mini", HELLO)
    orch.chat("lmstudio:qwen", HELLO)  # warm: caches loaded, host listed
    seen = statements_on_this_thread(orch)
    for _ in range(5):
        assert orch.chat("openai:gpt-4.1-mini", HELLO).text == "Hi"
        assert orch.chat("lmstudio:qwen", HELLO).text == "local"
    clock.now += orch.settings.status_cache_ttl_s + 1  # the host is asked again: still no SQL of ours
    seen_after_poll = len(seen)
    assert orch.chat("lmstudio:qwen", HELLO).text == "local"
    assert seen[:seen_after_poll] == []
    # Past the freshness window, one query reads every area's change counter, and nothing else runs.
    assert [s.split()[0:4] for s in seen[seen_after_poll:]] == [["SELECT", "cache_generations.area,", "cache_generations.generation", "FROM"]]


def test_a_fallback_past_a_cooling_model_asks_no_host_and_starts_no_thread(
    orch: Orchestrator, wire: respx.MockRouter, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = [
        wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": False})),
        wire.get(f"{OLLAMA}/api/ps").respond(json={"models": []}),
        wire.get(f"{OLLAMA}/api/tags").respond(json={"models": []}),
    ]
    openai = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer())
    wire.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE_ANSWER)
    orch.failures.record("openai:gpt-4.1-mini", "rate_limit", "slow down", 600)
    assert orch.chat("openai:gpt-4.1-mini", HELLO).model_id == "anthropic:claude-haiku-4-5"  # warm
    asked = sum(r.call_count for r in hosts)
    started: list[str] = []
    original = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    clock.now += orch.settings.status_cache_ttl_s + 1  # the hosts' answers are stale now
    for _ in range(3):
        result = orch.chat("openai:gpt-4.1-mini", HELLO)
        assert result.model_id == "anthropic:claude-haiku-4-5"
        assert [a.outcome for a in result.attempts] == ["skipped", "ok"]
    assert sum(r.call_count for r in hosts) == asked  # choosing the fallback asked no host
    assert openai.call_count == 0
    assert started == []



def test_the_first_cooldown_write_after_start_compiles_no_statement(orch: Orchestrator) -> None:
    assert orch.warming is not None
    orch.warming.result(timeout=30)
    hits: list[CacheStats] = []

    def note(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        if threading.current_thread().name == "failure-cache-writer":
            hits.append(context.cache_hit)

    event.listen(orch.db.engine, "after_cursor_execute", note)
    orch.manager.record_failure("openai:gpt-4.1-mini", ProviderUnavailableError("down", provider="openai"))
    assert orch.failures.flush(timeout_s=30)

    assert hits and set(hits) == {CacheStats.CACHE_HIT}  # the start-up rehearsal compiled every one of them
    assert [e.model_id for e in orch.failures.all()] == ["openai:gpt-4.1-mini"]  # and kept nothing


def test_a_failed_call_leaves_its_cooldown_write_and_the_reload_to_the_writer_thread(
    orch: Orchestrator, wire: respx.MockRouter, clock: Clock
) -> None:
    wire.post(f"{OPENAI}/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE_ANSWER)
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({}))
    wire.get(f"{OLLAMA}/api/ps").respond(json={"models": []})
    wire.get(f"{OLLAMA}/api/tags").respond(json={"models": []})
    orch.chat("anthropic:claude-haiku-4-5", HELLO)  # warm: caches loaded, as in a running app
    orch.registry.list()
    seen = statements_on_this_thread(orch)

    assert orch.chat("openai:gpt-4.1-mini", HELLO).model_id == "anthropic:claude-haiku-4-5"
    assert orch.failures.flush(timeout_s=30)  # the writer has written it, and taken the rows back
    again = orch.chat("openai:gpt-4.1-mini", HELLO)

    assert [" ".join(s.split()[:4]) for s in seen] == []  # no write on the calling thread, no reload after it
    assert [a.outcome for a in again.attempts] == ["skipped", "ok"]  # honoured, and in the database:
    with orch.db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT model_id FROM model_failures").scalars().all() == ["openai:gpt-4.1-mini"]


def test_the_rehearsed_cooldown_write_keeps_no_row_and_changes_no_counter(db_url: str) -> None:
    db = Database.open(db_url)
    generations = generations_for(db)
    before = generations.token("failures")
    FailureCache(db).warm()
    generations.refresh()

    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM model_failures").scalar() == 0
    assert generations.token("failures")[0] == before[0]
    db.dispose()


def test_a_read_only_start_rehearses_no_write(db_url: str) -> None:
    with Orchestrator.from_settings(settings(db_url), check_writable=False) as read_only:
        assert read_only.warming is None


def test_the_statistics_for_ranking_are_read_after_the_call_that_asked(
    orch: Orchestrator, wire: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[str] = []
    submit = orch._pool.submit

    def noting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        submitted.append(getattr(fn, "__name__", ""))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(orch._pool, "submit", noting)
    during: list[list[str]] = []

    def backup_answers(request: httpx.Request) -> httpx.Response:
        during.append(list(submitted))
        return httpx.Response(200, json=CLAUDE_ANSWER)

    wire.post(f"{OPENAI}/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{ANTHROPIC}/v1/messages").mock(side_effect=backup_answers)
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({}))
    wire.get(f"{OLLAMA}/api/ps").respond(json={"models": []})
    wire.get(f"{OLLAMA}/api/tags").respond(json={"models": []})

    assert orch.chat("openai:gpt-4.1-mini", HELLO).model_id == "anthropic:claude-haiku-4-5"

    assert "_refresh_stats_in_background" not in during[0]  # the query did not share the CPU with the call
    assert "_refresh_stats_in_background" in submitted  # it runs once the call has ended
