"""The lean path of POST /v1/chat/completions (api/lean.py): chat requests skip FastAPI's stack, and answer
exactly what the FastAPI route answers (lean_chat=False), for good requests and bad ones alike."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api.app import Workers, create_api
from api.streaming import EventStream, Item, _Chunks, data_event
from orchestrator_core.orchestrator import Orchestrator
from tests.http_api.conftest import LiveServer

HELLO = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


class Recorder:
    """Wraps FastAPI's middleware stack and notes every request that reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def recorded(orch: Orchestrator) -> Iterator[tuple[LiveServer, Recorder]]:
    app = create_api(lambda: orch, close=None)
    recorder = Recorder(app.build_middleware_stack())
    app.middleware_stack = recorder  # type: ignore[assignment]
    server = LiveServer(app).start()
    yield server, recorder
    server.stop()


@pytest.fixture
def twins(orch: Orchestrator) -> Iterator[tuple[str, str]]:
    """The same orchestrator behind the lean app and behind FastAPI's route alone."""
    lean = LiveServer(create_api(lambda: orch, close=None)).start()
    full = LiveServer(create_api(lambda: orch, close=None, lean_chat=False)).start()
    yield lean.url, full.url
    lean.stop()
    full.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_chat_requests_take_the_lean_path_and_other_routes_fastapis(recorded: tuple[LiveServer, Recorder],
                                                                     chat_token: str) -> None:
    server, recorder = recorded
    with httpx.Client(base_url=server.url, headers=bearer(chat_token), timeout=10) as client:
        plain = client.post(CHAT, json={"model": "custom:healthy", "messages": HELLO})
        streamed = client.post(CHAT, json={"model": "custom:healthy", "messages": HELLO, "stream": True})
        refused = client.post(CHAT, json={"model": "custom:healthy", "messages": HELLO, "tools": [{}]})
        unauthorized = httpx.post(f"{server.url}{CHAT}", json={"model": "custom:healthy", "messages": HELLO})
        assert recorder.seen == []
        assert client.get("/v1/models").status_code == 200
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == "fine"
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"
    assert unauthorized.status_code == 401
    assert recorder.seen == [("GET", "/v1/models")]


def test_a_body_the_model_rejects_is_handed_to_fastapi_with_its_bytes(recorded: tuple[LiveServer, Recorder],
                                                                       chat_token: str) -> None:
    server, recorder = recorded
    answer = httpx.post(f"{server.url}{CHAT}", headers=bearer(chat_token),
                        json={"model": "custom:healthy", "messages": HELLO, "temperature": 5})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"
    assert recorder.seen == [("POST", CHAT)]


