"""astream_chat (aiohttp, on the event loop) against stream_chat (httpx, on a thread): the same scenario on a real
loopback fault server must give the same events, or the same error class with the same message, on both paths.
The async side runs on asyncio's loop and on uvloop's, whose transports differ."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import gzip
import json
import logging
import subprocess
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from orchestrator_core.clients import ProviderFactory
from orchestrator_core.errors import (
    AuthenticationError,
    BadResponseError,
    ContentFilteredError,
    OrchestratorError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from orchestrator_core.providers import aio
from orchestrator_core.providers.base import Provider
from orchestrator_core.types import ChatParams, ChatResult, Message, StreamEvent, TextDelta, Usage
from tests.faults.fault_server import DNS_FAILURE_URL, Blackhole, FaultServer, RefusedPort, Reply
from tests.faults.wire import openai_answer, openai_chunk, openai_stream, sse
from tests.helpers import settings

KEY = "sk-aio-parity-0123456789abcdefXYZ"
MODEL = "gpt-aio"
CHAT = "/v1/chat/completions"
HELLO: list[Message] = [{"role": "user", "content": "Say hello"}]
LOOPS = ["asyncio", "uvloop"]
TOKEN = sse(openai_chunk("Hel", MODEL))
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
# Timeouts far above a loopback answer; the rows about time shorten the one they are about.
ROOMY = {"connect_timeout_s": 2.0, "read_timeout_s": 5.0, "stream_idle_timeout_s": 5.0, "call_deadline_s": 10.0}
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a caller of one path saw: the events before the end, and the error that ended it (if any)."""

    events: list[StreamEvent]
    error: type[BaseException] | None = None
    message: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Row:
    id: str
    reply: Reply | None  # None: the base URL itself is broken (socket)
    error: type[OrchestratorError] | None  # None: the stream must work
    says: str  # in the message (or, for a working stream, the answer's text)
    limits: dict[str, Any] = field(default_factory=dict)
    socket: str | None = None  # "refused" | "dns" | "blackhole"
    paced: bool = False  # how many pieces beat the deadline depends on the machine's load: one list starts the other


