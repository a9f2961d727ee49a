"""The pages while another connection holds SQLite's write lock: "the database is busy", never a traceback.

The lock is a real one (BEGIN IMMEDIATE on a second sqlite3 connection), taken after the page first
rendered; the busy wait is shortened so each refused write answers in a fraction of a second.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import respx
from streamlit.testing.v1 import AppTest

from console import shared, state
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow
from orchestrator_core.store import db as db_module
from tests.console.apptools import all_values, lmstudio_down, start, texts
from tests.helpers import MISTRAL, OPENAI

Lock = Callable[[], AbstractContextManager[None]]
PLAIN = "sk-live-PLAINTEXT-0123456789-busy"


@pytest.fixture
def write_lock(app_env: str, monkeypatch: pytest.MonkeyPatch, wire: respx.MockRouter) -> Lock:
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 300)
    lmstudio_down(wire)
    path = app_env.removeprefix("sqlite:///")

    @contextmanager
    def held() -> Iterator[None]:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    return held


def busy_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error if "database is busy" in e.value]


def assert_no_sql_on_the_page(at: AppTest) -> None:
    shown = all_values(at)
    for leak in ("INSERT", "OperationalError", "gAAAA", "sqlite3"):
        assert leak not in shown
    assert not any(PLAIN in text for text in texts(at))  # only the password field holds it


def test_adding_a_key_while_the_database_is_busy_says_so_and_keeps_what_was_typed(write_lock: Lock) -> None:
    at = start("app_pages/keys.py")
    with write_lock():
        at.selectbox(key="new_key_provider").set_value("openai")
        at.text_input(key="new_key_label").set_value("work")
        at.text_input(key="new_key_value").set_value(PLAIN)
        at.button(key="FormSubmitter:add_key_form-Save key").click().run()
    assert not at.exception
    assert busy_errors(at) and "try again" in busy_errors(at)[0]
    assert at.text_input(key="new_key_label").value == "work"
    assert at.text_input(key="new_key_value").value == PLAIN
    assert_no_sql_on_the_page(at)


def test_adding_a_model_while_the_database_is_busy_says_so_and_keeps_what_was_typed(write_lock: Lock) -> None:
    at = start("app_pages/models.py")
    with write_lock():
        at.text_input(key="new_model_id").set_value("openai:gpt-busy")
        at.button(key="FormSubmitter:add_model_form-Add model").click().run()
    assert not at.exception
    assert busy_errors(at)
    assert at.text_input(key="new_model_id").value == "openai:gpt-busy"
    assert_no_sql_on_the_page(at)


def test_a_failing_chat_while_the_database_is_busy_shows_the_failure_not_a_traceback(
    write_lock: Lock, wire: respx.MockRouter, with_openai_key: str
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(503, json={"error": {"message": "overloaded"}})
    at = start("app_pages/chat.py")
    with write_lock():
        at.chat_input(key="chat_prompt").set_value("hello").run()
    assert not at.exception
    assert any(t.startswith("No model could answer") for t in texts(at))
    assert_no_sql_on_the_page(at)


def test_the_models_page_does_not_wait_for_every_chart_while_the_writer_is_stuck(write_lock: Lock) -> None:
    at = start("app_pages/models.py")
    orch = shared.orchestrator()
    flushes: list[float] = []
    real_flush = orch.metrics.flush

    def counted(timeout: float = 5.0) -> bool:
        flushes.append(timeout)
        return real_flush(timeout)

    orch.metrics.flush = counted  # type: ignore[method-assign]
    with write_lock():
        orch.metrics.record(MetricRow(model="openai:gpt-4.1-mini", outcome="ok", latency_ms=5.0))
        state.clear_metric_cache()
        at.run()
        assert not at.exception
        charts_read = len(flushes)
    orch.metrics.flush = real_flush  # type: ignore[method-assign]
    # Seven metric reads on this page (stats and six charts): at most the first one waits, briefly.
    assert charts_read <= 1 and all(t <= state.FLUSH_WAIT_S for t in flushes)
    assert orch.metrics.flush(timeout=10)  # and the row is written once the lock is gone


def test_test_all_keys_while_the_database_is_busy_says_so(write_lock: Lock, wire: respx.MockRouter) -> None:
    wire.get(f"{MISTRAL}/models").respond(json={"data": [{"id": "mistral-small-latest"}]})
    with Orchestrator.from_settings() as other:
        other.keys.add("mistral", "work", "mistral-0123456789abcdef0123")
    at = start("app_pages/keys.py")
    with write_lock():
        at.button(key="key_test_all").click().run()
    assert not at.exception
    assert busy_errors(at)