def _normalised(answer: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body and our headers, without what differs per call (ids, timestamps, cost of the call)."""
    headers = {k: v for k, v in answer.headers.items()
               if k.startswith(("x-orchestrator-", "retry-after", "content-type", "cache-control"))}
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        body: Any = [line.split('"id"')[0] for line in answer.text.splitlines()]
        return answer.status_code, body, headers
    body = answer.json()
    if isinstance(body, dict):
        body.pop("id", None)
        body.pop("created", None)
    return answer.status_code, body, headers


def _ok(**extra: Any) -> dict[str, Any]:
    return {"model": "custom:healthy", "messages": HELLO, **extra}


JSON = {"content-type": "application/json"}
CASES: list[tuple[str, bytes | dict[str, Any], dict[str, str]]] = [
    ("plain", _ok(temperature=0.5, max_completion_tokens=9, user="u", n=1), {}),
    ("stream with usage", _ok(stream=True, stream_options={"include_usage": True}), {}),
    ("temperature too high", _ok(temperature=5), {}),
    ("no messages", _ok(messages=[]), {}),
    ("no model", {"messages": HELLO}, {}),
    ("model not a string", _ok(model=7), {}),
    ("numbers as strings (lax)", _ok(temperature="0.5", stream="false"), {}),
    ("a tool", _ok(tools=[{"type": "function"}]), {}),
    ("n of 2", _ok(n=2), {}),
    ("a tool turn", _ok(messages=[{"role": "tool", "content": "x"}]), {}),
    ("an image part", _ok(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), {}),
    ("stream_options without stream", _ok(stream_options={"include_usage": True}), {}),
    ("a bad fallback header", _ok(), {"x-orchestrator-fallback": "maybe"}),
    ("fallback off, dead model", _ok(model="custom:dead"), {"x-orchestrator-fallback": "off"}),
    ("an unknown prefix", _ok(model="nosuch:model"), {}),
    ("not JSON", b'{"model": "custom:healthy", "messages": [', JSON),
    ("NaN (Python's json takes it)", b'{"model": "custom:healthy", "messages": [{"role": "user", "content": "hi"}], '
                                     b'"temperature": NaN}', JSON),
    ("UTF-16 JSON (Python's json takes it)", json.dumps(_ok()).encode("utf-16"), JSON),
    ("a JSON list", b"[]", JSON),
    ("an empty body", b"", JSON),
    ("no content type", json.dumps(_ok()).encode(), {}),
    ("JSON with a charset", json.dumps(_ok()).encode(), {"content-type": "application/json; charset=utf-8"}),
    ("text/plain", json.dumps(_ok()).encode(), {"content-type": "text/plain"}),
    ("a +json type", json.dumps(_ok()).encode(), {"content-type": "application/vnd.api+json"}),
]


@pytest.mark.parametrize(("body", "headers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_lean_path_answers_what_the_fastapi_route_answers(twins: tuple[str, str], chat_token: str,
                                                              orch: Orchestrator, body: bytes | dict[str, Any],
                                                              headers: dict[str, str]) -> None:
    answers = []
    for url in twins:
        orch.failures.reset()  # a dead model's cooldown from the first call would change the second
        sent = {**bearer(chat_token), **headers}
        if isinstance(body, bytes):
            answers.append(httpx.post(f"{url}{CHAT}", content=body, headers=sent, timeout=10))
        else:
            answers.append(httpx.post(f"{url}{CHAT}", json=body, headers=sent, timeout=10))
    lean, full = (_normalised(a) for a in answers)
    assert lean == full


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc", "Bearer orch_wrong", "bearer  orch_x"])
def test_the_lean_path_refuses_a_token_as_the_fastapi_route_does(twins: tuple[str, str],
                                                                 authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    lean, full = (_normalised(httpx.post(f"{url}{CHAT}", json=_ok(), headers=headers, timeout=10)) for url in twins)
    assert lean == full and lean[0] == 401


def test_a_chat_token_on_the_lean_path_is_checked_for_its_scope_and_once_per_failure(
        live: LiveServer, chat_token: str) -> None:
    for _ in range(9):
        assert httpx.post(f"{live.url}{CHAT}", json=_ok(), headers=bearer("orch_guess")).status_code == 401
    assert httpx.post(f"{live.url}{CHAT}", json=_ok(), headers=bearer(chat_token)).status_code == 200  # 9 < 10
    assert httpx.post(f"{live.url}{CHAT}", json=_ok(), headers=bearer("orch_guess")).status_code == 401
    locked = httpx.post(f"{live.url}{CHAT}", json=_ok(), headers=bearer(chat_token))
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "too_many_token_failures"


def test_the_openapi_schema_still_documents_the_chat_route(live: LiveServer) -> None:
    schema = httpx.get(f"{live.url}/api/openapi.json").json()
    post = schema["paths"][CHAT]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert {"400", "401", "429", "503"} <= set(post["responses"])
    assert "messages" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]


def test_sse_events_are_byte_for_byte_what_sse_starlette_encodes() -> None:
    text = json.dumps({"content": "naïve \u2028 line\nbreak"}, ensure_ascii=False)
    assert data_event(text) == ServerSentEvent(data=text).encode()
    assert data_event("[DONE]") == b"data: [DONE]\r\n\r\n"


async def _nothing() -> Any:
    yield b""


def test_the_event_stream_sends_the_headers_event_source_response_sent() -> None:
    ours = EventStream(_nothing(), {"x-request-id": "r", "x-orchestrator-model": "m"})
    theirs = EventSourceResponse(_nothing(), headers={"x-request-id": "r", "x-orchestrator-model": "m"}, ping=0)
    assert ours.raw_headers == theirs.raw_headers


@pytest.mark.parametrize("include_usage", [False, True])
def test_text_chunks_made_from_the_template_are_the_chunks_json_dumps_makes(include_usage: bool) -> None:
    chunks = _Chunks("req-1", include_usage)
    chunks.events(Item("text", text="first"), "custom:m")  # the first carries the role: made in full
    for model in ("custom:m", 'odd "model" \\ ü', "\x00"):
        for text in ("tok ", "", 'quote " and \\ backslash', "naïve \u2028 \x00 end", "\n\r\t"):
            body = {"id": "chatcmpl-req-1", "object": "chat.completion.chunk", "created": chunks.created,
                    "model": model, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            if include_usage:
                body["usage"] = None
            assert chunks.events(Item("text", text=text), model) == [data_event(json.dumps(body, ensure_ascii=False))]


def test_worker_threads_answer_raise_and_stay_within_their_size() -> None:
    workers = Workers(2)
    gate = threading.Event()

    async def main() -> None:
        waiting = [workers.call(lambda: gate.wait(10)) for _ in range(3)]  # three calls, two threads
        await asyncio.sleep(0.05)
        assert workers.threads == 2 and not any(w.done() for w in waiting)
        gate.set()
        assert await asyncio.gather(*waiting) == [True, True, True]
        with pytest.raises(ZeroDivisionError):
            await workers.call(lambda: 1 / 0)
        assert await workers.call(lambda: "again") == "again" and workers.threads == 2  # idle threads reused

    try:
        asyncio.run(main())
    finally:
        workers.shutdown()