def chunk(**delta: Any) -> dict[str, Any]:
    finish = delta.pop("finish", None)
    return {"model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def gzipped(pieces: list[bytes]) -> Reply:
    body = gzip.compress(b"".join(pieces))
    return Reply(200, body, {"content-type": "text/event-stream", "content-encoding": "gzip"})


def events_reply(*pieces: bytes) -> Reply:
    return Reply.stream(list(pieces))


ROWS = [
    Row("healthy-stream-with-usage", Reply.stream(openai_stream(["Hel", "lo"], MODEL)), None, "Hello"),
    Row("multi-line-data-comments-and-crlf",
        events_reply(b": hello\r\n\r\n", b'data: {"model": "gpt-aio",\r\ndata: "choices": [{"delta": {"content": "Hi"}}]}'
                     b"\r\n\r\n", b"event: ping\r\n\r\n", b"data: [DONE]\r\n\r\n"), None, "Hi"),
    Row("gzip-body", gzipped(openai_stream(["Hel", "lo"], MODEL)), None, "Hello"),
    Row("refusal", Reply.stream(sse(chunk(refusal="I can't help with that."), "[DONE]")), ContentFilteredError,
        "refused to answer: \"I can't help with that.\""),
    Row("content-filter", Reply.stream(sse(chunk(content="Hel"), chunk(finish="content_filter"), "[DONE]")),
        ContentFilteredError, "stopped the answer at its content filter after 3 characters"),
    Row("in-band-error-chunk", Reply.stream([*TOKEN, *sse({"error": {"message": "Rate limit reached", "type": "requests",
                                                                      "code": "rate_limit_exceeded"}})]),
        RateLimitError, "Rate limit reached"),
    Row("malformed-json-event", Reply.stream([*TOKEN, b"data: {not json\n\n"]), BadResponseError, "not valid JSON"),
    Row("chunk-not-an-object", Reply.stream(sse("[1, 2]")), BadResponseError, "not a JSON object"),
    Row("missing-done", Reply.stream(openai_stream(["Hel"], MODEL, done=False)), BadResponseError,
        "without its [DONE] marker"),
    Row("401", Reply.json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                          "code": "invalid_api_key"}}), AuthenticationError, "HTTP 401"),
    Row("401-echoes-the-key", Reply.json(401, {"error": {"message": f"Incorrect API key provided: {KEY}."}}),
        AuthenticationError, "Incorrect API key provided: ••••"),
    Row("429-retry-after", Reply.json(429, {"error": {"message": "Slow down", "type": "requests"}},
                                      headers={"retry-after": "7"}), RateLimitError, "retry after 7s"),
    Row("503", Reply.json(503, {"error": {"message": "The engine is currently overloaded"}}),
        ProviderUnavailableError, "HTTP 503: The engine is currently overloaded"),
    Row("html-error-page", Reply.text(502, HTML_502, "text/html"), ProviderUnavailableError,
        "an HTML error page: 502 Bad Gateway"),
    Row("gzip-error-body", Reply(500, gzip.compress(b'{"error": {"message": "boom"}}'),
                                 {"content-type": "application/json", "content-encoding": "gzip"}),
        ProviderUnavailableError, "HTTP 500: boom"),
    Row("non-sse-json-body", Reply.json(200, openai_answer("Hello", MODEL)), BadResponseError,
        "expected an event stream, got JSON"),
    Row("non-sse-json-error-body", Reply.json(200, {"error": {"message": "model overloaded", "type": "overloaded"}}),
        ProviderUnavailableError, "model overloaded"),
    Row("non-sse-body-not-json", Reply.text(200, "{oops", "application/json"), BadResponseError, "not JSON"),
    Row("html-page-with-200", Reply.text(200, HTML_502, "text/html"), BadResponseError,
        "got content-type 'text/html'"),
    Row("body-that-does-not-decompress", Reply(200, b"not gzip at all", {"content-type": "text/event-stream",
                                                                          "content-encoding": "gzip"}),
        BadResponseError, "does not decompress"),
    Row("unknown-content-encoding", Reply(200, b"x", {"content-type": "text/event-stream", "content-encoding": "br"}),
        BadResponseError, "content-encoding 'br' was not asked for"),
    Row("redirect-is-not-followed", Reply(302, b"", {"location": "/v1/elsewhere", "content-type": "text/plain"}),
        BadResponseError, "got content-type 'text/plain'"),
    Row("refused-port", None, ProviderUnavailableError, "connection refused or unreachable", socket="refused"),
    Row("dns-failure", None, ProviderUnavailableError, "name not resolved", socket="dns"),
    Row("connect-timeout", None, ProviderTimeoutError, "connect timeout", {"connect_timeout_s": 0.1},
        socket="blackhole"),
    Row("stall-before-headers", Reply.stall(), ProviderTimeoutError, "did not answer in time (ReadTimeout)",
        {"read_timeout_s": 0.2}),
    Row("stall-before-first-token-idle", Reply.stream([], then="stall"), ProviderTimeoutError,
        "sent no new data for 0.3s", {"stream_idle_timeout_s": 0.3}),
    Row("stall-before-first-token-read-timeout", Reply.stream([], then="stall"), ProviderTimeoutError,
        "(ReadTimeout)", {"read_timeout_s": 0.2}),
    Row("stall-after-first-token", Reply.stream(TOKEN, then="stall"), ProviderTimeoutError, "(ReadTimeout)",
        {"read_timeout_s": 0.2}),
    Row("stall-after-first-token-idle", Reply.stream(TOKEN, then="stall"), ProviderTimeoutError,
        "sent no new data for 0.3s", {"stream_idle_timeout_s": 0.3}),
    Row("cut-mid-stream", Reply.stream(TOKEN, then="cut"), ProviderUnavailableError,
        "closed the connection mid-response (RemoteProtocolError)"),
    Row("comments-trickle-past-the-idle-limit", Reply.endless(b": keep-alive\n\n", first=TOKEN, every_s=0.05),
        ProviderTimeoutError, "keep-alive comments do not count", {"stream_idle_timeout_s": 0.3}, paced=True),
    Row("tokens-past-the-call-deadline", Reply.endless(sse(openai_chunk("x", MODEL))[0], every_s=0.05),
        ProviderTimeoutError, "did not finish within 0.4s", {"call_deadline_s": 0.4}, paced=True),
    Row("answer-over-max-answer-chars", Reply.stream(openai_stream(["Hello", " world"], MODEL)), BadResponseError,
        "longer than the limit of 8 characters (MAX_ANSWER_CHARS)", {"max_answer_chars": 8}),
    Row("line-over-the-cap", Reply.endless(b"x" * 512, first=[b"data: "]), BadResponseError,
        "one stream line is longer than the limit of 4096 bytes", {"max_response_bytes": 4096}),
    Row("non-sse-body-over-the-cap", Reply.json(200, {"pad": "x" * 8000}), BadResponseError,
        "larger than the limit of 4096 bytes", {"max_response_bytes": 4096}),
]


