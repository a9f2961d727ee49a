"""The provider contract: one class per provider, typed class attributes for what differs.

A provider wraps one injected ``httpx.Client`` (base_url and timeouts set by the caller) and one
optional API key. Errors leave a provider only as classes of ``orchestrator_core.errors``. The read-only
``status`` command injects a ``plain.PlainClient`` instead, which serves ``request_json`` alone (all a
host's status needs) without importing httpx; so this module imports httpx only where a request is sent.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    AuthenticationError,
    BadResponseError,
    MissingKeyError,
    OrchestratorError,
    ProviderError,
    UnsupportedOperationError,
    bad_response,
    classify_response,
    classify_status,
    classify_transport,
    redact_url,
    scrub,
)
from ..types import ChatParams, ChatResult, HostModel, KeyCheck, KeyTestResult, Message, StreamEvent
from .limits import CallLimits, Deadline
from .plain import PlainClient

if TYPE_CHECKING:
    import httpx
    from httpx_sse import ServerSentEvent

    from . import guard

    Client = httpx.Client | PlainClient
else:
    # Bound by _bind_httpx() on the first request through an httpx client, not at import: the read-only
    # status never imports httpx, and an import statement in each request method cost every call ~1 µs.
    httpx = guard = None


def _bind_httpx() -> None:
    global httpx, guard
    import httpx  # noqa: PLC0415 - see above

    from . import guard  # noqa: PLC0415 - imports httpx


MAX_CACHED_URLS = 256  # request URLs a provider keeps parsed (paths that name a model add one per model)


class Provider(abc.ABC):
    """A model provider reached over HTTP.

    The facts of a kind live here and nowhere else: config, the key store, fallback and the pages derive
    their lists from these attributes through ``providers.registry.KINDS``.
    """

    kind: ClassVar[str]  # the registry key: openai, anthropic, google, ..., openai-compatible, lmstudio
    # The connection this object serves; the class value is the kind's seeded connection, named after the kind.
    name: str
    display_name: ClassVar[str]
    default_base_url: ClassVar[str | None] = None  # None: the operator must give one
    base_url_env_vars: ClassVar[tuple[str, ...]] = ()  # the seeded connection's URL: the first one set wins
    key_env_vars: ClassVar[tuple[str, ...]] = ()  # the seeded connection's key: documented name, then aliases
    needs_key: ClassVar[bool] = True
    local: ClassVar[bool] = False
    # Options a connection of this kind accepts (name -> what it is): constructor keywords such as api_version.
    option_names: ClassVar[tuple[str, ...]] = ()
    forbidden_list_means_restricted: ClassVar[bool] = False  # a 403 on list-models is not a bad key
    price_table_id: ClassVar[str | None] = None  # provider id in the genai-prices table (pricing.py)
    # achat and astream_chat answer on the running event loop (the gateway's calls); without them a caller
    # that is on a loop runs chat and stream_chat on a worker thread (Orchestrator.achat / astream_chat).
    native_async: ClassVar[bool] = False

    def __init__(
        self, client: Client, api_key: str | None = None, *, limits: CallLimits | None = None,
        connection: str | None = None, **options: Any,
    ) -> None:
        self.client = client
        self.api_key = api_key
        self.limits = limits or CallLimits()
        self._urls: dict[str, httpx.URL] = {}  # path -> its URL on this client (see _url)
        self.options = options
        if connection is not None:
            self.name = connection

    @classmethod
    def key_env_hint(cls) -> str:
        """' or set OPENAI_API_KEY' for a message that says how to add a key; '' when no variable exists."""
        return f" or set {cls.key_env_vars[0]}" if cls.key_env_vars else ""

    def with_key(self, api_key: str | None) -> Provider:
        """This provider for one request with one key: same client and learned host state, another key."""
        if api_key == self.api_key:
            return self  # a provider is never changed after it is built: the same key needs no view
        view = copy.copy(self)
        view.api_key = api_key
        return view

    def with_client(self, client: Client, limits: CallLimits) -> Provider:
        """This provider on another client (the status probes' short timeouts), sharing its learned state."""
        view = copy.copy(self)
        view.client, view.limits = client, limits
        view._urls = {}  # URLs of the other client
        return view

    # -- the three operations every provider offers -------------------------------------------
    @abc.abstractmethod
    def chat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        """Send a conversation and return the whole answer."""

    @abc.abstractmethod
    def stream_chat(self, model: str, messages: list[Message], params: ChatParams) -> Iterator[StreamEvent]:
        """Yield TextDelta pieces as they arrive, then exactly one ChatResult with usage."""

    async def achat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        """chat awaited on the running event loop: the same answer, errors and limits (native_async)."""
        raise UnsupportedOperationError(f"{self.display_name} answers on a worker thread only (chat).",
                                        provider=self.name, model=model)

    def astream_chat(self, model: str, messages: list[Message], params: ChatParams) -> AsyncIterator[StreamEvent]:
        """stream_chat read on the running event loop: the same events, errors and limits (native_async)."""
        raise UnsupportedOperationError(f"{self.display_name} streams on a worker thread only (stream_chat).",
                                        provider=self.name, model=model)

    @abc.abstractmethod
    def list_models(self) -> list[str]:
        """Model names this provider offers (bare names, without the ``provider:`` prefix)."""

    def test_key(self) -> KeyTestResult:
        """Probe the key with the cheapest non-generating call (list models)."""
        started = time.perf_counter()
        try:
            models = self.list_models()
        except AuthenticationError as exc:
            if exc.status_code == 403 and self.forbidden_list_means_restricted:
                # OpenAI's restricted project keys may not list models yet chat fine: the key itself
                # was not refused.
                detail = f"{exc.message} The key may be valid but not allowed to list models; try a chat."
                return KeyTestResult(KeyCheck.UNVERIFIED, detail, _ms(started))
            return KeyTestResult(KeyCheck.REJECTED, exc.message, _ms(started))
        except OrchestratorError as exc:
            return KeyTestResult(KeyCheck.UNVERIFIED, exc.message, _ms(started))
        return KeyTestResult(KeyCheck.OK, f"Key accepted; {len(models)} models listed.", _ms(started))

    # -- helpers shared by every provider -----------------------------------------------------
    @property
    def secrets(self) -> tuple[str | None, ...]:
        # A host that echoes its URL back (a proxy's error page) must not show the credentials in it either.
        if isinstance(self.client, PlainClient):
            return (self.api_key,)  # it never serves a URL with credentials in it (PlainClient.serves)
        url = self.client.base_url  # its password and username come decoded (p%40ss: p@ss)
        return (self.api_key, url.password or url.username or None)

    @property
    def base_url(self) -> str:
        """The base URL as messages may show it: credentials in it (user:password@) masked."""
        return redact_url(str(self.client.base_url).rstrip("/"))

    @property
    def http(self) -> httpx.Client:
        """The httpx client; a TypeError on the read-only status's PlainClient, which serves request_json only."""
        client = self.client
        if isinstance(client, PlainClient):
            raise TypeError(f"{self.name}: a PlainClient serves status probes (request_json) only")
        if guard is None:
            _bind_httpx()  # every request through httpx starts here (_send_request)
        return client

    def request_json(self, method: str, path: str, *, model: str | None = None, **kwargs: Any) -> Any:
        """One request; a non-2xx or non-JSON answer becomes the right error class."""
        deadline = self.deadline(model)
        if isinstance(self.client, PlainClient):
            body = self.client.fetch(method, path, deadline, provider=self.name, model=model,
                                     limit=self.limits.max_response_bytes, secrets=self.secrets, **kwargs)
        else:
            # _exchange's steps without its context manager: this is every non-streamed call's path.
            response = self._send_request(method, path, deadline, model, kwargs)
            try:
                self._raise_for_status(response, deadline, model)
                body = guard.read_body(response, deadline, limit=self.limits.max_response_bytes)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, model) from exc
            finally:
                response.close()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise bad_response(self.name, model, "the body is not JSON") from None

    @contextlib.contextmanager
    def open_stream(
        self, method: str, path: str, *, model: str | None = None, deadline: Deadline | None = None, **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """A streaming 2xx response; status and transport failures, also while reading it, become error classes."""
        deadline = deadline or self.deadline(model, stream=True)
        with self._exchange(method, path, deadline, model=model, stream=True, **kwargs) as response:
            yield response

    def stream_events(
        self, method: str, path: str, *, model: str | None = None, **kwargs: Any
    ) -> Generator[ServerSentEvent, None, None]:
        """Open an SSE stream; yields events. Transport and status failures become error classes."""
        kwargs["headers"] = {"Accept": "text/event-stream", **(kwargs.get("headers") or {})}
        deadline = self.deadline(model, stream=True)
        with self.open_stream(method, path, model=model, deadline=deadline, **kwargs) as response:
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # Some servers answer a stream request with a plain JSON body or an HTML page.
                raise self._not_a_stream(response, content_type, model)
            from httpx_sse import EventSource  # noqa: PLC0415 - start-up cost: only a stream needs it

            for event in EventSource(response).iter_sse():
                if event.data:
                    deadline.progress()
                yield event

    def stream_lines(
        self, method: str, path: str, *, model: str | None = None, **kwargs: Any
    ) -> Generator[str, None, None]:
        """Open a stream and yield its lines (for streams that are not strictly SSE, like Gemini's)."""
        deadline = self.deadline(model, stream=True)
        with self.open_stream(method, path, model=model, deadline=deadline, **kwargs) as response:
            for line in response.iter_lines():
                if line.strip() and not line.startswith(":"):  # an SSE comment is not progress
                    deadline.progress()
                yield line

    def send_read(self, method: str, path: str, *, model: str, total_s: float, setting: str, **kwargs: Any
                  ) -> httpx.Response:
        """One request whose whole answer, of any status, is read within ``total_s`` and the size caps (loads)."""
        deadline = Deadline(total_s, setting=setting, where=self._where(model), provider=self.name, model=model)
        response = self._send_request(method, path, deadline, model, kwargs)
        try:
            if response.status_code >= 400:
                return guard.read_error_body(response, deadline)
            body = guard.guarded(response, deadline, limit=self.limits.max_response_bytes, over="raise", what="body")
            body.read()
            return body
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, model) from exc
        finally:
            response.close()

    def deadline(self, model: str | None, *, stream: bool = False) -> Deadline:
        """A fresh clock for one request under this provider's limits."""
        limits = self.limits
        return Deadline(
            limits.call_deadline_s, setting=limits.deadline_setting, where=self._where(model),
            idle_s=limits.stream_idle_timeout_s if stream else None, provider=self.name, model=model,
        )

    def answer_text(self, model: str) -> AnswerText:
        """Where a stream collects its answer, refused past MAX_ANSWER_CHARS."""
        return AnswerText(self.limits.max_answer_chars, provider=self.name, model=model)

    @contextlib.contextmanager
    def _exchange(
        self, method: str, path: str, deadline: Deadline, *, model: str | None, stream: bool = False, **kwargs: Any,
    ) -> Iterator[httpx.Response]:
        """Send one request and yield its 2xx response with the body guarded by the deadline and the caps."""
        response = self._send_request(method, path, deadline, model, kwargs)
        try:
            self._raise_for_status(response, deadline, model)
            cap = self.limits.max_response_bytes
            # An event stream is bounded by the answer cap and the deadlines, one line of it by the body cap;
            # any other body (also one answering a stream request) by the body cap.
            events = stream and "text/event-stream" in response.headers.get("content-type", "")
            yield guard.guarded(response, deadline, over="raise", what="stream" if events else "body",
                          limit=sys.maxsize if events else cap, line_limit=cap if stream else None)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, model) from exc
        finally:
            response.close()

    def _raise_for_status(self, response: httpx.Response, deadline: Deadline, model: str | None) -> None:
        if response.status_code >= 400:
            error_body = guard.read_error_body(response, deadline)
            raise classify_response(error_body, provider=self.name, model=model, secrets=self.secrets)

    def _send_request(
        self, method: str, path: str, deadline: Deadline, model: str | None, kwargs: dict[str, Any]
    ) -> httpx.Response:
        client = self.http
        try:
            with guard.reads_under(deadline):
                return client.send(client.build_request(method, self._url(path), **kwargs), stream=True)
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            pass  # raised below, outside this block, unchained: these exceptions quote the header, key and all
        except httpx.TimeoutException as exc:
            raise (deadline.error() if deadline.cut_last_read else self._transport_error(exc, model)) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, model) from exc
        raise self.unsendable_header(model)

    def unsendable_header(self, model: str | None) -> AuthenticationError:
        """The error of a request whose headers HTTP cannot carry; it never quotes the header (the key is in it)."""
        return AuthenticationError(
            f"The request to {self._where(model)} could not be sent: a header holds a character HTTP cannot "
            f"carry, most likely a hidden or non-ASCII character in the {self.display_name} key; paste the key "
            "again on the API Keys page.",
            provider=self.name, model=model,
        )

    def _url(self, path: str) -> httpx.URL:
        """path on the client's base URL, parsed and merged once: httpx does both on every request (~2 URL
        parses), and an absolute httpx.URL it takes as it is. Paths with a model name are few per connection."""
        found = self._urls.get(path)
        if found is None:
            found = self.http._merge_url(path)  # httpx's own merge: the URL is the one it would send
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[path] = found
        return found

    def _transport_error(self, exc: httpx.HTTPError, model: str | None) -> ProviderError:
        # A read that timed out is the per-read limit (READ_TIMEOUT_S); the deadlines raise their own error.
        return classify_transport(exc, provider=self.name, model=model, base_url=self.base_url)

    def _where(self, model: str | None) -> str:
        return f"{self.name}:{model}" if model else self.name

    def in_band_error(self, payload: Any, model: str | None) -> ProviderError:
        """Classify an ``{"error": ...}`` that arrived inside a 2xx body or a stream event."""
        error = payload.get("error") if isinstance(payload, dict) else None
        # The payload as httpx.Response(json=payload) would carry it, without an httpx object.
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return classify_status(in_band_status(error), {}, text, provider=self.name, model=model, secrets=self.secrets)

    def _not_a_stream(self, response: httpx.Response, content_type: str, model: str | None) -> ProviderError:
        body = parse_json(response, provider=self.name, model=model) if "json" in content_type else None
        return self.not_a_stream(content_type, body, model)

    def not_a_stream(self, content_type: str, body: Any, model: str | None) -> ProviderError:
        """The error of a 2xx that answers a stream request with something else (``body``: its JSON, if JSON)."""
        if "json" not in content_type:
            return bad_response(self.name, model, f"expected an event stream, got content-type {content_type!r}")
        if isinstance(body, dict) and body.get("error"):
            return self.in_band_error(body, model)
        snippet = scrub(str(body), self.secrets)[:200]
        return bad_response(self.name, model, f"expected an event stream, got JSON {snippet}")

    def require_key(self) -> str:
        if not self.api_key:
            whose = "" if self.name == type(self).name else f" for connection {self.name}"
            raise MissingKeyError(
                f"No {self.display_name} key{whose}: add one on the API Keys page{self.key_env_hint()}.",
                provider=self.name,
            )
        return self.api_key


