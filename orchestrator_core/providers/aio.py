"""A provider's requests and event streams on the running event loop, through aiohttp, at parity with the httpx path.

The gateway answers on its loop (``Provider.achat``, ``Provider.astream_chat``) instead of holding a thread per
call or stream.
Everything that bounds a call on the httpx path bounds it here too, from the same sources: the provider's
httpx client gives the timeouts, headers (User-Agent), TLS context and base URL (its credentials become
Basic auth, as httpx sends them); the call's ``Deadline`` cuts every read, and keep-alive comments are no
progress; bodies are decoded by ``limits.decoder`` (bounded), counted against MAX_RESPONSE_BYTES, one line
of a stream too; SSE is framed by httpx-sse's own decoders. Failures become the same error classes, with
messages naming the httpx failure (ReadTimeout, ConnectError...) so they read the same on both paths.

aiohttp is bound on the first session (``_bind_aiohttp``), so importing this module to close sessions at a
shutdown that streamed nothing costs nothing; the read-only ``status`` never imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import (
    BadResponseError,
    ProviderError,
    TransportFailure,
    bad_response,
    classify_status,
    is_dns_failure,
    transport_error,
)
from .limits import ERROR_BODY_BYTES, Deadline, decoder, refused, too_large

if TYPE_CHECKING:
    import aiohttp
    import httpx
    from httpx_sse import ServerSentEvent
    from yarl import URL

    from .base import Provider
else:
    aiohttp = None  # bound by _bind_aiohttp() when the first session is made

CONNECTIONS = 64  # per session, as the httpx clients' max_connections
# After [DONE] the chunked body's last bytes usually follow within the same packet or the next: waiting this
# long for them lets the connection go back to the pool; a host that streams on past [DONE] loses it instead.
DRAIN_S = 0.1

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[httpx.Client, _Session]] = (
    weakref.WeakKeyDictionary())
_sessions_lock = threading.Lock()  # loops on several threads register sessions


def _bind_aiohttp() -> None:
    global aiohttp
    import aiohttp  # noqa: PLC0415 - see above


def load() -> None:
    """Import what the first session and stream would (a server's start-up: Orchestrator.warm_for_serving)."""
    if aiohttp is None:
        _bind_aiohttp()
    from aiohttp.helpers import get_env_proxy_for_url  # noqa: F401, PLC0415 - as _env_proxy
    from httpx_sse._decoders import SSEDecoder  # noqa: F401, PLC0415 - as _Call.events


class _Session:
    """One aiohttp session for one provider client on one loop, with what each request takes from the client."""

    def __init__(self, client: httpx.Client) -> None:
        from ..clients import tls_context_for  # noqa: PLC0415 - clients imports the whole provider registry

        base_url = str(client.base_url)
        timeout = client.timeout
        self.read_s = timeout.read
        self.pool_s = timeout.pool
        self.connect_s = timeout.connect
        self.proxy, self.proxy_auth = _env_proxy(base_url)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=tls_context_for(base_url)),
            headers=dict(client.headers),  # httpx's User-Agent, Accept and Accept-Encoding, so hosts see one client
            auto_decompress=False,  # limits.decoder decodes, bounded, as on the httpx path
            # The proxy comes from the environment once, as httpx reads it when its client is built; trust_env
            # would also read ~/.netrc (which httpx does not), and a netrc entry for the host next to our
            # Authorization header makes aiohttp refuse every request. It would also hop to a thread per request.
            trust_env=False,
        )

    def timeout(self, deadline: Deadline) -> aiohttp.ClientTimeout:
        """The request's timeouts: the client's connect and pool waits, the wait for headers capped by the deadline."""
        connect = None if self.connect_s is None else self.connect_s + (self.pool_s or 0.0)
        return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=self.connect_s,
                                     sock_read=deadline.cap(self.read_s))


