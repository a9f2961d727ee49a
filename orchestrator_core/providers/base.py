"""The provider contract: one class per provider, typed class attributes for what differs.

A provider wraps one injected ``httpx.Client`` (base_url and timeouts set by the caller) and one
optional API key. Errors leave a provider only as classes of ``orchestrator_core.errors``.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
from httpx_sse import EventSource, ServerSentEvent

from ..errors import (
    AuthenticationError,
    BadResponseError,
    OrchestratorError,
    UnsupportedOperationError,
    bad_response,
    classify_response,
    classify_transport,
)
from ..types import ChatParams, ChatResult, HostModel, KeyCheck, KeyTestResult, Message, StreamEvent


class Provider(abc.ABC):
    """A model provider reached over HTTP."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    needs_key: ClassVar[bool] = True
    local: ClassVar[bool] = False
    key_env_var: ClassVar[str | None] = None

    def __init__(self, client: httpx.Client, api_key: str | None = None, **options: Any) -> None:
        self.client = client
        self.api_key = api_key
        self.options = options

    # -- the three operations every provider offers -------------------------------------------
    @abc.abstractmethod
    def chat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        """Send a conversation and return the whole answer."""

    @abc.abstractmethod
    def stream_chat(self, model: str, messages: list[Message], params: ChatParams) -> Iterator[StreamEvent]:
        """Yield TextDelta pieces as they arrive, then exactly one ChatResult with usage."""

    @abc.abstractmethod
    def list_models(self) -> list[str]:
        """Model names this provider offers (bare names, without the ``provider:`` prefix)."""

    def test_key(self) -> KeyTestResult:
        """Probe the key with the cheapest non-generating call (list models)."""
        started = time.perf_counter()
        try:
            models = self.list_models()
        except AuthenticationError as exc:
            return KeyTestResult(KeyCheck.REJECTED, exc.message, _ms(started))
        except OrchestratorError as exc:
            return KeyTestResult(KeyCheck.UNVERIFIED, exc.message, _ms(started))
        return KeyTestResult(KeyCheck.OK, f"Key accepted; {len(models)} models listed.", _ms(started))

    # -- helpers shared by every provider -----------------------------------------------------
    @property
    def secrets(self) -> tuple[str | None, ...]:
        return (self.api_key,)

    @property
    def base_url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def request_json(self, method: str, path: str, *, model: str | None = None, **kwargs: Any) -> Any:
        """One request; a non-2xx or non-JSON answer becomes the right error class."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise classify_transport(exc, provider=self.name, model=model, base_url=self.base_url) from exc
        if response.status_code >= 400:
            raise classify_response(response, provider=self.name, model=model, secrets=self.secrets)
        return parse_json(response, provider=self.name, model=model)

    def stream_events(
        self, method: str, path: str, *, model: str | None = None, **kwargs: Any
    ) -> Iterator[ServerSentEvent]:
        """Open an SSE stream; yields events. Transport and status failures become error classes."""
        try:
            with self.client.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    raise classify_response(response, provider=self.name, model=model, secrets=self.secrets)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type and "json" in content_type:
                    # Some servers answer a stream request with a plain JSON error or body.
                    body = parse_json(response, provider=self.name, model=model)
                    raise _json_instead_of_stream(body, self.name, model)
                yield from EventSource(response).iter_sse()
        except httpx.HTTPError as exc:
            raise classify_transport(exc, provider=self.name, model=model, base_url=self.base_url) from exc

    def require_key(self) -> str:
        from ..errors import MissingKeyError

        if not self.api_key:
            env = f" or set {self.key_env_var}" if self.key_env_var else ""
            raise MissingKeyError(
                f"No {self.display_name} key: add one on the API Keys page{env}.", provider=self.name
            )
        return self.api_key


class LocalHost(abc.ABC):
    """What a local model host adds to a provider: see what is loaded, load and unload."""

    supports_load: ClassVar[bool] = True
    supports_unload: ClassVar[bool] = True

    @abc.abstractmethod
    def host_models(self) -> list[HostModel]:
        """Every model the host knows with its state, in ONE request."""

    @abc.abstractmethod
    def load_model(self, model: str) -> None:
        """Ask the host to load a model (may return before the load finishes)."""

    def unload_model(self, model: str) -> None:
        """Ask the host to unload a model."""
        raise UnsupportedOperationError(
            f"{type(self).__name__} has no unload endpoint; unload the model on the host itself.",
        )


def parse_json(response: httpx.Response, *, provider: str, model: str | None) -> Any:
    try:
        response.read()
        return json.loads(response.text)
    except (ValueError, UnicodeDecodeError):
        raise bad_response(provider, model, "the body is not JSON") from None


def event_json(event: ServerSentEvent, *, provider: str, model: str | None) -> Any:
    """The JSON payload of one SSE event; a malformed one ends the stream with BadResponseError."""
    try:
        return json.loads(event.data)
    except ValueError:
        raise bad_response(provider, model, "a stream event is not valid JSON") from None


def _json_instead_of_stream(body: Any, provider: str, model: str | None) -> BadResponseError:
    return bad_response(provider, model, f"expected an event stream, got JSON {str(body)[:200]}")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def require(value: Any, what: str, provider: str, model: str | None) -> Any:
    """Return value, or raise BadResponseError naming the missing field."""
    if value is None:
        raise bad_response(provider, model, f"missing {what}")
    return value
