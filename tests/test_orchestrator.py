"""The facade end to end over a mocked wire: check-and-load, fallback chains, metrics, streaming."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx
from sqlalchemy import select

from orchestrator_core.errors import (
    AllModelsFailedError,
    BadRequestError,
    ContentFilteredError,
    EmptyPromptError,
    InvalidModelIdError,
    OrchestratorError,
    RateLimitError,
    StreamInterruptedError,
    UnknownProviderError,
)
from orchestrator_core.orchestrator import CallEvent, Orchestrator
from orchestrator_core.store.tables import CallMetric
from orchestrator_core.types import KeyCheck, KeyTestResult, ModelState
from tests.helpers import (
    ANTHROPIC,
    FAKE_OPENAI_KEY,
    LLAMACPP,
    LMSTUDIO,
    OPENAI,
    lmstudio_models,
    openai_answer,
    openai_sse,
    other_hosts_down,
    settings,
)

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        other_hosts_down(router)
        yield router


@pytest.fixture
def orch(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    o = Orchestrator.from_settings(settings(db_url, env_keys={"openai": FAKE_OPENAI_KEY}))
    o.registry.add("lmstudio:qwen", priority=50)
    yield o
    o.close()


def metric_rows(orch: Orchestrator) -> list[CallMetric]:
    orch.metrics.flush()
    with orch.db.session() as s:
        rows = list(s.scalars(select(CallMetric).order_by(CallMetric.id)))
        s.expunge_all()
    return rows


def test_hosted_chat_returns_answer_and_records_one_metric(orch: Orchestrator, wire: respx.MockRouter) -> None:
    route = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("Hi there"))
    result = orch.chat("openai:gpt-4.1-mini", HELLO, temperature=0.2, max_tokens=50)
    assert result.text == "Hi there"
    assert result.model_id == "openai:gpt-4.1-mini" and not result.fell_back
    assert route.calls.last.request.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    rows = metric_rows(orch)
    assert [(r.model, r.outcome, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("openai:gpt-4.1-mini", "ok", 7, 2)
    ]
    assert rows[0].request_id == result.request_id and rows[0].fallback_from is None


def test_local_model_not_loaded_is_loaded_before_the_prompt_is_sent(orch: Orchestrator, wire: respx.MockRouter) -> None:
    order: list[str] = []

    def models(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=lmstudio_models({"qwen": "load" in order}))

    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=models)
    load = wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(
        side_effect=lambda r: order.append("load") or httpx.Response(
            200, json={"type": "llm", "instance_id": "qwen", "status": "loaded", "load_time_seconds": 0.1})
    )
    chat = wire.post(f"{LMSTUDIO}/v1/chat/completions").mock(
        side_effect=lambda r: order.append("chat") or httpx.Response(200, json=openai_answer("local!", "qwen"))
    )
    events: list[CallEvent] = []
    result = orch.chat("lmstudio:qwen", HELLO, on_event=events.append)
    assert result.text == "local!" and result.model_id == "lmstudio:qwen"
    assert load.call_count == 1 and chat.call_count == 1
    assert order == ["load", "chat"]  # the prompt waited for the load
    assert any(e.kind == "loading" for e in events)


def test_local_host_down_falls_back_to_hosted_model_with_key(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("from the cloud"))
    result = orch.chat("lmstudio:qwen", HELLO)
    assert result.text == "from the cloud"
    assert result.fell_back and result.model_id == "openai:gpt-4.1-mini"
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert result.attempts[0].error_kind == "unavailable"
    rows = metric_rows(orch)
    assert [(r.model, r.outcome, r.fallback_from) for r in rows] == [
        ("lmstudio:qwen", "error", None),
        ("openai:gpt-4.1-mini", "ok", "lmstudio:qwen"),
    ]
    assert orch.failures.get("lmstudio:qwen") is not None  # cooling down now


def test_a_host_that_is_down_gets_no_loading_event(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    events: list[CallEvent] = []
    with pytest.raises(OrchestratorError):
        orch.chat("lmstudio:qwen", HELLO, fallback=False, on_event=events.append)
    assert [e.kind for e in events if e.model_id == "lmstudio:qwen"] == ["attempt_failed"]  # never "Loading…"


def test_a_hosted_model_whose_key_was_rejected_is_not_ready_nor_an_alternative(
        orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    key = next(k for k in orch.keys.list() if k.provider == "openai")
    assert orch.manager.check_status("openai:gpt-4.1-mini").state is ModelState.EXTERNAL_READY
    orch.keys.record_test(key.id, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 20.0))
    status = orch.manager.check_status("openai:gpt-4.1-mini")
    assert status.state is ModelState.EXTERNAL_KEY_REJECTED and not status.state.ready
    assert "rejected at its last test" in status.detail
    assert "openai:gpt-4.1-mini" not in orch.manager.alternatives("lmstudio:qwen")
    orch.keys.record_test(key.id, KeyTestResult(KeyCheck.OK, "accepted", 20.0))
    assert orch.manager.check_status("openai:gpt-4.1-mini").state is ModelState.EXTERNAL_READY


def test_hosted_rate_limit_falls_back_to_next_model(db_url: str, wire: respx.MockRouter) -> None:
    keys = {"openai": FAKE_OPENAI_KEY, "anthropic": "sk-ant-test-0123456789"}
    with Orchestrator.from_settings(settings(db_url, env_keys=keys)) as orch:
        wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
        wire.post(f"{OPENAI}/chat/completions").respond(429, headers={"retry-after": "30"},
                                                         json={"error": {"message": "Rate limit reached", "type": "requests"}})
        wire.post(f"{ANTHROPIC}/v1/messages").respond(json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Claude here"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 2}})
        result = orch.chat("openai:gpt-4.1-mini", HELLO)
        assert result.model_id == "anthropic:claude-haiku-4-5" and result.text == "Claude here"
        entry = orch.failures.get("openai:gpt-4.1-mini")
        assert entry is not None and entry.error_kind == "rate_limit"
        assert 25 <= (entry.until - entry.since).total_seconds() <= 31  # cooldown follows retry-after


def test_all_models_failing_raises_one_error_listing_every_attempt(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(503, text="upstream overloaded")
    with pytest.raises(AllModelsFailedError) as info:
        orch.chat("lmstudio:qwen", HELLO)
    err = info.value
    assert [a.model for a in err.attempts] == ["lmstudio:qwen", "openai:gpt-4.1-mini"]
    assert "lmstudio:qwen" in str(err) and "openai:gpt-4.1-mini" in str(err)
    assert len(metric_rows(orch)) == 2


def test_bad_request_does_not_fall_back(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(
        400, json={"error": {"message": "Unsupported value: 'temperature'", "type": "invalid_request_error",
                             "code": "unsupported_value"}})
    with pytest.raises(BadRequestError):
        orch.chat("openai:gpt-4.1-mini", HELLO, temperature=0.5)
    rows = metric_rows(orch)
    assert [(r.model, r.outcome, r.error_kind) for r in rows] == [("openai:gpt-4.1-mini", "error", "bad_request")]
    assert "Unsupported value" in rows[0].error  # the reason is kept for the models table's "last error"
    assert orch.failures.get("openai:gpt-4.1-mini") is None  # a caller error is not the model's fault


def test_model_in_cooldown_costs_no_network_attempt(orch: Orchestrator, wire: respx.MockRouter) -> None:
    route = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer())
    orch.failures.record("openai:gpt-4.1-mini", "rate_limit", "slow down", 60)
    with pytest.raises(AllModelsFailedError) as info:
        orch.chat("openai:gpt-4.1-mini", HELLO, fallback=False)
    assert route.call_count == 0
    assert info.value.attempts[0].outcome == "skipped"
    orch.manager.reset_failed("openai:gpt-4.1-mini")
    assert orch.chat("openai:gpt-4.1-mini", HELLO).text == "Hello"
    assert route.call_count == 1


def test_fallback_disabled_raises_the_original_error(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(429, json={"error": {"message": "Rate limit reached"}})
    with pytest.raises(RateLimitError):
        orch.chat("openai:gpt-4.1-mini", HELLO, fallback=False)


def test_input_errors_are_raised_before_any_request(orch: Orchestrator, wire: respx.MockRouter) -> None:
    route = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer())
    with pytest.raises(EmptyPromptError):
        orch.chat("openai:gpt-4.1-mini", [{"role": "user", "content": "   "}])
    with pytest.raises(InvalidModelIdError):
        orch.chat("gpt-4.1-mini", HELLO)
    with pytest.raises(UnknownProviderError):
        orch.chat("nosuch:model", HELLO)
    assert route.call_count == 0 and metric_rows(orch) == []


def test_stream_yields_text_and_records_time_to_first_token(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=openai_sse(["Hel", "lo"]))
    stream = orch.stream_chat("openai:gpt-4.1-mini", HELLO)
    assert list(stream) == ["Hel", "lo"]
    assert stream.result is not None and stream.result.text == "Hello"
    assert stream.result.ttft_ms is not None
    row = metric_rows(orch)[0]
    assert row.streamed and row.outcome == "ok" and row.ttft_ms is not None and row.completion_tokens == 2


def test_stream_falls_back_before_first_token(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=openai_sse(["fine"]))
    stream = orch.stream_chat("lmstudio:qwen", HELLO)
    assert "".join(stream) == "fine"
    assert stream.result is not None and stream.result.fell_back


def test_stream_failure_after_first_token_ends_with_clear_error(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=openai_sse(["partial"], done=False))
    pieces: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        for piece in orch.stream_chat("openai:gpt-4.1-mini", HELLO):
            pieces.append(piece)
    assert pieces == ["partial"]
    assert "broke off" in str(info.value)
    row = metric_rows(orch)[0]
    assert row.outcome == "error" and row.error_kind == "bad_response" and row.ttft_ms is not None


def test_local_host_answering_with_another_model_is_noted(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(json=openai_answer("hi", "gemma-3-1b"))
    result = orch.chat("lmstudio:qwen", HELLO)
    assert result.notes and "gemma-3-1b" in result.notes[0]


def test_test_key_persists_result_and_never_shows_the_key(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{OPENAI}/models").respond(401, json={"error": {
        "message": f"Incorrect API key provided: {FAKE_OPENAI_KEY}.", "code": "invalid_api_key"}})
    info = orch.keys.add("openai", "work", FAKE_OPENAI_KEY)
    result = orch.test_key(info.id)
    assert result.status.value == "rejected"
    assert FAKE_OPENAI_KEY not in result.detail
    listed = next(k for k in orch.keys.list() if k.id == info.id)
    assert listed.last_test_status == "rejected" and listed.last_tested_at is not None


def test_stream_stopped_by_the_reader_is_recorded_as_cancelled(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=openai_sse(["one", "two", "three"]))
    pieces = iter(orch.stream_chat("openai:gpt-4.1-mini", HELLO))
    assert next(pieces) == "one"
    pieces.close()  # type: ignore[attr-defined]
    row = metric_rows(orch)[0]
    assert (row.outcome, row.error_kind) == ("error", "cancelled") and row.ttft_ms is not None


def test_a_broken_failure_cache_never_breaks_the_call(
    orch: Orchestrator, wire: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def broken(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(orch.failures, "get", broken)
    monkeypatch.setattr(orch.failures, "record", broken)
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("still here"))
    result = orch.chat("lmstudio:qwen", HELLO)
    assert result.text == "still here" and result.fell_back


# -- refusals and safety blocks -----------------------------------------------------------------------
SORRY = "I'm sorry, but I can't help with that."
REFUSAL = {**openai_answer(), "choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": None, "refusal": SORRY}}]}
CLAUDE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
          "content": [{"type": "text", "text": "Claude answers"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 3, "output_tokens": 2}}
TWO_KEYS = {"openai": FAKE_OPENAI_KEY, "anthropic": "sk-ant-test-0123456789"}


@pytest.fixture
def two_providers(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    with Orchestrator.from_settings(settings(db_url, env_keys=TWO_KEYS)) as o:
        yield o


def test_a_refusal_is_recorded_as_content_filter_and_falls_back_without_a_cooldown(
    two_providers: Orchestrator, wire: respx.MockRouter
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=REFUSAL)
    wire.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE)
    result = two_providers.chat("openai:gpt-4.1-mini", HELLO)
    assert result.text == "Claude answers" and result.model_id == "anthropic:claude-haiku-4-5"
    refused = result.attempts[0]
    assert (refused.outcome, refused.error_kind) == ("error", "content_filter")
    assert refused.error is not None and SORRY in refused.error
    rows = metric_rows(two_providers)
    assert [(r.model, r.outcome, r.error_kind) for r in rows] == [
        ("openai:gpt-4.1-mini", "error", "content_filter"), ("anthropic:claude-haiku-4-5", "ok", None)]
    assert two_providers.failures.get("openai:gpt-4.1-mini") is None  # the model is fine; the prompt was refused


def test_with_fallback_on_content_filter_off_the_refusal_stands(db_url: str, wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(json=REFUSAL)
    claude = wire.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE)
    with Orchestrator.from_settings(settings(db_url, env_keys=TWO_KEYS, fallback_on_content_filter=False)) as orch:
        with pytest.raises(ContentFilteredError, match="refused to answer") as info:
            orch.chat("openai:gpt-4.1-mini", HELLO)
        assert info.value.refusal == SORRY
        assert claude.call_count == 0
        assert [(r.outcome, r.error_kind) for r in metric_rows(orch)] == [("error", "content_filter")]
        assert orch.failures.get("openai:gpt-4.1-mini") is None


def test_a_streamed_refusal_before_any_text_falls_back(two_providers: Orchestrator, wire: respx.MockRouter) -> None:
    refusal = {"model": "gpt-4.1-mini", "choices": [{"index": 0, "delta": {"refusal": SORRY}, "finish_reason": "stop"}]}
    wire.post(f"{OPENAI}/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=f"data: {json.dumps(refusal)}\n\ndata: [DONE]\n\n")
    wire.post(f"{ANTHROPIC}/v1/messages").respond(
        headers={"content-type": "text/event-stream"}, content=claude_stream("Claude streams"))
    stream = two_providers.stream_chat("openai:gpt-4.1-mini", HELLO)
    assert "".join(stream) == "Claude streams"
    assert stream.result is not None and stream.result.fell_back
    assert [(r.outcome, r.error_kind) for r in metric_rows(two_providers)] == [("error", "content_filter"), ("ok", None)]


def test_a_stream_cut_by_a_safety_stop_keeps_its_text_and_says_it_was_cut(
    two_providers: Orchestrator, wire: respx.MockRouter
) -> None:
    cut = openai_sse(["Once", " upon"]).replace(b'"finish_reason": "stop"', b'"finish_reason": "content_filter"')
    wire.post(f"{OPENAI}/chat/completions").respond(headers={"content-type": "text/event-stream"}, content=cut)
    claude = wire.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE)
    pieces: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        pieces.extend(two_providers.stream_chat("openai:gpt-4.1-mini", HELLO))
    assert pieces == ["Once", " upon"]  # the text already shown stays; no other model is spliced in
    assert "was cut by a safety stop" in info.value.message and "content_filter" in info.value.message
    assert isinstance(info.value.cause, ContentFilteredError) and info.value.cause.partial_text == "Once upon"
    assert claude.call_count == 0
    row = metric_rows(two_providers)[0]
    assert (row.outcome, row.error_kind) == ("error", "content_filter") and row.ttft_ms is not None


def claude_stream(text: str) -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {"model": "claude-haiku-4-5",
                                                                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": text}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def test_a_sleeping_llamacpp_model_gets_the_prompt_without_a_load_step(db_url: str) -> None:
    # llama-server wakes a sleeping model on the request itself; a load request would answer "already running".
    with respx.mock(assert_all_called=False) as wire, Orchestrator.from_settings(
        settings(db_url, local_hosts=("llamacpp",))
    ) as orch:
        wire.get(f"{LLAMACPP}/models").respond(json={"data": [{"id": "tiny", "status": {"value": "sleeping"}}]})
        load = wire.post(f"{LLAMACPP}/models/load").respond(json={"success": True})
        wire.post(f"{LLAMACPP}/v1/chat/completions").respond(json=openai_answer("awake", model="tiny"))
        events: list[CallEvent] = []
        result = orch.chat("llamacpp:tiny", HELLO, fallback=False, on_event=events.append)
    assert result.text == "awake" and load.call_count == 0
    assert [e.kind for e in events] == ["answering"]