@contextlib.contextmanager
def base_url_for(row: Row, server: FaultServer) -> Iterator[str]:
    if row.socket == "refused":
        port = RefusedPort()
        yield port.url + "/v1"
        port.close()
    elif row.socket == "blackhole":
        hole = Blackhole()
        yield hole.url + "/v1"
        hole.close()
    else:
        yield (DNS_FAILURE_URL if row.socket == "dns" else server.url) + "/v1"


def factory_for(base_url: str, **limits: Any) -> ProviderFactory:
    """Providers built as the gateway builds them (ProviderFactory's httpx clients), on one base URL."""
    options = {**ROOMY, **limits}
    return ProviderFactory(settings("sqlite://", base_urls={"openai": base_url}, env_keys={"openai": KEY}, **options))


def run_on(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    """main() on a fresh loop of that kind, its sessions closed before the loop is."""
    async def closing() -> T:
        try:
            return await main()
        finally:
            await aio.close_sessions()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        return runner.run(closing())


def sync_outcome(provider: Provider) -> Outcome:
    events: list[StreamEvent] = []
    try:
        events.extend(provider.stream_chat(MODEL, HELLO, ChatParams()))
    except OrchestratorError as exc:
        return Outcome(events, type(exc), exc.message, exc.retry_after)
    return Outcome(events)


async def async_outcome(provider: Provider) -> Outcome:
    events: list[StreamEvent] = []
    try:
        async for event in provider.astream_chat(MODEL, HELLO, ChatParams()):
            events.append(event)
    except OrchestratorError as exc:
        return Outcome(events, type(exc), exc.message, exc.retry_after)
    return Outcome(events)


def both_paths(factory: ProviderFactory, loop: str) -> tuple[Outcome, Outcome]:
    provider = factory.get("openai")
    try:
        return sync_outcome(provider), run_on(loop, lambda: async_outcome(provider))
    finally:
        factory.close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_a_stream_reads_the_same_on_the_event_loop_as_on_a_thread(row: Row, loop: str, server: FaultServer) -> None:
    if row.reply is not None:
        server.script(CHAT, row.reply)
    with base_url_for(row, server) as base_url:
        on_thread, on_loop = both_paths(factory_for(base_url, **row.limits), loop)
    if row.paced:
        shorter = min(len(on_thread.events), len(on_loop.events))
        on_thread, on_loop = (dataclasses.replace(o, events=o.events[:shorter]) for o in (on_thread, on_loop))
    assert on_loop == on_thread
    assert on_loop.error is row.error, on_loop
    if row.error is None:
        assert isinstance(result := on_loop.events[-1], ChatResult)
        assert result.text == row.says
    else:
        assert row.says in on_loop.message
        assert not any(isinstance(e, ChatResult) for e in on_loop.events)
    assert KEY not in on_loop.message and KEY[-12:] not in on_loop.message


@pytest.mark.parametrize("loop", LOOPS)
def test_a_healthy_stream_yields_its_pieces_then_one_result_with_usage(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.stream(openai_stream(["Hel", "lo"], "gpt-aio-2025")))
    on_thread, on_loop = both_paths(factory_for(server.url + "/v1"), loop)
    assert on_loop == on_thread
    assert on_loop.events == [TextDelta("Hel"), TextDelta("lo"),
                              ChatResult("Hello", None, Usage(5, 2), "gpt-aio-2025", "openai")]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_rate_limit_carries_retry_after_on_both_paths(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.json(429, {"error": {"message": "Slow down"}}, headers={"retry-after-ms": "1500"}))
    on_thread, on_loop = both_paths(factory_for(server.url + "/v1"), loop)
    assert on_loop == on_thread
    assert on_loop.retry_after == 1.5


@pytest.mark.parametrize("loop", LOOPS)
def test_both_paths_send_the_same_request(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.stream(openai_stream(["Hi"], MODEL)))
    both_paths(factory_for(server.url + "/v1"), loop)
    sync_seen, async_seen = server.requests_to(CHAT)
    assert async_seen.body == sync_seen.body
    assert async_seen.json()["stream_options"] == {"include_usage": True}
    same = ("accept", "accept-encoding", "user-agent", "authorization", "content-type", "content-length")
    assert {h: async_seen.headers.get(h) for h in same} == {h: sync_seen.headers.get(h) for h in same}
    assert async_seen.headers["user-agent"].startswith("orchestrator-core/")
    assert async_seen.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("loop", LOOPS)
def test_credentials_in_the_base_url_go_as_basic_auth_and_never_into_a_message(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.json(503, {"error": {"message": "down"}}))
    base_url = server.url.replace("http://", "http://proxyuser:s3cr%40tPass@") + "/v1"
    on_thread, on_loop = both_paths(factory_for(base_url), loop)
    sync_seen, async_seen = server.requests_to(CHAT)
    assert async_seen.headers["authorization"] == sync_seen.headers["authorization"]
    assert async_seen.headers["authorization"].startswith("Basic ")
    assert on_loop == on_thread
    refused = RefusedPort()
    try:
        _, failed = both_paths(factory_for(refused.url.replace("http://", "http://proxyuser:s3cr%40tPass@") + "/v1"),
                               loop)
    finally:
        refused.close()
    assert failed.error is ProviderUnavailableError
    assert "s3cr" not in failed.message and "proxyuser" not in failed.message
    assert "***@127.0.0.1" in failed.message


@pytest.mark.parametrize("loop", LOOPS)
def test_a_key_with_a_non_ascii_character_is_refused_before_sending_and_never_quoted(
        loop: str, server: FaultServer) -> None:
    bad_key = "sk-aio-\u200bzqxw-0123456789"
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai", api_key=bad_key)
    try:
        on_thread, on_loop = sync_outcome(provider), run_on(loop, lambda: async_outcome(provider))
    finally:
        factory.close()
    assert on_loop == on_thread
    assert on_loop.error is AuthenticationError
    assert "non-ASCII character" in on_loop.message
    assert "zqxw" not in on_loop.message and "0123456789" not in on_loop.message
    assert server.requests_to(CHAT) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_goes_back_to_the_pool_after_done(loop: str, server: FaultServer) -> None:
    opened: list[int] = []
    count = server._opened

    def counting() -> None:
        opened.append(1)
        count()

    server._opened = counting  # type: ignore[method-assign]
    server.script(CHAT, Reply.stream(openai_stream(["Hi"], MODEL)))
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")

    async def three_streams() -> list[Outcome]:
        return [await async_outcome(provider) for _ in range(3)]

    try:
        outcomes = run_on(loop, three_streams)
    finally:
        factory.close()
    assert [o.error for o in outcomes] == [None, None, None]
    assert len(server.requests_to(CHAT)) == 3
    assert len(opened) == 1  # one connection served all three
    assert server.wait_all_closed()  # and close_sessions closed it


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancelled_read_closes_the_response_and_propagates(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.stream(TOKEN, then="stall"))
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")
    first: list[StreamEvent] = []

    async def client_leaves() -> None:
        async def read() -> None:
            async for event in provider.astream_chat(MODEL, HELLO, ChatParams()):
                first.append(event)

        task = asyncio.create_task(read())
        while not first:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(server.wait_all_closed), "the cancelled stream's connection was left open"

    try:
        run_on(loop, client_leaves)
    finally:
        factory.close()
    assert first == [TextDelta("Hel")]


class WideServer(FaultServer):
    request_queue_size = 128  # 64 connects at once: socketserver's default backlog of 5 would drop SYNs


@pytest.mark.parametrize("loop", LOOPS)
def test_64_concurrent_streams_on_one_loop_all_succeed_and_leave_nothing_open(
        loop: str, caplog: pytest.LogCaptureFixture) -> None:
    server = WideServer().start()
    pieces = [b"%s" % p for p in openai_stream(["Hel", "lo"], MODEL)]
    server.script(CHAT, dataclasses.replace(Reply.stream(pieces), piece_delay_s=0.02))  # all 64 open at once
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")

    async def sixty_four() -> list[Outcome]:
        return list(await asyncio.gather(*(async_outcome(provider) for _ in range(64))))

    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, logger="asyncio"):
            warnings.simplefilter("always")
            outcomes = run_on(loop, sixty_four)
            gc.collect()
        assert [o.error for o in outcomes] == [None] * 64
        assert {o.events[-1].text for o in outcomes if isinstance(o.events[-1], ChatResult)} == {"Hello"}
        assert len(server.requests_to(CHAT)) == 64
        assert server.wait_all_closed()
        unclosed = [str(w.message) for w in caught if "nclosed" in str(w.message)]
        assert unclosed == [] and "nclosed" not in caplog.text
    finally:
        factory.close()
        server.stop()