class LocalHost(abc.ABC):
    """What a local model host adds to a provider: see what is loaded, load and unload."""

    start_hint: ClassVar[str] = "start the host"  # how to start it, for a Test that finds it down
    supports_load: ClassVar[bool] = True
    supports_unload: ClassVar[bool] = True
    pushes_model_events: ClassVar[bool] = False  # model_events() streams state changes (llama-server router)

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

    def model_events(self) -> Iterator[HostModel]:
        """State changes as the host pushes them, for hosts that do (pushes_model_events); none by default."""
        return iter(())

    @classmethod
    def same_model(cls, requested: str, listed: str) -> bool:
        """True when a name the host lists is the model that was requested (hosts may add a tag)."""
        return requested == listed


class AnswerText:
    """The text of one streamed answer, refused past MAX_ANSWER_CHARS so an endless stream cannot fill memory."""

    def __init__(self, limit: int, *, provider: str, model: str) -> None:
        self.limit = limit
        self.provider = provider
        self.model = model
        self._parts: list[str] = []
        self._length = 0

    def add(self, text: str) -> None:
        self._length += len(text)
        if self._length > self.limit:
            raise BadResponseError(
                f"{self.provider}:{self.model} streamed an answer longer than the limit of {self.limit} characters "
                "(MAX_ANSWER_CHARS); the host may be looping. Raise MAX_ANSWER_CHARS if answers this long are "
                "expected, or ask for a shorter answer (max_tokens).",
                provider=self.provider, model=self.model,
            )
        self._parts.append(text)

    def __str__(self) -> str:
        return "".join(self._parts)


