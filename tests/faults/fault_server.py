"""A fault-injecting HTTP server on 127.0.0.1: real sockets, so timeouts, stalls and cut connections are real.

Each path is scripted with a ``Reply`` (or a function of the request returning one):

    Reply.json(429, {...}, headers={"retry-after": "7"})     a whole response
    Reply.stall()                                            read the request, never answer
    Reply.partial(body, sent=10, then="stall" | "cut")       Content-Length promised, part sent
    Reply.stream([b"data: ...\\n\\n", ...], then="end" | "stall" | "cut")   chunked pieces
    Reply.trickle(body, every_s=0.05)                        Content-Length, then one byte at a time
    Reply.trickle(body, every_s=0.05, headers_too=True)      the status line and headers a byte at a time too
    Reply.endless(b": keep-alive\\n\\n", first=[...])         chunked: first pieces, then one piece forever

A stalled connection waits until the client hangs up (or the server stops), so a client timeout
frees it. The server counts open connections, so a test can check that none is left behind.
Socket-level faults live beside it: ``refused_port`` (bound, never listening) and ``Blackhole``
(a listener whose backlog is full, so a connect hangs until the client's connect timeout).
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

Then = Literal["end", "stall", "cut"]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mode: Literal["full", "stall", "partial", "stream", "trickle", "endless"] = "full"
    pieces: tuple[bytes, ...] = ()
    sent: int = 0  # partial: bytes of the body actually sent
    then: Then = "end"
    piece_delay_s: float = 0.0

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload).encode(), {"content-type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain") -> Reply:
        return cls(status, text.encode(), {"content-type": content_type})

    @classmethod
    def trickle(
        cls, body: bytes, *, every_s: float, headers_too: bool = False, headers: dict[str, str] | None = None
    ) -> Reply:
        # then="stall" marks "headers too": a trickle never ends any other way than by its last byte.
        return cls(200, body, {"content-type": "application/json", **(headers or {})}, mode="trickle",
                   piece_delay_s=every_s, then="stall" if headers_too else "end")

    @classmethod
    def endless(
        cls, piece: bytes, *, first: Iterable[bytes] = (), every_s: float = 0.0,
        content_type: str = "text/event-stream",
    ) -> Reply:
        return cls(200, piece, {"content-type": content_type}, mode="endless", pieces=tuple(first),
                   piece_delay_s=every_s)

    @classmethod
    def stall(cls) -> Reply:
        return cls(mode="stall")

    @classmethod
    def partial(cls, payload: Any, *, sent: int, then: Then) -> Reply:
        body = json.dumps(payload).encode()
        return cls(200, body, {"content-type": "application/json"}, mode="partial", sent=sent, then=then)

    @classmethod
    def stream(
        cls, pieces: Iterable[bytes], *, then: Then = "end", content_type: str = "text/event-stream"
    ) -> Reply:
        return cls(200, b"", {"content-type": content_type}, mode="stream", pieces=tuple(pieces), then=then)


Script = Reply | Callable[[Seen], Reply]


class FaultServer(ThreadingHTTPServer):
    """Plays scripted replies per path; unknown paths get a 404 that says so."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Script] = {}
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open = 0
        self._handlers: set[threading.Thread] = set()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fault-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # stalled handlers return
        self.shutdown()
        self.server_close()
        self._thread.join(2)
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:  # no thread of this server outlives its test
            handler.join(2)

    def script(self, path: str, reply: Script) -> None:
        self.routes[path] = reply

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    # -- connection accounting --------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    def wait_all_closed(self, timeout: float = 3.0) -> bool:
        """True once every connection a client opened has been closed by that client."""
        deadline = time.monotonic() + timeout
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.open_connections == 0

    def _opened(self) -> None:
        with self._lock:
            self._open += 1
            self._handlers.add(threading.current_thread())

    def _closed(self) -> None:
        with self._lock:
            self._open -= 1
            self._handlers.discard(threading.current_thread())

    def _record(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            script = self.routes.get(seen.path)
        if script is None:
            return Reply.json(404, {"error": f"the fault server has no script for {seen.method} {seen.path}"})
        return script(seen) if callable(script) else script


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    server: FaultServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server._closed()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest would show every request

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server._record(Seen(self.command, parts.path, parts.query, headers, body))
        self._play(reply)

    # -- playing a reply ----------------------------------------------------------------------
    def _play(self, reply: Reply) -> None:
        if reply.mode == "trickle" and reply.then == "stall":
            self._trickle_everything(reply)
            return
        if reply.mode == "stall":
            self._wait_for_hangup()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.mode in ("trickle", "endless"):
            self._play_forever(reply)
            return
        if reply.mode == "stream":
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for piece in reply.pieces:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                if reply.piece_delay_s:
                    time.sleep(reply.piece_delay_s)
            self._then(reply.then, b"0\r\n\r\n")
            return
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        if reply.mode == "partial":
            self.wfile.write(reply.body[: reply.sent])
            self.wfile.flush()
            self._then(reply.then, b"")
            return
        self.wfile.write(reply.body)
        self.wfile.flush()

    def _trickle_everything(self, reply: Reply) -> None:
        """Status line, headers and body, one byte at a time (BaseHTTPRequestHandler would send them at once)."""
        self.close_connection = True
        head = f"HTTP/1.1 {reply.status} OK\r\ncontent-length: {len(reply.body)}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in reply.headers.items()) + "\r\n"
        raw = head.encode() + reply.body
        try:
            for i in range(len(raw)):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
                time.sleep(reply.piece_delay_s)
        except OSError:
            return

    def _play_forever(self, reply: Reply) -> None:
        """Trickle a body a byte at a time, or stream one piece forever, until the client hangs up."""
        self.close_connection = True
        if reply.mode == "trickle":
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            pieces: Iterator[bytes] = (reply.body[i : i + 1] for i in range(len(reply.body)))
        else:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            pieces = (b"%x\r\n%s\r\n" % (len(p), p) for p in itertools.chain(reply.pieces, itertools.repeat(reply.body)))
        try:
            for piece in pieces:
                if self.server.stopping.is_set():
                    return
                self.wfile.write(piece)
                self.wfile.flush()
                if reply.piece_delay_s:
                    time.sleep(reply.piece_delay_s)
        except OSError:  # the client hung up: that is how these replies end
            return

    def _then(self, then: Then, ending: bytes) -> None:
        if then == "end":
            self.wfile.write(ending)
            self.wfile.flush()
        elif then == "stall":
            self._wait_for_hangup()
        else:
            self._cut()

    def _wait_for_hangup(self) -> None:
        """Send nothing more until the client closes the connection or the server stops."""
        self.close_connection = True
        sock = self.connection
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if not sock.recv(65536):
                        return
                except OSError:
                    return

    def _cut(self) -> None:
        """Close the connection in the middle of a body, as a crashed upstream would."""
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Socket-level faults


class RefusedPort:
    """A port with a bound socket that never listens: every connect is refused at once."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._sock.close()


class Blackhole:
    """A listener that never accepts and whose backlog is full: new connects hang (the SYN is dropped)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._fillers: list[socket.socket] = []
        # listen(0) keeps one connection in the accept queue; fill it so the next SYN is dropped.
        for _ in range(4):
            filler = socket.socket()
            filler.settimeout(0.05)
            try:
                filler.connect(("127.0.0.1", port))
            except OSError:
                filler.close()
                break
            self._fillers.append(filler)

    def close(self) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()


DNS_FAILURE_URL = "http://fault-host.invalid:8080"  # RFC 2606: .invalid never resolves
