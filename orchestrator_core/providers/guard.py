"""The budget of one provider call (limits.py) applied to httpx: every body read under its deadline and caps.

httpx's timeouts are per read, so a host that trickles a byte a second, sends only SSE comments
(``: keep-alive``, which the SSE parser swallows) or never stops streaming would hold a call
forever. Every provider request therefore reads its body only through ``guarded``: the clock is
checked on every chunk that arrives, the bytes are counted against a cap, and gzip/deflate are
decoded with a bounded output per step (limits.decoder), so a small compression bomb never expands
in memory.

A read that blocks is cut at the deadline too, on clients passed through ``cut_reads_at_deadlines``
(the ProviderFactory's): their sockets cap every read's timeout at the time the current call has left,
so a host that goes silent (or trickles its headers) near the deadline cannot add READ_TIMEOUT_S.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import httpcore
import httpx

from ..errors import BadResponseError
from .limits import ERROR_BODY_BYTES, Deadline, decoder, refused, too_large

_FRAMING_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


def guarded(
    response: httpx.Response,
    deadline: Deadline,
    *,
    limit: int,
    over: Literal["raise", "truncate"],
    what: str,
    line_limit: int | None = None,
) -> httpx.Response:
    """A response whose body is the decoded body of ``response``, read under the deadline and the caps.

    ``over="raise"`` ends the read with BadResponseError naming the cap; ``"truncate"`` (error bodies)
    just stops there. ``line_limit`` caps one line of a stream, so a line that never ends cannot fill memory.
    """
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _FRAMING_HEADERS]
    stream = _GuardedStream(response, deadline, limit=limit, over=over, what=what, line_limit=line_limit)
    return httpx.Response(
        response.status_code, headers=headers, stream=stream, request=response.request,
        extensions=response.extensions,
    )


def read_body(response: httpx.Response, deadline: Deadline, *, limit: int) -> bytes:
    """The decoded body of ``response`` read under the deadline and the cap (no second Response: the hot path)."""
    return b"".join(_GuardedStream(response, deadline, limit=limit, over="raise", what="body", line_limit=None))


def read_error_body(response: httpx.Response, deadline: Deadline) -> httpx.Response:
    """The first ERROR_BODY_BYTES of an error answer, read, as a response ``classify_response`` can take."""
    view = guarded(response, deadline, limit=ERROR_BODY_BYTES, over="truncate", what="error body")
    view.read()
    return view


class _GuardedStream(httpx.SyncByteStream):
    def __init__(
        self, response: httpx.Response, deadline: Deadline, *, limit: int, over: Literal["raise", "truncate"],
        what: str, line_limit: int | None,
    ) -> None:
        self._response = response
        self._deadline = deadline
        self._limit = limit
        self._over = over
        self._what = what
        self._line_limit = line_limit
        self._total = 0
        self._open_line = 0  # bytes since the last newline

    def __iter__(self) -> Iterator[bytes]:
        truncate = self._over == "truncate"
        decode = decoder(self._response.headers.get("content-encoding", ""), self._refuse)
        # iter_raw() without a chunk size yields each read as it arrives; with one it would wait to fill it.
        raws = self._response.iter_raw()
        while (raw := self._next(raws)) is not None:
            if truncate and self._deadline.expired():
                return  # what arrived of an error body is enough for its message
            self._deadline.check()
            for piece in decode(raw):
                if self._total + len(piece) > self._limit:
                    if truncate:
                        yield piece[: self._limit - self._total]
                        return
                    raise self._refuse(too_large(self._what, self._limit))
                self._total += len(piece)
                self._check_line(piece)
                yield piece

    def close(self) -> None:
        self._response.close()

    def _next(self, raws: Iterator[bytes]) -> bytes | None:
        try:
            with reads_under(self._deadline):
                return next(raws, None)
        except httpx.TimeoutException as exc:
            if self._deadline.cut_last_read:
                if self._over == "truncate":
                    return None
                raise self._deadline.error() from exc
            raise

    def _check_line(self, piece: bytes) -> None:
        if self._line_limit is None:
            return
        newline = piece.rfind(b"\n")
        self._open_line = self._open_line + len(piece) if newline < 0 else len(piece) - newline - 1
        if self._open_line > self._line_limit:
            raise self._refuse(
                f"one stream line is longer than the limit of {self._line_limit} bytes (MAX_RESPONSE_BYTES)"
            )

    def _refuse(self, reason: str) -> BadResponseError:
        return refused(self._deadline, reason)


# ---------------------------------------------------------------------------------------------
# Cutting a blocked read at the deadline

_reading = threading.local()  # the deadline of the call this thread is reading for


class reads_under:  # noqa: N801 - used like the function it was; a class costs a call a third of @contextmanager's
    """Socket reads in this block time out when ``deadline`` passes (on a ``deadline_transport``)."""

    __slots__ = ("_deadline", "_previous")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._previous: Deadline | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_reading, "deadline", None)
        _reading.deadline = self._deadline

    def __exit__(self, *exc: object) -> None:
        _reading.deadline = self._previous


def cut_reads_at_deadlines(client: httpx.Client) -> httpx.Client:
    """Make the client's connections honour ``reads_under`` (before its first request); returns the client."""
    # httpx takes no network backend, but httpcore's pools do; patching the built client (not passing
    # transport=) keeps httpx's proxy support from the environment.
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.ConnectionPool):
            pool._network_backend = _DeadlineBackend(pool._network_backend)
    return client


def _capped(timeout: float | None) -> float | None:
    deadline: Deadline | None = getattr(_reading, "deadline", None)
    if deadline is None:
        return timeout
    capped = deadline.cap(timeout)
    if deadline.cut_last_read and capped <= 0:
        raise httpcore.ReadTimeout(f"{deadline.where}: the call's deadline passed")
    return capped


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _capped(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _capped(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
