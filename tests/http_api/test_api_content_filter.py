"""A refusal or safety stop through the gateway, with the official openai SDK as the client.

OpenAI answers a refused prompt with 200 and finish_reason "content_filter", plain and streamed; the core
still records the attempt as failed and falls back from it when FALLBACK_ON_CONTENT_FILTER says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
from sqlalchemy import select

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.tables import CallMetric
from tests.http_api.conftest import REFUSAL, LiveServer, Served

HELLO = [{"role": "user", "content": "Say something you should not"}]
NO_FALLBACK = {"x-orchestrator-fallback": "off"}


def _sdk(url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=10)


def _rows(orch: Orchestrator, request_id: str) -> list[tuple[str, str, str | None]]:
    deadline = time.monotonic() + 5
    rows: list[tuple[str, str, str | None]] = []
    while time.monotonic() < deadline and not rows:
        orch.metrics.flush()
        with orch.db.session() as s:
            rows = [(r.model, r.outcome, r.error_kind) for r in s.scalars(
                select(CallMetric).where(CallMetric.request_id == request_id).order_by(CallMetric.id))]
    return rows


def test_a_refusal_is_a_200_with_finish_reason_content_filter_and_the_refusal(
        live: LiveServer, chat_token: str, orch: Orchestrator) -> None:
    raw = _sdk(live.url, chat_token).chat.completions.with_raw_response.create(
        model="custom:refuses", messages=HELLO, extra_headers=NO_FALLBACK)  # type: ignore[arg-type]
    completion = raw.parse()
    choice = completion.choices[0]
    assert raw.http_response.status_code == 200
    assert (choice.finish_reason, choice.message.refusal, choice.message.content) == ("content_filter", REFUSAL, "")
    assert completion.model == "custom:refuses" and raw.headers["x-orchestrator-model"] == "custom:refuses"
    assert completion.id == f"chatcmpl-{raw.headers['x-request-id']}"
    assert _rows(orch, raw.headers["x-request-id"]) == [("custom:refuses", "error", "content_filter")]


def test_a_refusal_in_a_stream_is_a_200_stream_that_ends_with_content_filter(
        live: LiveServer, chat_token: str, orch: Orchestrator) -> None:
    raw = _sdk(live.url, chat_token).chat.completions.with_raw_response.create(
        model="custom:refuses", messages=HELLO, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
        extra_headers=NO_FALLBACK)
    chunks = list(raw.parse())
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert raw.http_response.status_code == 200 and finishes[-1] == "content_filter"
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == REFUSAL
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert _rows(orch, raw.headers["x-request-id"]) == [("custom:refuses", "error", "content_filter")]


def test_a_safety_stop_after_the_first_token_ends_the_stream_with_content_filter_not_an_error(
        live: LiveServer, chat_token: str, orch: Orchestrator) -> None:
    raw = _sdk(live.url, chat_token).chat.completions.with_raw_response.create(
        model="custom:filtered", messages=HELLO, stream=True)  # type: ignore[arg-type]
    chunks = list(raw.parse())  # the SDK raises on an error event: this must not
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "half"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert _rows(orch, raw.headers["x-request-id"]) == [("custom:filtered", "error", "content_filter")]


def test_a_refusal_falls_back_first_and_is_the_answer_only_when_fallback_is_off(
        live: LiveServer, chat_token: str, orch: Orchestrator) -> None:
    sdk = _sdk(live.url, chat_token)
    raw = sdk.chat.completions.with_raw_response.create(model="custom:refuses", messages=HELLO)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop" and completion.model == "custom:healthy"
    assert raw.headers["x-orchestrator-fallback-from"] == "custom:refuses"
    assert _rows(orch, raw.headers["x-request-id"]) == [("custom:refuses", "error", "content_filter"),
                                                        ("custom:healthy", "ok", None)]
    refused = sdk.chat.completions.create(model="custom:refuses", messages=HELLO,  # type: ignore[arg-type]
                                          extra_headers=NO_FALLBACK)
    assert (refused.model, refused.choices[0].finish_reason) == ("custom:refuses", "content_filter")


def test_when_no_model_answers_after_a_refusal_the_refusal_is_the_answer(
        live: LiveServer, chat_token: str, orch: Orchestrator) -> None:
    for model_id in ("custom:healthy", "custom:limited", "lmstudio:qwen"):
        orch.registry.set_active(model_id, False)
    raw = _sdk(live.url, chat_token).chat.completions.with_raw_response.create(
        model="custom:refuses", messages=HELLO)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "content_filter" and completion.model == "custom:refuses"
    assert raw.headers["x-orchestrator-attempts"] == "2"  # the refusal, then custom:dead
    assert [row[:2] for row in _rows(orch, raw.headers["x-request-id"])] == [
        ("custom:refuses", "error"), ("custom:dead", "error")]


def test_a_refusal_with_fallback_on_content_filter_off_is_answered_at_once(
        serve: Callable[..., Served]) -> None:
    server, orch, token = serve(fallback_on_content_filter=False)
    raw = _sdk(server.url, token).chat.completions.with_raw_response.create(
        model="custom:refuses", messages=HELLO, stream=True)  # type: ignore[arg-type]
    chunks = list(raw.parse())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert raw.headers["x-orchestrator-model"] == "custom:refuses"
    assert orch.failures.get("custom:refuses") is None  # a refusal never cools the model down