def test_one_session_per_loop_for_a_provider_shared_by_threads(server: FaultServer) -> None:
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")
    sessions: list[object] = []

    async def take() -> None:
        mine = aio.session(provider)
        assert aio.session(provider.with_key("sk-another-key-000000")) is mine  # a key's view shares the client
        sessions.append(mine)

    threads = [threading.Thread(target=run_on, args=(loop, take)) for loop in LOOPS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    factory.close()
    assert len(sessions) == 2 and sessions[0] is not sessions[1]


def test_closing_sessions_where_none_streamed_imports_no_aiohttp() -> None:
    code = ("import asyncio, sys; from orchestrator_core.providers import aio; asyncio.run(aio.close_sessions()); "
            "print(json.dumps(sorted(m for m in ('aiohttp', 'httpx') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_both_paths_go_through_the_proxy_the_environment_names(
        loop: str, server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script(CHAT, Reply.stream(openai_stream(["Hi"], MODEL)))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)  # the fault server reads an absolute-form request line too
    unreachable = RefusedPort()
    try:
        on_thread, on_loop = both_paths(factory_for(unreachable.url + "/v1"), loop)
    finally:
        unreachable.close()
    assert on_loop == on_thread
    assert on_loop.error is None
    assert len(server.requests_to(CHAT)) == 2


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_to_a_plain_http_port_fails_closed_the_same_way(loop: str, server: FaultServer) -> None:
    on_thread, on_loop = both_paths(factory_for(server.url.replace("http://", "https://") + "/v1"), loop)
    assert on_loop == on_thread
    assert on_loop.error is ProviderUnavailableError
    assert server.requests_to(CHAT) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_netrc_entry_for_the_host_changes_nothing(
        loop: str, server: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # aiohttp's trust_env reads ~/.netrc (httpx does not) and then refuses any request with an Authorization header.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\nlogin someone\npassword netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    server.script(CHAT, Reply.stream(openai_stream(["Hi"], MODEL)))
    on_thread, on_loop = both_paths(factory_for(server.url + "/v1"), loop)
    assert on_loop == on_thread
    assert on_loop.error is None
    assert [s.headers["authorization"] for s in server.requests_to(CHAT)] == [f"Bearer {KEY}"] * 2


# -- achat (aio.request_json) against chat (httpx) ------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What a caller of one path of a plain chat saw: the answer's parts, or the error class and message."""

    text: str | None = None
    finish: str | None = None
    usage: Usage | None = None
    model: str | None = None
    error: type[BaseException] | None = None
    message: str = ""
    retry_after: float | None = None


def answer_of(call: Callable[[], ChatResult]) -> Answer:
    try:
        result = call()
    except OrchestratorError as exc:
        return Answer(error=type(exc), message=exc.message, retry_after=exc.retry_after)
    return Answer(result.text, result.finish_reason, result.usage, result.model)


async def async_answer_of(call: Callable[[], Awaitable[ChatResult]]) -> Answer:
    try:
        result = await call()
    except OrchestratorError as exc:
        return Answer(error=type(exc), message=exc.message, retry_after=exc.retry_after)
    return Answer(result.text, result.finish_reason, result.usage, result.model)


ANSWER = openai_answer("Hello", MODEL)
PLAIN_ROWS = [
    Row("healthy-answer", Reply.json(200, ANSWER), None, "Hello"),
    Row("gzip-answer", Reply(200, gzip.compress(json.dumps(ANSWER).encode()),
                             {"content-type": "application/json", "content-encoding": "gzip"}), None, "Hello"),
    Row("refusal", Reply.json(200, {"model": MODEL, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that."}}]}), ContentFilteredError,
        "refused to answer"),
    Row("in-band-error", Reply.json(200, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}),
        RateLimitError, "Rate limit reached"),
    Row("no-choices", Reply.json(200, {"model": MODEL, "choices": []}), BadResponseError, "no choices"),
    Row("not-json", Reply.text(200, "{oops", "application/json"), BadResponseError, "not JSON"),
    Row("401-echoes-the-key", Reply.json(401, {"error": {"message": f"Incorrect API key provided: {KEY}."}}),
        AuthenticationError, "Incorrect API key provided: ••••"),
    Row("429-retry-after", Reply.json(429, {"error": {"message": "Slow down"}}, headers={"retry-after": "7"}),
        RateLimitError, "retry after 7s"),
    Row("html-error-page", Reply.text(502, HTML_502, "text/html"), ProviderUnavailableError,
        "an HTML error page: 502 Bad Gateway"),
    Row("refused-port", None, ProviderUnavailableError, "connection refused or unreachable", socket="refused"),
    Row("dns-failure", None, ProviderUnavailableError, "name not resolved", socket="dns"),
    Row("connect-timeout", None, ProviderTimeoutError, "connect timeout", {"connect_timeout_s": 0.1},
        socket="blackhole"),
    Row("stall-before-headers", Reply.stall(), ProviderTimeoutError, "(ReadTimeout)", {"read_timeout_s": 0.2}),
    Row("body-cut-short", Reply.partial(ANSWER, sent=10, then="cut"), ProviderUnavailableError,
        "closed the connection mid-response"),
    Row("body-trickles-past-the-deadline", Reply.trickle(json.dumps(ANSWER).encode(), every_s=0.05),
        ProviderTimeoutError, "did not finish within 0.4s", {"call_deadline_s": 0.4}),
    Row("body-over-the-cap", Reply.json(200, {"pad": "x" * 8000}), BadResponseError,
        "larger than the limit of 4096 bytes", {"max_response_bytes": 4096}),
]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("row", PLAIN_ROWS, ids=[r.id for r in PLAIN_ROWS])
def test_a_chat_answers_the_same_on_the_event_loop_as_on_a_thread(row: Row, loop: str, server: FaultServer) -> None:
    if row.reply is not None:
        server.script(CHAT, row.reply)
    with base_url_for(row, server) as base_url:
        factory = factory_for(base_url, **row.limits)
        provider = factory.get("openai")
        try:
            on_thread = answer_of(lambda: provider.chat(MODEL, HELLO, ChatParams()))
            on_loop = run_on(loop, lambda: async_answer_of(lambda: provider.achat(MODEL, HELLO, ChatParams())))
        finally:
            factory.close()
    assert on_loop == on_thread
    assert on_loop.error is row.error, on_loop
    assert row.says in (on_loop.message if row.error else on_loop.text or "")
    assert KEY not in on_loop.message and KEY[-12:] not in on_loop.message


def test_every_kind_that_is_native_async_reads_both_paths_with_the_shared_parsers() -> None:
    from orchestrator_core.providers.openai_compat import OpenAICompatibleProvider
    from orchestrator_core.providers.registry import KINDS

    native = {kind for kind, cls in KINDS.items() if cls.native_async}
    compatible = {kind for kind, cls in KINDS.items() if issubclass(cls, OpenAICompatibleProvider)}
    assert native == compatible and "openai" in native and "anthropic" not in native
    for kind in native:  # an override of one path would let the two drift apart
        cls = KINDS[kind]
        assert cls.stream_chat is OpenAICompatibleProvider.stream_chat, kind
        assert cls.astream_chat is OpenAICompatibleProvider.astream_chat, kind
        assert cls.chat is OpenAICompatibleProvider.chat, kind
        assert cls.achat is OpenAICompatibleProvider.achat, kind


@pytest.mark.parametrize("loop", LOOPS)
def test_a_read_cancelled_before_the_headers_came_leaves_no_connection(loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.stall())
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")

    async def client_leaves() -> None:
        task = asyncio.create_task(async_outcome(provider))
        while not server.requests_to(CHAT):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(server.wait_all_closed), "the cancelled request's connection was left open"

    try:
        run_on(loop, client_leaves)
    finally:
        factory.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_host_that_streams_on_past_done_gets_its_answer_taken_and_its_connection_closed(
        loop: str, server: FaultServer) -> None:
    server.script(CHAT, Reply.endless(b": more\n\n", first=openai_stream(["Hi"], MODEL), every_s=0.01))
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")

    async def one_stream() -> tuple[Outcome, bool]:
        outcome = await async_outcome(provider)
        return outcome, await asyncio.to_thread(server.wait_all_closed)  # before close_sessions could close it

    try:
        outcome, closed = run_on(loop, one_stream)
    finally:
        factory.close()
    assert outcome.error is None and isinstance(result := outcome.events[-1], ChatResult) and result.text == "Hi"
    assert closed, "a connection still streaming past [DONE] went back to the pool"


def test_the_sessions_of_a_loop_that_ended_without_closing_them_are_let_go(server: FaultServer) -> None:
    server.script(CHAT, Reply.stream(openai_stream(["Hel", "lo"], MODEL)))
    factory = factory_for(server.url + "/v1")
    provider = factory.get("openai")

    async def stream_without_closing() -> None:
        assert [e async for e in provider.astream_chat(MODEL, HELLO, ChatParams())]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # the unclosed session's own warning, expected here
            asyncio.run(stream_without_closing())
            ended = next(iter(aio._sessions))
            assert ended.is_closed()
            run_on("asyncio", lambda: async_outcome(provider))  # the next loop's first session
            assert ended not in aio._sessions
    finally:
        factory.close()
