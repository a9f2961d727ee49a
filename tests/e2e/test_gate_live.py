"""The access gate against a real `streamlit run` and bare websocket clients, as an attacker on the network has it."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator_core.orchestrator import Orchestrator
from tests.e2e.live import UNLOCK, Console, Page, chat_value, free_port, isolated_env, text_value, trigger

PASSWORD = "the operator's password"
PIECES = ["Still ", "streaming ", "after ", "the ", "clear."]
MODEL = "custom:held-stream"


class HeldStream(ThreadingHTTPServer):
    """An OpenAI-compatible host whose streamed answer sends one piece, then waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StreamHandler)
        self.daemon_threads = True
        self.first_piece_sent = threading.Event()
        self.release = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _StreamHandler(BaseHTTPRequestHandler):
    server: HeldStream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for number, piece in enumerate(PIECES):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "held-stream",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if number == 0:
                self.server.first_piece_sent.set()
                self.server.release.wait(30)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def host() -> Iterator[HeldStream]:
    server = HeldStream()
    yield server
    server.stop()


@pytest.fixture
def console(tmp_path: Path, host: HeldStream) -> Iterator[Console]:
    """The console, started from another folder; its password only in the .env of ORCHESTRATOR_HOME (tmp_path)."""
    (tmp_path / ".env").write_text(f"CONSOLE_PASSWORD={PASSWORD}\nCUSTOM_BASE_URL={host.base_url}\n")
    with Orchestrator.from_settings() as orch:  # ORCHESTRATOR_HOME is tmp_path here too: the same default database
        orch.registry.add(MODEL, priority=1)
    elsewhere = tmp_path / "started-here"
    elsewhere.mkdir()
    env = isolated_env(tmp_path, LOCAL_HOSTS="lmstudio", LMSTUDIO_BASE_URL=f"http://127.0.0.1:{free_port()}",
                       CONNECT_TIMEOUT_S="0.5", STATUS_TIMEOUT_S="0.5")
    server = Console(elsewhere, env, tmp_path / "streamlit.log")
    yield server
    server.stop()


def failures_in_db(home: Path) -> int:
    with sqlite3.connect(home / "data" / "orchestrator.db") as conn:
        row = conn.execute("SELECT failures FROM sign_in_limits WHERE scope = 'console'").fetchone()
    return int(row[0]) if row else 0


def errors(page: Page) -> list[str]:
    return page.texts("alert")


def markdown(page: Page) -> str:
    return "\n".join(page.texts("markdown"))


def test_started_from_another_folder_the_gate_reads_the_password_of_its_home(console: Console,
                                                                             tmp_path: Path) -> None:
    visitor = console.session()
    first = visitor.rerun()
    assert [h.body for h in first.of("heading")] == ["🔒 Operator console"]
    assert errors(visitor.sign_in("not it")) == ["Wrong password; 4 more attempts before a 60 s lock."]
    assert failures_in_db(tmp_path) == 1  # the project's database under ORCHESTRATOR_HOME, not ./data
    assert not (tmp_path / "started-here" / "data").exists()
    signed_in = visitor.sign_in(PASSWORD)
    assert next(h.body for h in signed_in.of("heading")) == "🏠 Overview"
    visitor.close()


def test_an_unsigned_clear_cache_neither_resets_the_limiter_nor_breaks_a_signed_in_stream(
    console: Console, host: HeldStream, tmp_path: Path
) -> None:
    operator = console.session()
    assert next(h.body for h in operator.sign_in(PASSWORD).of("heading")) == "🏠 Overview"
    chat = operator.rerun(page="chat")
    prompt = chat.widget_id("chat_input", "chat_prompt")
    answered: list[Page] = []
    streaming = threading.Thread(target=lambda: answered.append(operator.rerun([chat_value(prompt, "hello")],
                                                                               page="chat")))
    streaming.start()
    assert host.first_piece_sent.wait(30), "the operator's answer never started streaming"

    attacker = console.session()
    for _ in range(3):
        attacker.sign_in("guess")
    assert failures_in_db(tmp_path) == 3
    attacker.clear_cache()
    attacker.rerun()  # messages on one socket are handled in order: the clear is done once this run ends
    assert errors(attacker.sign_in("guess")) == ["Wrong password; 1 more attempt before a 60 s lock."]
    assert failures_in_db(tmp_path) == 4

    host.release.set()
    streaming.join(60)
    assert answered, "the operator's run never ended"
    text = markdown(answered[0])
    assert "".join(PIECES) in text and f"answered by {MODEL}" in text
    assert "broke off" not in text and not errors(answered[0])
    with sqlite3.connect(tmp_path / "data" / "orchestrator.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_failures").fetchone()[0] == 0  # no cooldown
    attacker.close()
    operator.close()


def test_thirty_clients_guessing_at_the_same_instant_get_at_most_five_checks(console: Console,
                                                                            tmp_path: Path) -> None:
    clients = [console.session() for _ in range(30)]
    forms = [client.rerun() for client in clients]
    start = threading.Barrier(30)
    answers: list[str] = []

    def guess(number: int) -> None:
        client, form = clients[number], forms[number]
        widgets = [text_value(form.widget_id("text_input", "console_password"), f"guess {number}"),
                   trigger(form.widget_id("button", UNLOCK))]
        start.wait()
        answers.extend(errors(client.rerun(widgets)))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    checked = [a for a in answers if a.startswith("Wrong password")]
    refused = [a for a in answers if a.startswith("Too many wrong passwords")]
    assert [a for a in answers if a not in checked + refused] == []
    assert len(checked) <= 5 and len(checked) + len(refused) == 30
    assert failures_in_db(tmp_path) == 5
    for client in clients:
        client.close()