def _env_proxy(base_url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for this base URL (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), and its credentials."""
    from aiohttp.helpers import get_env_proxy_for_url  # noqa: PLC0415 - bound with aiohttp
    from yarl import URL  # noqa: PLC0415 - aiohttp's URL type

    try:
        return get_env_proxy_for_url(URL(base_url))
    except LookupError:  # none configured, or NO_PROXY covers the host
        return None, None


def session(provider: Provider) -> _Session:
    """The running loop's session for the provider's client: made on first use, one per (loop, client)."""
    client = provider.http
    loop = asyncio.get_running_loop()
    with _sessions_lock:
        of_loop = _sessions.get(loop)
        if of_loop is None:
            _forget_closed_loops()
            of_loop = _sessions[loop] = {}
    found = of_loop.get(client)
    if found is None or found.http.closed:
        if aiohttp is None:
            _bind_aiohttp()
        found = of_loop[client] = _Session(client)
    return found


def _forget_closed_loops() -> None:
    """Drop the sessions of loops that ended without close_sessions() (asyncio.run without Orchestrator.aclose):
    a session holds its loop, so the weak key alone would keep both, and their sockets, for good."""
    for ended in [loop for loop in _sessions if loop.is_closed()]:
        del _sessions[ended]


async def close_sessions() -> None:
    """Close every session of the running loop (the gateway's shutdown, the tests); idle connections close too."""
    with _sessions_lock:
        of_loop = _sessions.pop(asyncio.get_running_loop(), {})
    for found in of_loop.values():
        await found.http.close()


async def stream_events(
    provider: Provider, method: str, path: str, *, model: str, headers: Mapping[str, str], body: Any,
    last: str | None = None,
) -> AsyncGenerator[ServerSentEvent, None]:
    """Open an SSE stream on the running loop; yields events. Transport and status failures become error classes.

    ``last`` is the data of the event that ends the stream (OpenAI's [DONE]): the stream stops after it, and its
    connection goes back to the pool once the body's last bytes are in (DRAIN_S).
    """
    call = _Call(provider, model, provider.deadline(model, stream=True))
    async with call:
        await call.send(method, path, {"Accept": "text/event-stream", **headers}, body)
        async with contextlib.aclosing(call.events()) as events:  # closed here, not by the loop's finalizer later
            async for event in events:
                call.finished = last is not None and event.data.strip() == last
                yield event
                if call.finished:
                    return
        call.finished = True


async def request_json(
    provider: Provider, method: str, path: str, *, model: str, headers: Mapping[str, str], body: Any,
) -> Any:
    """One request on the running loop and its JSON answer: Provider.request_json's errors, deadline and cap."""
    call = _Call(provider, model, provider.deadline(model))
    async with call:
        await call.send(method, path, headers, body)
        data = b"".join([piece async for piece in call._pieces(limit=provider.limits.max_response_bytes,
                                                                 what="body")])
        call.finished = True
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise bad_response(provider.name, model, "the body is not JSON") from None


class _Call:
    """One request: its response, read under the call's deadline and caps; no aiohttp error leaves it."""

    def __init__(self, provider: Provider, model: str, deadline: Deadline) -> None:
        self.provider = provider
        self.model = model
        self.deadline = deadline
        self.session = session(provider)
        self.response: aiohttp.ClientResponse | None = None
        self.finished = False  # the body was read to its end, or to [DONE]: the connection may be reused

    async def __aenter__(self) -> _Call:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        # A consumer that stops reading (GeneratorExit) after the last event ends the call as cleanly as the end.
        await self._let_go(self.finished and (exc is None or isinstance(exc, GeneratorExit)))
        if exc is not None and _is_transport(exc):
            raise self._failed(exc) from exc

    async def send(self, method: str, path: str, headers: Mapping[str, str], payload: Any) -> None:
        url, headers = self._target(path, headers)
        # httpx's JSON encoding, byte for byte: the request is the one the sync path sends.
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        session = self.session
        self.response = await session.http.request(
            method, url, headers={**headers, "Content-Type": "application/json"}, data=data,
            allow_redirects=False, timeout=session.timeout(self.deadline), proxy=session.proxy,
            proxy_auth=session.proxy_auth)
        if self.response.status >= 400:
            raise await self._status_error()

    async def events(self) -> AsyncGenerator[ServerSentEvent, None]:
        """The response's SSE events (httpx-sse's framing); an event with data is progress, a comment is not."""
        from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # noqa: PLC0415 - the sync path's own framing

        content_type = self._response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            raise await self._not_a_stream(content_type)
        lines, frames, text = SSELineDecoder(), SSEDecoder(), self._text_decoder()
        cap = self.provider.limits.max_response_bytes
        async with contextlib.aclosing(self._pieces(limit=sys.maxsize, what="stream", line_limit=cap)) as pieces:
            async for piece in pieces:
                for line in lines.decode(chunk) if (chunk := text.decode(piece)) else ():
                    if (event := frames.decode(line)) is not None:
                        if event.data:
                            self.deadline.progress()
                        yield event
        tail = text.decode(b"", final=True)
        for line in [*(lines.decode(tail) if tail else []), *lines.flush()]:
            if (event := frames.decode(line)) is not None:
                yield event

    # -- the request ------------------------------------------------------------------------------
    def _target(self, path: str, headers: Mapping[str, str]) -> tuple[URL, dict[str, str]]:
        """The URL httpx would send to, without its credentials, which go in a Basic header as httpx sends them."""
        from yarl import URL  # noqa: PLC0415 - bound with aiohttp

        if not all(_sendable(name, value) for name, value in headers.items()):
            raise self.provider.unsendable_header(self.model)
        merged = self.provider._url(path)
        headers = dict(headers)
        if merged.username or merged.password:
            pair = f"{merged.username}:{merged.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")  # httpx's BasicAuth wins
        return URL(str(merged), encoded=True).with_user(None), headers

    @property
    def _response(self) -> aiohttp.ClientResponse:
        if self.response is None:
            raise RuntimeError("no response yet")  # a bug here, not a host's fault
        return self.response

    async def _let_go(self, clean: bool) -> None:
        """Back to the pool after a whole body (or the last event and the body's end); closed after anything else."""
        response = self.response
        if response is None:
            return
        try:
            if clean:
                await self._drain(response)
        finally:  # also when the task is cancelled while draining
            if clean and response.content.is_eof():
                response.release()
            else:
                response.close()

    async def _drain(self, response: aiohttp.ClientResponse) -> None:
        """Read what is left of the body for at most DRAIN_S; best effort, the answer is complete."""
        try:
            async with asyncio.timeout(min(DRAIN_S, max(self.deadline.remaining(), 0.0))):
                while await response.content.readany():
                    pass
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass  # the connection is closed instead of reused

    # -- reading the body -------------------------------------------------------------------------
    async def _pieces(self, *, limit: int, what: str, truncate: bool = False, line_limit: int | None = None
                      ) -> AsyncGenerator[bytes, None]:
        """The decoded body, piece by piece as it arrives, under the deadline and the caps (guard._GuardedStream)."""
        decode = decoder(self._response.headers.get("content-encoding", ""), self._refuse)
        total = open_line = 0
        while (raw := await self._read(truncate)) is not None:
            if truncate and self.deadline.expired():
                return  # what arrived of an error body is enough for its message
            self.deadline.check()
            for piece in decode(raw):
                if total + len(piece) > limit:
                    if truncate:
                        yield piece[: limit - total]
                        return
                    raise self._refuse(too_large(what, limit))
                total += len(piece)
                if line_limit is not None:
                    open_line = self._check_line(piece, open_line, line_limit)
                yield piece

    async def _read(self, truncate: bool) -> bytes | None:
        """One read as it arrives, None at the end; it times out at the per-read limit or sooner at the deadline."""
        deadline = self.deadline
        try:
            async with asyncio.timeout(deadline.cap(self.session.read_s)):
                return await self._response.content.readany() or None
        except TimeoutError as exc:  # ours, or aiohttp's sock_read (set when the request was sent)
            if not (deadline.cut_last_read or deadline.expired()):
                raise self._failed(exc) from exc
            if truncate:
                return None
            raise deadline.error() from exc

    def _check_line(self, piece: bytes, open_line: int, limit: int) -> int:
        """Bytes since the last newline after this piece; over ``limit`` a line that never ends is refused."""
        newline = piece.rfind(b"\n")
        open_line = open_line + len(piece) if newline < 0 else len(piece) - newline - 1
        if open_line > limit:
            raise self._refuse(f"one stream line is longer than the limit of {limit} bytes (MAX_RESPONSE_BYTES)")
        return open_line

    async def _body_text(self, *, limit: int, what: str, truncate: bool = False) -> str:
        """The whole body (at most ``limit`` bytes) as httpx's Response.text reads it."""
        body = b"".join([piece async for piece in self._pieces(limit=limit, what=what, truncate=truncate)])
        return self._text_decoder().decode(body, final=True)

    def _text_decoder(self) -> codecs.IncrementalDecoder:
        """The body's charset if Python knows it, else UTF-8, errors replaced: httpx's Response.encoding."""
        charset = self._response.charset or "utf-8"
        try:
            return codecs.getincrementaldecoder(charset)(errors="replace")
        except LookupError:
            return codecs.getincrementaldecoder("utf-8")(errors="replace")

    # -- errors ----------------------------------------------------------------------------------
    async def _status_error(self) -> ProviderError:
        """classify_status over the first ERROR_BODY_BYTES of the answer (what arrived by the deadline)."""
        text = await self._body_text(limit=ERROR_BODY_BYTES, what="error body", truncate=True)
        provider = self.provider
        return classify_status(self._response.status, _lower_headers(self._response.headers), text,
                               provider=provider.name, model=self.model, secrets=provider.secrets)

    async def _not_a_stream(self, content_type: str) -> ProviderError:
        from .base import text_json  # noqa: PLC0415 - base imports nothing of this module; kept symmetric

        body = None
        if "json" in content_type:
            text = await self._body_text(limit=self.provider.limits.max_response_bytes, what="body")
            body = text_json(text, provider=self.provider.name, model=self.model)
        return self.provider.not_a_stream(content_type, body, self.model)

    def _refuse(self, reason: str) -> BadResponseError:
        return refused(self.deadline, reason)

    def _failed(self, exc: BaseException) -> ProviderError:
        """The error class of an aiohttp or socket failure, named as httpx names the same failure."""
        deadline = self.deadline
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError) and (
                deadline.cut_last_read or deadline.expired()):
            return deadline.error()  # the wait for headers was cut at the call's deadline (Session.timeout)
        failure, name = _failure(exc)
        provider = self.provider
        return transport_error(failure, name, provider=provider.name, model=self.model, base_url=provider.base_url)


def _failure(exc: BaseException) -> tuple[TransportFailure, str]:
    """(what happened, httpx's name for it) for an aiohttp or socket exception."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect_timeout", "ConnectTimeout"
    if isinstance(exc, TimeoutError):
        return "timeout", "ReadTimeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or (
            isinstance(exc, aiohttp.ClientConnectorError) and is_dns_failure(exc)):
        return "dns", "ConnectError"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", "ConnectError"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return "closed", "RemoteProtocolError"  # also a malformed answer: h11 calls both a protocol error
    if isinstance(exc, OSError):  # aiohttp's ClientOSError and connection resets among them
        return "closed", "ReadError"
    return "other", "TransportError"


def _is_transport(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError)) and not isinstance(exc, ProviderError)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case names; a repeated header joined with ', ', as httpx.Headers.get reads it."""
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def _sendable(name: str, value: str) -> bool:
    """What httpx and h11 send: ASCII names and values without control characters (a tab inside a value is fine)."""
    return (name.isascii() and value.isascii() and name.isprintable() and " " not in name
            and value.replace("\t", " ").isprintable())
