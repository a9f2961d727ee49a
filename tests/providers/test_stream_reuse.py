"""A finished stream hands its connection back: the next call on the same client does not reconnect."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator_core.clients import ProviderFactory
from orchestrator_core.config import Settings
from orchestrator_core.providers.base import STREAM_DRAIN_S
from orchestrator_core.types import ChatParams, ChatResult, Message, TextDelta

HELLO: list[Message] = [{"role": "user", "content": "Hi"}]
EVENTS = (b'data: {"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\n'
          b"data: [DONE]\n\n")


class Upstream:
    """A keep-alive loopback server answering every request with one SSE stream; counts connections."""

    def __init__(self, *, end_after_s: float) -> None:
        self.end_after_s = end_after_s  # when the response's closing chunk follows [DONE]
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as servers set it: the end is not held back
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                                 b"\r\n%x\r\n%s\r\n" % (len(EVENTS), EVENTS))
                    time.sleep(self.end_after_s)
                    conn.sendall(b"0\r\n\r\n")
                except OSError:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    server = Upstream(end_after_s=request.param)
    yield server
    server.close()


def stream_once(factory: ProviderFactory) -> tuple[list[str], ChatResult]:
    provider = factory.provider("custom")
    events = list(provider.stream_chat("m", HELLO, ChatParams()))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    result = events[-1]
    assert isinstance(result, ChatResult)
    return texts, result


def make_factory(upstream: Upstream) -> ProviderFactory:
    return ProviderFactory(Settings.from_env({"CUSTOM_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1"}))


@pytest.mark.parametrize("upstream", [0.0, STREAM_DRAIN_S / 4], indirect=True)
def test_streams_one_after_another_share_one_connection(upstream: Upstream) -> None:
    # The reader stops at [DONE]; the response's end came after it (at once, or a little later): the
    # connection is read to its end and reused. Before, every stream opened a new connection.
    factory = make_factory(upstream)
    try:
        for _ in range(3):
            texts, result = stream_once(factory)
            assert texts == ["hi"] and result.finish_reason == "stop"
        assert upstream.connections == 1
    finally:
        factory.close()


@pytest.mark.parametrize("upstream", [5.0], indirect=True)
def test_a_host_that_does_not_end_its_response_after_done_costs_only_the_connection(upstream: Upstream) -> None:
    # The wait for the end is short: the answer is complete at [DONE], the connection is closed as before.
    factory = make_factory(upstream)
    try:
        for _ in range(2):
            started = time.monotonic()
            texts, result = stream_once(factory)
            assert texts == ["hi"] and result.finish_reason == "stop"
            assert time.monotonic() - started < 2.0
        assert upstream.connections == 2
    finally:
        factory.close()
