"""Loopback stand-ins for hosted OpenAI-compatible APIs (one that answers, one that is down) and local hosts.

They speak the wire the official API speaks (/v1/models with a Bearer key, /v1/chat/completions plain and
streamed as SSE), so the console and the core talk to them exactly as to the real service. A llama-server
stand-in (``llamacpp_standin``) answers GET /models in router mode with every model loaded.
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
        self.server.keys_seen.append(self.headers.get("authorization", ""))
        if self.server.router and self.path.rstrip("/") == "/models":  # llama-server's router list
            self._json({"data": [{"id": m, "status": {"value": "loaded"}} for m in self.server.models]})
        elif self.path.rstrip("/").endswith("/models"):
            if not self._authorized():
                return
            self._json({"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        else:
            self._json({"error": {"message": "Not found", "type": "invalid_request_error"}}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append(("POST", self.path))
        self.server.keys_seen.append(self.headers.get("authorization", ""))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json({"error": {"message": "Not found", "type": "invalid_request_error"}}, 404)
        elif self.headers.get("authorization", "").removeprefix("Bearer ") in self.server.rate_limited:
            self._json({"error": {"message": "Rate limit reached for this key.", "type": "requests"}}, 429,
                       {"retry-after": "30"})
        elif self.server.fails:
            self._json({"error": {"message": "The stand-in is overloaded.", "type": "server_error"}}, 503)
        elif self._authorized():
            self._answer(str(body.get("model", "")), bool(body.get("stream")))

    def _authorized(self) -> bool:
        expected = self.server.key
        sent = self.headers.get("authorization", "").removeprefix("Bearer ")
        if expected is None or sent == expected or sent in self.server.rate_limited:
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

    def _json(self, body: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, fails: bool, key: str | None, models: tuple[str, ...], word_delay_s: float,
                 router: bool = False, rate_limited: tuple[str, ...] = ()) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fails, self.key, self.models, self.word_delay_s = fails, key, models, word_delay_s
        self.router = router
        self.rate_limited = set(rate_limited)  # keys answered with 429 and retry-after: 30
        self.seen: list[tuple[str, str]] = []
        self.keys_seen: list[str] = []  # the Authorization header of every request, in order


class StandIn:
    """A running stand-in: ``base_url`` ends in /v1, like the real API's."""

    def __init__(self, server: _Server, *, root: bool = False) -> None:
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}" + ("" if root else "/v1")

    @property
    def seen(self) -> list[tuple[str, str]]:
        return self._server.seen

    @property
    def keys_seen(self) -> list[str]:
        return self._server.keys_seen

    @property
    def fails(self) -> bool:
        return self._server.fails

    @fails.setter
    def fails(self, value: bool) -> None:
        self._server.fails = value


@contextmanager
def openai_standin(*, fails: bool = False, key: str | None = None, models: tuple[str, ...] = ("gpt-4.1-mini",),
                   word_delay_s: float = 0.02, rate_limited: tuple[str, ...] = ()) -> Iterator[StandIn]:
    """Serve an OpenAI-compatible API on a free 127.0.0.1 port until the block ends."""
    with _serving(_Server(fails=fails, key=key, models=models, word_delay_s=word_delay_s,
                          rate_limited=rate_limited)) as server:
        yield StandIn(server)


@contextmanager
def llamacpp_standin(*, models: tuple[str, ...] = ("tiny.gguf",), fails: bool = False) -> Iterator[StandIn]:
    """Serve a llama-server in router mode (every model loaded); ``base_url`` is the host root."""
    with _serving(_Server(fails=fails, key=None, models=models, word_delay_s=0.0, router=True)) as server:
        yield StandIn(server, root=True)


@contextmanager
def _serving(server: _Server) -> Iterator[_Server]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
