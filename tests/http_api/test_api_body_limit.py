"""A body over the size limit is refused (413) before it is read: FastAPI parses a body before it checks the
token, so without the limit a client with no token could make the server hold a body of any size."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from api import limits
from tests.http_api.conftest import LiveServer

LIMIT = 4096


@pytest.fixture(autouse=True)
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BODY_BYTES", LIMIT)  # read when the app builds its middleware


def _exchange(live: LiveServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    where = urlsplit(live.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def test_a_declared_length_over_the_limit_is_refused_unread_and_without_a_token(live: LiveServer) -> None:
    status, headers, body = _exchange(live, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                            "Content-Type: application/json\r\nContent-Length: 1000000000\r\n")
    assert status == 413 and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and "1,000,000,000 bytes" in error["message"]


def test_a_chunked_body_over_the_limit_is_refused_in_the_api_shape(live: LiveServer) -> None:
    piece = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(8)) + b"0\r\n\r\n"
    status, _, body = _exchange(live, "POST /api/failures/reset HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                      "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", chunks)
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"


def test_a_body_under_the_limit_still_reaches_the_route(live: LiveServer) -> None:
    body = json.dumps({"model": "custom:healthy", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, _, _ = _exchange(live, f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                   f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n", body)
    assert status == 401  # no token: the route's own answer


def test_a_chunked_chat_body_over_the_limit_is_refused_though_chat_takes_the_lean_path(live: LiveServer) -> None:
    # The lean chat handler (api/lean.py) sits in front of the middleware: it must not read an unbounded body.
    # The body never ends: the answer must come once the limit is passed, not after the client stops sending.
    piece = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(8))
    status, _, body = _exchange(live, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                      "application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", chunks)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"  # OpenAI's shape on /v1


def test_a_chunked_chat_body_under_the_limit_is_answered(live: LiveServer) -> None:
    body = json.dumps({"model": "custom:healthy", "messages": [{"role": "user", "content": "hi"}]}).encode()
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, _, _ = _exchange(live, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                   "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", chunk)
    assert status == 401  # no token: the route's own answer, through the full stack
