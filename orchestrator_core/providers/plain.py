"""The status probes of the read-only ``status`` command over the standard library: http.client, no httpx.

Importing httpx (with httpcore, h11, idna, anyio, certifi) costs a CLI start more than everything else it
does to ask a local host for its models. A provider given a ``PlainClient`` sends its JSON requests
(``Provider.request_json``: all a host's status needs) through one keep-alive http.client connection
instead, with the timeouts, whole-call deadline and size cap of the httpx client it stands in for, and
its failures classified by the same functions (errors.classify_status, errors.transport_error), so the
status reads the same either way. It serves nothing else: chat, streams and loads need httpx.

``PlainClient.serves`` says when it stands in exactly: a plain-http base URL and no proxy configured
(httpx would send through the proxy). Anything else takes the httpx client.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, cast
from urllib.parse import SplitResult, urlsplit

from ..errors import ProviderError, TransportFailure, classify_status, is_dns_failure, transport_error
from .limits import ERROR_BODY_BYTES, Deadline, decoder, refused, too_large

if TYPE_CHECKING:
    import http.client

READ_BYTES = 64 * 1024  # one socket read; like httpx's iter_raw, a piece is checked as it arrives
# What httpx sends besides Host and its User-Agent (it asks for these codings; limits.decoder undoes them).
_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


class PlainClient:
    """One host's connection for JSON requests without a body, as httpx.Client(base_url=...) would send them."""

    def __init__(self, base_url: str, *, timeout_s: float, connect_s: float, headers: Mapping[str, str]) -> None:
        if not self.serves(base_url):
            raise ValueError(f"PlainClient serves plain-http URLs without a proxy, not {base_url!r}")
        parts = urlsplit(base_url.strip())
        self.base_url = _normalized(parts)
        self._host, self._port = cast(str, parts.hostname), parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._timeout_s, self._connect_s = timeout_s, connect_s
        self._headers = {**_HEADERS, **headers}
        self._conn: http.client.HTTPConnection | None = None

    @staticmethod
    def serves(base_url: str) -> bool:
        """True when this client sends exactly what httpx would: plain http, no credentials in the URL, no proxy."""
        try:
            parts = urlsplit(base_url.strip())
            port = parts.port
        except ValueError:
            return False
        host = parts.hostname or ""
        return (parts.scheme.lower() == "http" and bool(host) and host.isascii() and port != 0
                and not (parts.username or parts.password or parts.query or parts.fragment)
                and not _proxies_configured())

    def fetch(self, method: str, path: str, deadline: Deadline, *, provider: str, model: str | None, limit: int,
              secrets: Sequence[str | None], headers: Mapping[str, str] | None = None) -> bytes:
        """The decoded 2xx body of one request read under the deadline and ``limit``; else its error class."""
        where = (provider, model)
        reading = False
        try:
            conn = self._connection(where)
            self._arm(deadline)
            conn.request(method, self._prefix + "/" + path.lstrip("/"), headers={**self._headers, **(headers or {})})
            reading = True
            self._arm(deadline)
            response = conn.getresponse()
            if response.status >= 400:
                raise self._status_error(response, deadline, where, secrets)
            return b"".join(self._body(response, deadline, limit))
        except ProviderError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            if deadline.cut_last_read:
                raise deadline.error() from None
            raise self._failed("timeout", "ReadTimeout" if reading else "WriteTimeout", where) from None
        except _http_errors() as exc:  # before OSError: "remote end closed" is both
            self.close()
            raise self._failed("closed", "RemoteProtocolError", where) from exc
        except OSError as exc:  # reset, broken pipe
            self.close()
            raise self._failed("closed" if reading else "other", "ReadError" if reading else "WriteError",
                               where) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self, where: tuple[str, str | None]) -> http.client.HTTPConnection:
        """The open keep-alive connection, or a new one; like httpcore, an idle one the host closed is not used."""
        conn = self._conn
        if conn is not None and (conn.sock is None or select.select([conn.sock], [], [], 0)[0]):
            self.close()  # readable while idle: the host closed it (or sent what nobody asked for)
            conn = None
        if conn is not None:
            return conn
        import http.client  # noqa: PLC0415 - start-up cost: only a status probe needs it

        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_s)
        try:
            conn.connect()
        except TimeoutError:
            raise self._failed("connect_timeout", "ConnectTimeout", where) from None
        except OSError as exc:
            raise self._failed("dns" if is_dns_failure(exc) else "connect", "ConnectError", where) from exc
        self._conn = conn
        return conn

    def _arm(self, deadline: Deadline) -> None:
        """The next socket operation times out after the per-read timeout, or sooner at the call's deadline."""
        timeout = deadline.cap(self._timeout_s)
        if timeout <= 0:
            raise deadline.error()
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)

    def _body(self, response: http.client.HTTPResponse, deadline: Deadline, limit: int) -> Iterator[bytes]:
        decode = decoder(response.getheader("content-encoding") or "", lambda reason: refused(deadline, reason))
        total = 0
        while raw := self._read(response, deadline):
            deadline.check()
            for piece in decode(raw):
                total += len(piece)
                if total > limit:
                    raise refused(deadline, too_large("body", limit))
                yield piece

    def _status_error(self, response: http.client.HTTPResponse, deadline: Deadline, where: tuple[str, str | None],
                      secrets: Sequence[str | None]) -> ProviderError:
        """classify_status over the first ERROR_BODY_BYTES of the answer (what arrived by the deadline)."""
        decode = decoder(response.getheader("content-encoding") or "", lambda reason: refused(deadline, reason))
        body = b""
        try:
            while len(body) < ERROR_BODY_BYTES and not deadline.expired() and (raw := self._read(response, deadline)):
                body += b"".join(decode(raw))
        except TimeoutError:
            if not deadline.cut_last_read:
                raise
        headers = {name.lower(): value for name, value in response.getheaders()}
        return classify_status(response.status, headers, _text(body[:ERROR_BODY_BYTES], response),
                               provider=where[0], model=where[1], secrets=secrets)

    def _read(self, response: http.client.HTTPResponse, deadline: Deadline) -> bytes:
        self._arm(deadline)
        return response.read1(READ_BYTES)

    def _failed(self, failure: TransportFailure, name: str, where: tuple[str, str | None]) -> ProviderError:
        return transport_error(failure, name, provider=where[0], model=where[1], base_url=self.base_url)


def _http_errors() -> tuple[type[Exception], ...]:
    import http.client  # noqa: PLC0415 - loaded by then: a connection was made

    return (http.client.HTTPException,)


def _text(body: bytes, response: http.client.HTTPResponse) -> str:
    """The body as httpx's Response.text reads it: its charset if Python knows it, else UTF-8, errors replaced."""
    charset = response.msg.get_content_charset()
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:
        charset = None
    return body.decode(charset or "utf-8", errors="replace")


def _normalized(parts: SplitResult) -> str:
    """The base URL as httpx prints it: lower-case host, no default port, no trailing slash."""
    host = cast(str, parts.hostname)
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port not in (None, 80) else ""
    return f"http://{host}{port}{parts.path}".rstrip("/")


def _proxies_configured() -> bool:
    """Whether httpx would send through a proxy: the *_proxy variables, and the system settings where they exist."""
    if sys.platform in ("darwin", "win32"):
        import urllib.request  # noqa: PLC0415 - what httpx asks (it reads the system's proxy settings there)

        return bool(urllib.request.getproxies())
    return any(value and name.lower().endswith("_proxy") for name, value in os.environ.items())
