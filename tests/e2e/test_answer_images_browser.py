"""In a real browser, an answer that embeds images makes no request to the image host: it shows links instead."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from orchestrator_core.orchestrator import Orchestrator
from tests.e2e.live import Console, free_port, isolated_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODEL = "custom:injected"


class Loopback(ThreadingHTTPServer):
    """A 127.0.0.1 server that records every request and answers each with reply(path)."""

    def __init__(self, reply: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.daemon_threads = True
        self.reply = reply
        self.paths: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Loopback

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.paths.append(self.path)
        content_type, body = self.server.reply(self.path)
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


def sse_answer(text: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "injected",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


@pytest.fixture
def image_host() -> Iterator[Loopback]:
    server = Loopback(lambda path: ("image/png", b"\x89PNG\r\n\x1a\n"))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def model_host(image_host: Loopback) -> Iterator[Loopback]:
    leak = f"{image_host.url}/leak?q=the+whole+conversation"
    answer = (f"**Here is your summary.**\n\n![]({leak})\n\n![chart][c]\n\n<img src=\"{image_host.url}/raw.png\">\n\n"
              f"[c]: {image_host.url}/reference.png\n")
    server = Loopback(lambda path: ("text/event-stream", sse_answer(answer)))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def console(tmp_path: Path, model_host: Loopback) -> Iterator[Console]:
    with Orchestrator.from_settings() as orch:  # ORCHESTRATOR_HOME is tmp_path: the console's database
        orch.registry.add(MODEL, priority=1)
    env = isolated_env(tmp_path, CUSTOM_BASE_URL=f"{model_host.url}/v1", LOCAL_HOSTS="lmstudio",
                       LMSTUDIO_BASE_URL=f"http://127.0.0.1:{free_port()}", CONNECT_TIMEOUT_S="0.5",
                       STATUS_TIMEOUT_S="0.5")
    server = Console(tmp_path, env, tmp_path / "streamlit.log")
    yield server
    server.stop()


def test_an_answer_with_images_loads_none_of_them_and_shows_the_links(console: Console, image_host: Loopback,
                                                                      model_host: Loopback, browser: Any) -> None:
    context = browser.new_context()  # the session's one browser (tests/e2e/conftest.py)
    try:
        page = context.new_page()
        page.goto(f"{console.url}/chat")
        prompt = page.get_by_test_id("stChatInputTextArea")
        prompt.wait_for(timeout=60_000)
        prompt.fill("Summarise our conversation")
        prompt.press("Enter")
        # .first: while the page reruns after the answer, the streamed bubble and the re-rendered one can both
        # be on the page for a moment.
        page.get_by_text(f"answered by {MODEL}").first.wait_for(timeout=60_000)
        page.get_by_text("Here is your summary.").first.wait_for()
        expect(page.get_by_text("Here is your summary.")).to_have_count(1)  # the rerun has settled
        links = [a.get_attribute("href") or "" for a in page.locator("a").all()]
        images = [i.get_attribute("src") or "" for i in page.locator("img").all()]
        page.screenshot(path=str(console.log.parent / "answer.png"), full_page=True)
    finally:
        context.close()
    assert [p for p in model_host.paths if "chat/completions" in p]  # the model was asked
    assert image_host.paths == []  # the browser never fetched an image from the answer
    assert not [src for src in images if image_host.url in src]
    assert any("leak?q=the+whole+conversation" in href for href in links)  # shown as a link the operator sees