def parse_json(response: httpx.Response, *, provider: str, model: str | None) -> Any:
    response.read()
    return text_json(response.text, provider=provider, model=model)


def text_json(text: str, *, provider: str, model: str | None) -> Any:
    """A whole body's JSON (its text decoded as httpx's Response.text does); BadResponseError if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        raise bad_response(provider, model, "the body is not JSON") from None


def event_json(event: ServerSentEvent, *, provider: str, model: str | None) -> Any:
    """The JSON payload of one SSE event; a malformed one ends the stream with BadResponseError."""
    return data_json(event.data, provider=provider, model=model)


def data_json(data: str, *, provider: str, model: str | None) -> Any:
    """The JSON payload of one SSE event's data, whichever client read it."""
    try:
        return json.loads(data)
    except ValueError:
        raise bad_response(provider, model, "a stream event is not valid JSON") from None


# error.type -> the HTTP status it stands for when the error arrives inside a 2xx (Anthropic's types, exactly)
_ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Looser markers for OpenAI-style servers, whose in-band error types are not a fixed list.
_ERROR_TYPE_MARKERS: tuple[tuple[str, int], ...] = (
    ("rate", 429), ("auth", 401), ("not_found", 404), ("invalid_request", 400),
    ("overloaded", 503), ("unavailable", 503),
)


def in_band_status(error: Any) -> int:
    """The HTTP status an in-band error object stands for: its numeric code (Gemini, llama-server), else its type."""
    if not isinstance(error, dict):
        return 500
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    kind = str(error.get("type") or "")
    if kind in _ERROR_TYPE_STATUS:
        return _ERROR_TYPE_STATUS[kind]
    names = f"{kind} {code or ''}".lower()  # OpenAI: type "requests", code "rate_limit_exceeded"
    return next((status for marker, status in _ERROR_TYPE_MARKERS if marker in names), 500)


def system_and_turns(messages: list[Message]) -> tuple[str, list[tuple[str, list[str]]]]:
    """The system messages joined, and the other turns as (role, texts) with same-role neighbours merged."""
    # For APIs with a top-level system prompt (Anthropic, Gemini); they reject blank turns, so those are dropped.
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"].strip())
    turns: list[tuple[str, list[str]]] = []
    for m in messages:
        if m["role"] == "system" or not m["content"].strip():
            continue
        if turns and turns[-1][0] == m["role"]:
            turns[-1][1].append(m["content"])
        else:
            turns.append((m["role"], [m["content"]]))
    return system, turns


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
