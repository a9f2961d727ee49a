"""Chat page: streamed answers with their caption, check-and-load with progress, fallback notices, compare."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow
from orchestrator_core.types import KeyCheck, KeyTestResult
from tests.console.apptools import lmstudio_down, shown, start, texts
from tests.helpers import ANTHROPIC, LMSTUDIO, OPENAI, lmstudio_models, openai_sse, sse_response

SSE = {"content-type": "text/event-stream"}
GPT = "openai:gpt-4.1-mini"


def chat_page() -> AppTest:
    return start("app_pages/chat.py")


def send(at: AppTest, prompt: str) -> AppTest:
    return at.chat_input(key="chat_prompt").set_value(prompt).run()


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_chat_streams_the_answer_with_its_model_caption(wire: respx.MockRouter, with_openai_key: str) -> None:
    lmstudio_down(wire)
    route = wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["Hel", "lo!"]))
    at = chat_page()
    assert at.selectbox(key="chat_model").value == GPT  # the first ready model is preselected
    at.text_area(key="chat_system").set_value("Be brief.")
    at.slider(key="chat_temperature").set_value(0.2)
    send(at, "Say hello")
    assert not at.exception
    assert "Hello!" in texts(at)
    caption = next(c for c in captions(at) if c.startswith("answered by"))
    assert caption.startswith(f"answered by {GPT} · ") and "first token" in caption and "tokens 5 in / 2 out" in caption
    body = json.loads(route.calls.last.request.content)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert body["stream"] is True and body["temperature"] == 0.2 and body["max_completion_tokens"] == 1024


def test_conversation_survives_reruns_goes_back_to_the_model_and_can_be_cleared(
        wire: respx.MockRouter, with_openai_key: str) -> None:
    lmstudio_down(wire)
    route = wire.post(f"{OPENAI}/chat/completions").mock(side_effect=[
        httpx.Response(200, headers=SSE, content=openai_sse(["First answer"])),
        httpx.Response(200, headers=SSE, content=openai_sse(["Second answer"])),
    ])
    at = send(chat_page(), "one")
    at.run()
    assert "First answer" in texts(at) and len(at.chat_message) == 2
    send(at, "two")
    sent = json.loads(route.calls.last.request.content)["messages"]
    assert [m["content"] for m in sent] == ["one", "First answer", "two"]
    at.button(key="chat_clear").click().run()
    assert not at.exception and len(at.chat_message) == 0


def test_a_local_model_is_loaded_with_visible_progress_before_the_prompt_is_sent(wire: respx.MockRouter) -> None:
    order: list[str] = []

    def models(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=lmstudio_models({"qwen": "load" in order}))

    def load(request: httpx.Request) -> httpx.Response:
        order.append("load")
        return httpx.Response(200, json={"type": "llm", "instance_id": "qwen", "status": "loaded"})

    def chat(request: httpx.Request) -> httpx.Response:
        order.append("chat")
        return httpx.Response(200, headers=SSE, content=openai_sse(["local answer"], model="qwen"))

    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=models)
    wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(side_effect=load)
    wire.post(f"{LMSTUDIO}/v1/chat/completions").mock(side_effect=chat)
    at = chat_page()
    at.selectbox(key="chat_model").set_value("lmstudio:qwen")
    send(at, "hi")
    assert not at.exception
    assert order == ["load", "chat"]  # the prompt waited for the load
    status = at.status[0]
    assert status.label.startswith("lmstudio:qwen is loaded (") and status.state == "complete"
    assert "local answer" in texts(at)
    assert any(c.startswith("answered by lmstudio:qwen") for c in captions(at))


def test_automatic_fallback_says_which_model_answered_instead(wire: respx.MockRouter, with_openai_key: str) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(503, text="model crashed")
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["from the cloud"]))
    at = chat_page()
    at.selectbox(key="chat_model").set_value("lmstudio:qwen")
    send(at, "hi")
    assert not at.exception
    assert "from the cloud" in texts(at)
    notice = next(t for t in texts(at) if "answered instead" in t)
    assert notice.startswith("lmstudio:qwen could not answer (lmstudio:qwen: ") and "503" in notice
    assert notice.endswith(f"{GPT} answered instead.")
    assert any(c.endswith(f"fallback lmstudio:qwen → {GPT}") for c in captions(at))


def test_a_failed_load_shows_in_the_status_and_falls_back(wire: respx.MockRouter, with_openai_key: str) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": False}))
    wire.post(f"{LMSTUDIO}/api/v1/models/load").respond(500, json={"error": {"message": "out of memory"}})
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["fallback answer"]))
    at = chat_page()
    at.selectbox(key="chat_model").set_value("lmstudio:qwen")
    send(at, "hi")
    assert not at.exception
    assert at.status[0].state == "error" and "lmstudio:qwen could not be used" in at.status[0].label
    assert "fallback answer" in texts(at)
    assert any("could not answer" in t and "answered instead" in t for t in texts(at))


def test_without_automatic_fallback_the_failure_offers_a_one_click_switch(
        wire: respx.MockRouter, with_openai_key: str) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    local = wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(503, text="model crashed")
    cloud = wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["switched answer"]))
    at = chat_page()
    at.selectbox(key="chat_model").set_value("lmstudio:qwen")
    at.toggle(key="chat_auto_fallback").set_value(False)
    send(at, "hi there")
    assert not at.exception
    assert local.call_count == 1 and cloud.call_count == 0
    notice = next(t for t in texts(at) if "Suggested instead" in t)
    assert notice.startswith("lmstudio:qwen failed:") and notice.endswith(f"Suggested instead: {GPT}.")
    switch = next(b for b in at.button if b.label == f"Switch to {GPT} and retry")
    switch.click().run()
    assert not at.exception
    assert at.selectbox(key="chat_model").value == GPT
    assert "switched answer" in texts(at)
    assert json.loads(cloud.calls.last.request.content)["messages"] == [{"role": "user", "content": "hi there"}]
    assert any(c.startswith(f"answered by {GPT}") for c in captions(at))


def test_compare_shows_each_model_side_by_side(wire: respx.MockRouter, with_openai_key: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    lmstudio_down(wire)
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["GPT says ", "hi"]))
    wire.post(f"{ANTHROPIC}/v1/messages").mock(return_value=sse_response(
        {"type": "message_start", "message": {"id": "m1", "model": "claude-haiku-4-5",
                                              "usage": {"input_tokens": 4, "output_tokens": 0}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Claude says hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"}))
    at = chat_page()
    at.multiselect(key="compare_models").set_value([GPT, "anthropic:claude-haiku-4-5"])
    at.text_area(key="compare_prompt").set_value("Greet me")  # in a form: sent with the click, one run
    at.button(key="compare_run").click().run()
    assert not at.exception, [w.value for w in at.warning]
    shown = texts(at)
    assert "GPT says hi" in shown and "Claude says hi" in shown
    assert f"**{GPT}**" in shown and "**anthropic:claude-haiku-4-5**" in shown
    assert any(c.startswith("answered by anthropic:claude-haiku-4-5") and "tokens 4 in / 4 out" in c
               for c in captions(at))


def test_when_every_model_fails_the_conversation_says_why_without_an_exception(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    route = wire.post(f"{OPENAI}/chat/completions").respond(json={})
    at = send(chat_page(), "anyone there?")  # no key anywhere, no local host
    assert not at.exception
    notice = next(shown(t) for t in texts(at) if t.startswith("No model could answer"))
    assert "No OpenAI key: add one on the API Keys page or set OPENAI_API_KEY" in notice
    assert notice.endswith("No other model is usable right now; see the Models page.")
    assert route.call_count == 0
    assert not [b for b in at.button if b.label.startswith("Switch to")]


# -- refusals and safety blocks -------------------------------------------------------------------
SORRY = "I'm sorry, but I can't help with that."


def refusal_sse() -> bytes:
    chunk = {"model": "gpt-4.1-mini", "choices": [{"index": 0, "delta": {"refusal": SORRY}, "finish_reason": "stop"}]}
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


def assistant_bubbles(at: AppTest) -> list[str]:
    """The text of each assistant bubble on the page ("" for one with nothing in it)."""
    return [" ".join(str(m.value) for m in bubble.markdown) for bubble in at.chat_message if bubble.name == "assistant"]


def test_a_refusal_is_a_notice_with_the_providers_reason_not_an_empty_bubble(
        wire: respx.MockRouter, with_openai_key: str) -> None:
    lmstudio_down(wire)
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=refusal_sse())
    at = chat_page()
    at.toggle(key="chat_auto_fallback").set_value(False)
    send(at, "something it refuses")
    assert not at.exception
    assert assistant_bubbles(at) == []
    notice = next(m for m in at.chat_message if m.name == "system")
    assert notice.avatar == "🛡️"
    assert notice.markdown[0].value.startswith(f'{GPT} refused to answer: "{SORRY}" (delta.refusal).')
    at.run()  # and so it stays on the next rerun
    assert not at.exception and assistant_bubbles(at) == []


def test_a_refusal_that_fell_back_says_why_in_the_fallback_notice(
        wire: respx.MockRouter, with_openai_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    lmstudio_down(wire)
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=refusal_sse())
    claude = [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "Claude answers"}}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
              ("message_stop", {"type": "message_stop"})]
    wire.post(f"{ANTHROPIC}/v1/messages").respond(
        headers=SSE, content="".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in claude).encode())
    at = send(chat_page(), "something one model refuses")
    assert not at.exception
    assert assistant_bubbles(at) == ["Claude answers"]
    notice = next(m for m in at.chat_message if m.name == "system")
    assert notice.avatar == "🛡️"
    text = notice.markdown[0].value
    assert text.startswith(f"{GPT} declined ({GPT}: {GPT} refused to answer: \"{SORRY}\" (delta.refusal).")
    assert text.endswith("anthropic:claude-haiku-4-5 answered instead.")


def test_a_stream_cut_by_a_safety_stop_keeps_its_text_and_says_it_was_cut(
        wire: respx.MockRouter, with_openai_key: str) -> None:
    lmstudio_down(wire)
    cut = openai_sse(["Once", " upon"]).replace(b'"finish_reason": "stop"', b'"finish_reason": "content_filter"')
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=cut)
    at = send(chat_page(), "tell me a story")
    assert not at.exception
    assert f"{GPT} · cut by a safety stop" in captions(at)
    notice = next(m for m in at.chat_message if m.name == "system")
    assert notice.avatar == "🛡️"
    assert shown(notice.markdown[0].value).startswith(
        f"The answer from {GPT} was cut by a safety stop after it started: {GPT} stopped the answer at its content "
        "filter after 9 characters (finish_reason content_filter).")
    at.run()
    assert assistant_bubbles(at) == ["Once upon"]
    assert f"{GPT} · cut by a safety stop" in captions(at)


def test_model_picker_entries_are_plain_ids_and_the_status_is_a_caption(
        wire: respx.MockRouter, with_openai_key: str) -> None:
    # A status inside an entry's label breaks the browser's choice when the status changes (see e2e tests).
    lmstudio_down(wire)
    at = chat_page()
    picker = at.selectbox(key="chat_model")
    assert GPT in picker.options and all(option.count(":") == 1 and " " not in option for option in picker.options)
    assert any(c.startswith("🌐 hosted, ready") for c in captions(at))


def test_a_new_chat_starts_on_the_last_used_model(wire: respx.MockRouter, with_openai_key: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    monkeypatch.setenv("MISTRAL_API_KEY", "mistral-test-key-0123456789")
    orch = core()
    orch.metrics.record(MetricRow(model="mistral:mistral-small-latest", outcome="ok", latency_ms=80, request_id="r1",
                                  requested_model="mistral:mistral-small-latest", ts=time.time() - 5))
    orch.metrics.flush()
    assert chat_page().selectbox(key="chat_model").value == "mistral:mistral-small-latest"


def test_a_new_chat_prefers_a_loaded_local_model_to_a_hosted_one(wire: respx.MockRouter,
                                                                 with_openai_key: str) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True, "llama": False}))
    at = chat_page()
    assert at.selectbox(key="chat_model").value == "lmstudio:qwen"
    assert set(at.selectbox(key="chat_model").options[:2]) == {"lmstudio:qwen", "lmstudio:llama"}  # local first
    assert any("context 4,096 of 32,768" in shown(c) for c in captions(at))  # what the host reports


def test_a_rejected_key_makes_no_model_ready_and_is_not_the_default(wire: respx.MockRouter,
                                                                    core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    keys = core().keys
    bad = keys.add("openai", "work", "sk-rejected-key-0123456789")
    keys.record_test(bad.id, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 20.0))
    good = keys.add("mistral", "ok", "mistral-good-key-0123456789")
    keys.record_test(good.id, KeyTestResult(KeyCheck.OK, "accepted", 20.0))
    at = chat_page()
    assert at.selectbox(key="chat_model").value == "mistral:mistral-small-latest"  # not the rejected key's model
    at.selectbox(key="chat_model").set_value(GPT).run()
    assert any(c.startswith("🚫 key rejected") for c in captions(at))
    assert "**1** of" in " ".join(str(m.value) for m in at.sidebar.markdown)  # only the Mistral model is ready


def test_asking_one_model_in_cooldown_says_until_when_and_why_and_offers_a_reset(
        wire: respx.MockRouter, with_openai_key: str, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["back ", "again"]))
    core().failures.record(GPT, "rate_limit", "slow down", 60)
    at = chat_page()
    at.selectbox(key="chat_model").set_value(GPT)
    at.toggle(key="chat_auto_fallback").set_value(False)
    send(at, "Hello?")
    assert not at.exception
    notice = next(shown(t) for t in texts(at) if "cooling down until" in shown(t))
    assert notice.startswith(f"{GPT} is cooling down until ") and "after rate_limit: slow down" in notice
    assert not any("No model could answer" in shown(t) for t in texts(at))
    reset = next(b for b in at.button if b.key and b.key.startswith("reset_"))
    reset.click().run()
    assert not at.exception and "back again" in texts(at)



def test_compare_streams_each_column_with_its_first_token_time_and_offers_only_models_that_can_answer(
        wire: respx.MockRouter, with_openai_key: str, monkeypatch: pytest.MonkeyPatch,
        core: Callable[[], Orchestrator]) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "mistral-test-key-0123456789")
    lmstudio_down(wire)
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["streamed ", "to GPT"]))
    core().failures.record("mistral:mistral-small-latest", "rate_limit", "slow down", 60)
    at = chat_page()
    offered = at.multiselect(key="compare_models").options
    assert GPT in offered and "anthropic:claude-haiku-4-5" not in offered  # no key: Select all must not pick it
    assert any("anthropic:claude-haiku-4-5 (no key)" in shown(c) for c in captions(at))
    at.multiselect(key="compare_models").set_value([GPT, "mistral:mistral-small-latest"])
    at.text_area(key="compare_prompt").set_value("Greet me")
    at.button(key="compare_run").click().run()
    assert not at.exception
    assert "streamed to GPT" in texts(at)
    assert any(c.startswith(f"answered by {GPT}") and "first token" in c for c in captions(at))
    error = shown(at.error[0].value)
    assert error.startswith("In cooldown until ") and error.endswith("reset it on the Models page.")
    assert "\n" not in error and "Every model tried failed" not in error
