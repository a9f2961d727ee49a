"""ProviderFactory: one long-lived provider object per connection, on pooled httpx clients.

The object lives as long as its connection (a changed URL or options makes a new one), so what it learns
about its host (LM Studio's API level, llama-server's mode) stays on it. The key is looked up per request:
``get`` hands out a view of the object with the current key (``Provider.with_key``).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from . import USER_AGENT
from .config import Settings
from .connections import Connection, ConnectionSource, FixedConnections, seeded
from .providers.base import LocalHost, Provider
from .providers.guard import CallLimits, cut_reads_at_deadlines

KeyLookup = Callable[[str], "str | None"]
STATUS_DEADLINE_FLOOR_S = 1.0

_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: loading the CA bundle costs ~35 ms, so it is done once per process."""
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = httpx.create_ssl_context()
        return _SSL_CONTEXT


def tls_context_for(base_url: str) -> ssl.SSLContext:
    """The shared context for an https base URL; for a plain-http host (the local ones) a context that
    trusts no certificate: such a client never needs the CA bundle, and an https request on it fails closed."""
    if base_url.lower().startswith("https:"):
        return shared_ssl_context()
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names, with no CA loaded


@dataclass(frozen=True)
class _Built:
    """A connection's provider as built: for calls, and the same object on the status probes' client."""

    connection: Connection
    call: Provider
    status: Provider


class ProviderFactory:
    """Builds and keeps one provider per connection; call and status views differ only in timeouts."""

    def __init__(
        self, settings: Settings, key_lookup: KeyLookup | None = None, *, connections: ConnectionSource | None = None,
        key_problem: KeyLookup | None = None,
    ) -> None:
        self.settings = settings
        self._key_lookup = key_lookup or settings.env_keys.get
        # Why a connection can use none of its keys now (all cooling or rejected), or None.
        self.key_problem: KeyLookup = key_problem or (lambda _name: None)
        self.connections = connections or FixedConnections(seeded(settings))
        self._built: dict[str, _Built] = {}
        self._retired: list[httpx.Client] = []  # clients of replaced connections; a call may still be on one
        self._lock = threading.Lock()

    def key_for(self, connection: str) -> str | None:
        return self._key_lookup(connection)

    def connection(self, name: str) -> Connection:
        return self.connections.get(name)

    def provider(self, name: str, purpose: str = "call") -> Provider:
        """The long-lived provider of a connection, built again when the connection changed."""
        return self.provider_for(self.connections.get(name), purpose)

    def provider_for(self, connection: Connection, purpose: str = "call") -> Provider:
        """``provider`` for a connection the caller has already looked up (a call does it once per attempt)."""
        name = connection.name
        built = self._built.get(name)
        # The store hands out the same object until the connection changes: identity first, equality after.
        if built is None or (built.connection is not connection and built.connection != connection):
            with self._lock:
                built = self._built.get(name)
                if built is None or built.connection != connection:
                    if built is not None:
                        self._retired += [built.call.client, built.status.client]
                    built = self._build(connection)
                    self._built[name] = built
                elif built.connection is not connection:  # reloaded, unchanged: keep the identity check cheap
                    built = self._built[name] = _Built(connection, built.call, built.status)
        return built.status if purpose == "status" else built.call

    def get(self, name: str, purpose: str = "call", *, api_key: str | None = None) -> Provider:
        """The connection's provider with the given key, or its current stored/env key."""
        key = api_key if api_key is not None else self.key_for(name)
        return self.provider(name, purpose).with_key(key)

    def client(self, name: str, purpose: str = "call") -> httpx.Client:
        """The shared client of a connection; purpose "status" has short timeouts for probes."""
        return self.provider(name, purpose).client

    def host(self, name: str, purpose: str = "call") -> LocalHost:
        """The connection's provider as a local host (status, load, unload)."""
        p = self.get(name, purpose)
        if not isinstance(p, LocalHost):
            raise TypeError(f"{name} is not a local host")
        return p

    def _build(self, connection: Connection) -> _Built:
        s = self.settings
        options = {"anthropic_version": s.anthropic_version, "api_version": s.gemini_api_version,
                   **connection.options}
        call = connection.provider_class(
            self._new_client(connection.base_url, "call"),
            connection=connection.name,
            default_max_tokens=s.default_max_tokens,
            load_timeout_s=s.load_timeout_s,
            limits=self._limits("call"),
            **options,
        )
        status = call.with_client(self._new_client(connection.base_url, "status"), self._limits("status"))
        return _Built(connection, call, status)

    def _new_client(self, base_url: str, purpose: str) -> httpx.Client:
        return cut_reads_at_deadlines(httpx.Client(  # a blocked read ends at the call's deadline
            base_url=base_url,
            timeout=self._timeout(purpose),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            follow_redirects=False,
            verify=tls_context_for(base_url),
            headers={"User-Agent": USER_AGENT},  # who calls, instead of the bare python-httpx/x.y
        ))

    def _timeout(self, purpose: str) -> httpx.Timeout:
        s = self.settings
        if purpose == "status":
            budget = s.status_timeout_s
            return httpx.Timeout(budget, connect=min(s.connect_timeout_s, budget))
        return httpx.Timeout(s.read_timeout_s, connect=s.connect_timeout_s)

    def _limits(self, purpose: str) -> CallLimits:
        s = self.settings
        # A status probe has one small whole budget (its reads keep STATUS_TIMEOUT_S each); below a second it
        # would fail healthy probes on a loaded machine. Everything else has the call deadline.
        deadline, setting = (max(s.status_timeout_s, STATUS_DEADLINE_FLOOR_S), "STATUS_TIMEOUT_S") if (
            purpose == "status") else (s.call_deadline_s, "CALL_DEADLINE_S")
        return CallLimits(deadline, s.stream_idle_timeout_s, s.max_response_bytes, s.max_answer_chars, setting)

    def close(self) -> None:
        with self._lock:
            for built in self._built.values():
                built.call.client.close()
                built.status.client.close()
            for client in self._retired:
                client.close()
            self._built.clear()
            self._retired.clear()
