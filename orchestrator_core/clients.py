"""ProviderFactory: one pooled httpx.Client per provider, with base URL, timeouts and the current key."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable

import httpx

from . import USER_AGENT
from .config import Settings
from .providers.base import LocalHost, Provider
from .providers.guard import CallLimits, cut_reads_at_deadlines
from .providers.registry import provider_class

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


class ProviderFactory:
    """Builds provider objects on shared clients; call/status clients differ only in timeouts."""

    def __init__(self, settings: Settings, key_lookup: KeyLookup | None = None) -> None:
        self.settings = settings
        self._key_lookup = key_lookup or settings.env_keys.get
        self._clients: dict[tuple[str, str], httpx.Client] = {}
        self._lock = threading.Lock()

    def key_for(self, provider: str) -> str | None:
        return self._key_lookup(provider)

    def client(self, provider: str, purpose: str = "call") -> httpx.Client:
        """The shared client of a provider; purpose "status" has short timeouts for probes."""
        with self._lock:
            client = self._clients.get((provider, purpose))
            if client is None:
                base_url = self.settings.base_url(provider)
                client = cut_reads_at_deadlines(httpx.Client(  # a blocked read ends at the call's deadline
                    base_url=base_url,
                    timeout=self._timeout(purpose),
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                    follow_redirects=False,
                    verify=tls_context_for(base_url),
                    headers={"User-Agent": USER_AGENT},  # who calls, instead of the bare python-httpx/x.y
                ))
                self._clients[(provider, purpose)] = client
            return client

    def _timeout(self, purpose: str) -> httpx.Timeout:
        s = self.settings
        if purpose == "status":
            budget = s.status_timeout_s
            return httpx.Timeout(budget, connect=min(s.connect_timeout_s, budget))
        return httpx.Timeout(s.read_timeout_s, connect=s.connect_timeout_s)

    def get(self, provider: str, purpose: str = "call", *, api_key: str | None = None) -> Provider:
        """A provider object with the given key, or the current stored/env key."""
        cls = provider_class(provider)
        key = api_key if api_key is not None else self.key_for(provider)
        return cls(
            self.client(provider, purpose),
            api_key=key,
            anthropic_version=self.settings.anthropic_version,
            api_version=self.settings.gemini_api_version,
            default_max_tokens=self.settings.default_max_tokens,
            load_timeout_s=self.settings.load_timeout_s,
            limits=self._limits(purpose),
        )

    def _limits(self, purpose: str) -> CallLimits:
        s = self.settings
        # A status probe has one small whole budget (its reads keep STATUS_TIMEOUT_S each); below a second it
        # would fail healthy probes on a loaded machine. Everything else has the call deadline.
        deadline, setting = (max(s.status_timeout_s, STATUS_DEADLINE_FLOOR_S), "STATUS_TIMEOUT_S") if (
            purpose == "status") else (s.call_deadline_s, "CALL_DEADLINE_S")
        return CallLimits(deadline, s.stream_idle_timeout_s, s.max_response_bytes, s.max_answer_chars, setting)

    def host(self, provider: str, purpose: str = "call") -> LocalHost:
        """The provider as a local host (status, load, unload)."""
        p = self.get(provider, purpose)
        if not isinstance(p, LocalHost):
            raise TypeError(f"{provider} is not a local host")
        return p

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
