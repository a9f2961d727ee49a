"""The budget of one provider call: a whole-call deadline, a stream idle deadline and size caps.

httpx's timeouts are per read, so a host that trickles a byte a second, sends only SSE comments
(``: keep-alive``, which the SSE parser swallows) or never stops streaming would hold a call
forever. Every provider request therefore reads its body only through ``guarded``: the clock is
checked on every chunk that arrives, the bytes are counted against a cap, and gzip/deflate are
decoded here with a bounded output per step, so a small compression bomb never expands in memory.

A read that blocks is cut at the deadline too, on clients passed through ``cut_reads_at_deadlines``
(the ProviderFactory's): their sockets cap every read's timeout at the time the current call has left,
so a host that goes silent (or trickles its headers) near the deadline cannot add READ_TIMEOUT_S.
"""

from __future__ import annotations

import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpcore
import httpx

from ..errors import BadResponseError, ProviderTimeoutError

ERROR_BODY_BYTES = 64 * 1024  # an error body is read only as far as a message needs
_DECODED_STEP = 256 * 1024  # most bytes one decompression step may produce
_FRAMING_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


@dataclass(frozen=True)
class CallLimits:
    """The limits of every call a provider makes (Settings: CALL_DEADLINE_S, STREAM_IDLE_TIMEOUT_S, ...)."""

    call_deadline_s: float = 600.0
    stream_idle_timeout_s: float = 120.0
    max_response_bytes: int = 8 * 1024 * 1024
    max_answer_chars: int = 1_000_000
    deadline_setting: str = "CALL_DEADLINE_S"  # named in the message; status probes run on STATUS_TIMEOUT_S


class Deadline:
    """The clock of one call: its whole deadline and, for streams, the longest wait for new data."""

    def __init__(
        self,
        total_s: float,
        *,
        setting: str,
        where: str,
        idle_s: float | None = None,
        provider: str | None = None,
        model: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_s = total_s
        self.idle_s = idle_s
        self.setting = setting
        self.where = where
        self.provider = provider
        self.model = model
        self._clock = clock
        self._ends = clock() + total_s
        self._last_progress = clock()
        self.cut_last_read = False  # the last socket read's timeout was this deadline, not READ_TIMEOUT_S

    def progress(self) -> None:
        """New data arrived (an SSE event, a stream line): the idle clock starts again."""
        self._last_progress = self._clock()

    def remaining(self) -> float:
        """Seconds until the nearer of the two deadlines."""
        now = self._clock()
        left = self._ends - now
        if self.idle_s is not None:
            left = min(left, self._last_progress + self.idle_s - now)
        return left

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        """Raise ProviderTimeoutError once either deadline has passed."""
        if self.expired():
            raise self.error()

    def error(self) -> ProviderTimeoutError:
        if self._clock() >= self._ends:
            return ProviderTimeoutError(
                f"{self.where} did not finish within {self.total_s:g}s (the whole-call limit {self.setting}); "
                f"the host may be trickling or endlessly sending its answer. Raise {self.setting} if answers "
                "this long are expected, or use another model.",
                provider=self.provider, model=self.model,
            )
        return ProviderTimeoutError(
            f"{self.where} sent no new data for {self.idle_s:g}s (the stream idle limit STREAM_IDLE_TIMEOUT_S; "
            "keep-alive comments do not count); the host may be stuck. Raise STREAM_IDLE_TIMEOUT_S if the "
            "model is slow to start answering, or use another model.",
            provider=self.provider, model=self.model,
        )


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
        decode = _decoder(self._response.headers.get("content-encoding", ""), self._refuse)
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
                    raise self._refuse(
                        f"the {self._what} is larger than the limit of {self._limit} bytes (MAX_RESPONSE_BYTES); "
                        "raise MAX_RESPONSE_BYTES if answers this large are expected"
                    )
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
        return BadResponseError(
            f"{self._deadline.where} sent a response that was refused: {reason}. The host may be broken or hostile.",
            provider=self._deadline.provider, model=self._deadline.model,
        )


Decode = Callable[[bytes], Iterator[bytes]]


def _decoder(content_encoding: str, refuse: Callable[[str], BadResponseError]) -> Decode:
    """Undo the codings in reverse order of application, each step producing at most _DECODED_STEP bytes."""
    if not content_encoding:
        return _as_sent  # the common case: a body sent as is
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    stages: list[Decode] = []
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            stages.append(_Inflate(zlib.MAX_WBITS | 16, refuse).decode)
        elif coding == "deflate":
            stages.append(_Inflate(zlib.MAX_WBITS, refuse, raw_fallback=True).decode)
        else:
            raise refuse(f"its content-encoding {coding!r} was not asked for")

    def decode(data: bytes) -> Iterator[bytes]:
        pieces: Iterator[bytes] = iter((data,))
        for stage in stages:
            pieces = _chain(stage, pieces)
        yield from pieces

    return decode


def _as_sent(data: bytes) -> Iterator[bytes]:
    return iter((data,))


def _chain(stage: Decode, pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from stage(piece)


class _Inflate:
    """zlib decompression with a bounded output per step (``max_length``), unlike httpx's decoders."""

    def __init__(self, wbits: int, refuse: Callable[[str], BadResponseError], *, raw_fallback: bool = False) -> None:
        self._z = zlib.decompressobj(wbits)
        self._refuse = refuse
        self._raw_fallback = raw_fallback  # "deflate" is sometimes sent without its zlib header
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        while not self._z.eof:
            try:
                out = self._z.decompress(data, _DECODED_STEP)
            except zlib.error:
                if self._raw_fallback and not self._started:
                    self._z, self._raw_fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise self._refuse("its compressed body does not decompress") from None
            self._started = True
            data = self._z.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < _DECODED_STEP:
                return


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
    left = deadline.remaining()
    deadline.cut_last_read = timeout is None or left < timeout
    if left <= 0:
        raise httpcore.ReadTimeout(f"{deadline.where}: the call's deadline passed")
    return left if deadline.cut_last_read else timeout


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
