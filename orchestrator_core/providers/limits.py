"""The budget of one provider call, with the standard library only: deadlines, size caps, bounded decoding.

httpx's timeouts are per read, so a host that trickles a byte a second, sends only SSE comments or never
stops streaming would hold a call forever: every body is read against a ``Deadline`` and a byte cap, and
gzip/deflate are decoded with a bounded output per step, so a small compression bomb never expands in
memory. guard.py applies these to httpx responses; plain.py (the read-only status's probes) to
http.client's. Neither imports the other's HTTP library.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import BadResponseError, ProviderTimeoutError

ERROR_BODY_BYTES = 64 * 1024  # an error body is read only as far as a message needs
_DECODED_STEP = 256 * 1024  # most bytes one decompression step may produce


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

    def cap(self, timeout: float | None) -> float:
        """The timeout of the next socket read: ``timeout`` (None: unbounded), or less if the deadline is nearer."""
        left = self.remaining()
        self.cut_last_read = timeout is None or left < timeout
        return left if self.cut_last_read or timeout is None else timeout

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        """Raise ProviderTimeoutError once either deadline has passed."""
        if self.expired():
            raise self.error()

    def error(self) -> ProviderTimeoutError:
        # The nearer limit is the one that ran out: a timer may wake the reader a hair before it (uvloop's
        # timers tick in milliseconds), and asking "is the clock past the end?" then blamed the other limit.
        if self.idle_s is None or self._ends <= self._last_progress + self.idle_s:
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


def refused(deadline: Deadline, reason: str) -> BadResponseError:
    """The error of a response refused for ``reason`` (too large, badly encoded), in the call's terms."""
    return BadResponseError(
        f"{deadline.where} sent a response that was refused: {reason}. The host may be broken or hostile.",
        provider=deadline.provider, model=deadline.model,
    )


def too_large(what: str, limit: int) -> str:
    """Why a body over its cap is refused."""
    return (f"the {what} is larger than the limit of {limit} bytes (MAX_RESPONSE_BYTES); "
            "raise MAX_RESPONSE_BYTES if answers this large are expected")


Decode = Callable[[bytes], Iterator[bytes]]


def decoder(content_encoding: str, refuse: Callable[[str], BadResponseError]) -> Decode:
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

