"""Streams: keep-alive comments while a local model loads before the first token, SSE framing, a reader
that goes away is recorded as cancelled."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
from sqlalchemy import select

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.tables import CallMetric
from tests.faults.fault_server import FaultServer, Reply
from tests.http_api.conftest import CUSTOM_CHAT, LiveServer, Served, Upstream

BODY = {"model": "lmstudio:qwen", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_a_slow_load_sends_loading_comments_before_the_first_token(serve: Callable[..., Served],
                                                                   upstream: Upstream) -> None:
    server, _, token = serve(stream_keepalive_s=0.2)
    upstream.load_s = 1.0  # five keep-alive intervals of 0.2 s
    client = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30)
    with client, client.stream("POST", "/v1/chat/completions", json=BODY) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    comments = [line for line in lines[:first_data] if line.startswith(":")]
    loading = [c for c in comments if c.startswith(": loading lmstudio:qwen ") and c.endswith("s")]
    assert len(loading) >= 3, lines
    # Before the host's first answer the gateway may not know yet that a load is coming: it waits.
    assert all(c in loading or c.startswith(": waiting for lmstudio:qwen ") for c in comments), comments
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "fine"


def test_a_fast_stream_has_no_comments_and_names_its_model_in_the_headers(chat_client: httpx.Client) -> None:
    body = {**BODY, "model": "custom:healthy"}
    with chat_client.stream("POST", "/v1/chat/completions", json=body) as answer:
        lines = [line for line in answer.iter_lines() if line]
        headers = answer.headers
    assert not [line for line in lines if line.startswith(":")]
    assert headers["x-orchestrator-model"] == "custom:healthy" and headers["x-orchestrator-attempts"] == "1"
    assert headers["x-request-id"]


def test_a_reader_that_leaves_mid_stream_is_recorded_as_cancelled(live: LiveServer, chat_token: str,
                                                                  orch: Orchestrator, upstream: Upstream) -> None:
    upstream.pieces = [f"p{i} " for i in range(200)]
    upstream.piece_delay_s = 0.02  # four seconds of answer: the reader leaves long before the end
    body = {**BODY, "model": "custom:healthy"}
    client = httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {chat_token}"})
    with client, client.stream("POST", "/v1/chat/completions", json=body) as answer:
        request_id = answer.headers["x-request-id"]
        next(answer.iter_lines())
    deadline = time.monotonic() + 5
    rows: list[tuple[str, str | None]] = []
    while time.monotonic() < deadline and not rows:
        orch.metrics.flush()
        with orch.db.session() as s:
            rows = [(r.outcome, r.error_kind) for r in s.scalars(select(CallMetric).where(
                CallMetric.request_id == request_id))]
        time.sleep(0.05)
    assert rows == [("error", "cancelled")]


def test_a_stream_still_waiting_for_its_first_token_at_shutdown_is_recorded_as_cancelled_without_a_cooldown(
    serve: Callable[..., Served], fault_server: FaultServer, upstream: Upstream,
) -> None:
    answer_normally = upstream.custom
    fault_server.script(CUSTOM_CHAT, lambda seen: Reply.stall() if (seen.json() or {}).get("model") == "slow"
                        else answer_normally(seen))
    server, orch, token = serve(read_timeout_s=5.0)
    orch.registry.add("custom:slow", priority=5)
    answered: list[object] = []

    def client() -> None:
        try:
            answered.append(httpx.post(f"{server.url}/v1/chat/completions", timeout=10,
                                       headers={"authorization": f"Bearer {token}"},
                                       json={**BODY, "model": "custom:slow"}).status_code)
        except httpx.HTTPError as exc:
            answered.append(type(exc).__name__)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not any((s.json() or {}).get("model") == "slow" for s in fault_server.seen):
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.01)
    server.stop()
    thread.join(10)

    assert orch.metrics.flush()
    with orch.db.session() as s:
        rows = [(r.model, r.outcome, r.error_kind) for r in s.scalars(select(CallMetric))]
    assert rows == [("custom:slow", "error", "cancelled")], "the server stopping is not the model's failure"
    assert orch.cooldown("custom:slow") is None
