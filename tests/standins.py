"""Loopback stand-ins for hosted OpenAI-compatible APIs: one that answers and one that is down.

They speak the wire the official API speaks (/v1/models with a Bearer key, /v1/chat/completions plain and
streamed as SSE), so the console and the core talk to them exactly as to the real service.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Stand-in answer from {model}."


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path))
        if self.path.rstrip("/").endswith("/models"):
            if not self._authorized():
                return
            self._json({"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        else:
            self._json({"error": {"message": "Not found", "type": "invalid_request_error"}}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append(("POST", self.path))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json({"error": {"message": "Not found", "type": "invalid_request_error"}}, 404)
        elif self.server.fails:
            self._json({"error": {"message": "The stand-in is overloaded.", "type": "server_error"}}, 503)
        elif self._authorized():
            self._answer(str(body.get("model", "")), bool(body.get("stream")))

    def _authorized(self) -> bool:
        expected = self.server.key
        if expected is None or self.headers.get("authorization") == f"Bearer {expected}":
            return True
        self._json({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                              "code": "invalid_api_key"}}, 401)
        return False

    def _answer(self, model: str, stream: bool) -> None:
        words = ANSWER.format(model=model).split(" ")
        if not stream:
            self._json({"id": "chatcmpl-standin", "object": "chat.completion", "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": " ".join(words)}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for i, word in enumerate(words):
            chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(self.server.word_delay_s)
        done = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True

    def _json(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, fails: bool, key: str | None, models: tuple[str, ...], word_delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fails, self.key, self.models, self.word_delay_s = fails, key, models, word_delay_s
        self.seen: list[tuple[str, str]] = []


class StandIn:
    """A running stand-in: ``base_url`` ends in /v1, like the real API's."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    @property
    def seen(self) -> list[tuple[str, str]]:
        return self._server.seen


@contextmanager
def openai_standin(*, fails: bool = False, key: str | None = None, models: tuple[str, ...] = ("gpt-4.1-mini",),
                   word_delay_s: float = 0.02) -> Iterator[StandIn]:
    """Serve an OpenAI-compatible API on a free 127.0.0.1 port until the block ends."""
    server = _Server(fails=fails, key=key, models=models, word_delay_s=word_delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StandIn(server)
    finally:
        server.shutdown()
        server.server_close()
