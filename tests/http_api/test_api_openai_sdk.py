"""The official openai SDK against the gateway on a real socket: models, chat, stream, a cold local model,
fallback from a dead model, a 429 upstream, everything failing; our errors become the SDK's own classes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from orchestrator_core.orchestrator import Orchestrator
from tests.faults.fault_server import FaultServer
from tests.http_api.conftest import CUSTOM_CHAT, LMSTUDIO_CHAT, LMSTUDIO_LOAD, LiveServer, Served, Upstream

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def sdk(live: LiveServer, chat_token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=chat_token, max_retries=0, timeout=10)


def test_models_list_has_every_active_model_with_its_state(sdk: openai.OpenAI, upstream: Upstream) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert set(models) == {"custom:healthy", "custom:dead", "custom:limited", "lmstudio:qwen"}
    assert models["lmstudio:qwen"].state == "not_loaded" and models["lmstudio:qwen"].ready is False  # type: ignore[attr-defined]
    assert models["custom:healthy"].owned_by == "custom"


def test_models_list_ready_only_leaves_out_models_that_cannot_answer_now(live: LiveServer, chat_token: str) -> None:
    answer = httpx.get(f"{live.url}/v1/models", params={"ready": "true"},
                       headers={"authorization": f"Bearer {chat_token}"})
    assert {m["id"] for m in answer.json()["data"]} == {"custom:healthy", "custom:dead", "custom:limited"}


def test_chat_answers_with_the_model_and_the_orchestrator_headers(sdk: openai.OpenAI, fault_server: FaultServer) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="custom:healthy", messages=HELLO,  # type: ignore[arg-type]
                                                        temperature=0.2, max_completion_tokens=20, user="me")
    completion = raw.parse()
    assert completion.choices[0].message.content == "fine"
    assert completion.model == "custom:healthy" and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 5
    assert raw.headers["x-orchestrator-model"] == "custom:healthy"
    assert raw.headers["x-orchestrator-attempts"] == "1"
    assert "x-orchestrator-fallback-from" not in raw.headers
    assert completion.id == f"chatcmpl-{raw.headers['x-request-id']}"
    sent = fault_server.requests_to(CUSTOM_CHAT)[-1].json()
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 20) and "user" not in sent


def test_stream_yields_the_pieces_then_usage_when_asked(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="custom:healthy", messages=HELLO, stream=True,  # type: ignore[arg-type]
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "fine"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert {c.model for c in chunks} == {"custom:healthy"}


def test_a_cold_local_model_is_loaded_on_the_way(sdk: openai.OpenAI, upstream: Upstream,
                                                 fault_server: FaultServer) -> None:
    upstream.load_s = 0.3
    completion = sdk.chat.completions.create(model="lmstudio:qwen", messages=HELLO)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "fine" and completion.model == "lmstudio:qwen"
    paths = [s.path for s in fault_server.seen]
    assert LMSTUDIO_LOAD in paths and paths.index(LMSTUDIO_LOAD) < paths.index(LMSTUDIO_CHAT)
    assert len(fault_server.requests_to(LMSTUDIO_CHAT)) == 1  # never sent to the model before it was loaded


def test_a_cold_local_model_streams_after_loading(serve: Callable[..., Served], upstream: Upstream) -> None:
    server, _, token = serve(stream_keepalive_s=0.2)
    upstream.load_s = 0.5  # longer than STREAM_KEEPALIVE_S: the stream starts with keep-alive comments
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model="lmstudio:qwen", messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fine"
    assert {c.model for c in chunks} == {"lmstudio:qwen"}


def test_a_dead_model_falls_back_and_the_answer_names_who_answered(sdk: openai.OpenAI, orch: Orchestrator) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="custom:dead", messages=HELLO)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.model == "custom:healthy" and completion.choices[0].message.content == "fine"
    assert raw.headers["x-orchestrator-fallback-from"] == "custom:dead"
    assert raw.headers["x-orchestrator-model"] == "custom:healthy"
    assert raw.headers["x-orchestrator-attempts"] == "2"
    assert orch.failures.get("custom:dead") is not None  # cooled down, as on the chat page


def test_a_dead_model_falls_back_in_a_stream_too(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="custom:dead", messages=HELLO, stream=True)  # type: ignore[arg-type]
    chunks = list(raw.parse())
    assert raw.headers["x-orchestrator-fallback-from"] == "custom:dead"
    assert raw.headers["x-orchestrator-model"] == "custom:healthy" and raw.headers["x-orchestrator-attempts"] == "2"
    assert {c.model for c in chunks} == {"custom:healthy"}


def test_a_429_upstream_without_fallback_is_the_sdks_rate_limit_error_with_retry_after(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="custom:limited", messages=HELLO,  # type: ignore[arg-type]
                                    extra_headers={"x-orchestrator-fallback": "off"})
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit" and "rate limiting" in caught.value.message


def test_a_429_upstream_in_a_stream_before_any_token_is_an_http_429(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="custom:limited", messages=HELLO, stream=True,  # type: ignore[arg-type]
                                    extra_headers={"x-orchestrator-fallback": "off"})


def test_everything_failing_is_one_503_listing_each_attempt(sdk: openai.OpenAI, orch: Orchestrator) -> None:
    orch.registry.set_active("custom:healthy", False)
    orch.registry.set_active("lmstudio:qwen", False)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="custom:dead", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "all_failed"
    assert [a["model"] for a in body["attempts"]][:2] == ["custom:dead", "custom:limited"]
    assert "custom:dead: unavailable" in body["message"] and "custom:limited: rate_limit" in body["message"]


def test_a_stream_that_breaks_after_the_first_token_ends_with_an_error_event(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="custom:breaks", messages=HELLO, stream=True)  # type: ignore[arg-type]
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["half"]
    assert "broke off" in caught.value.message


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"seed": 7}, "seed"),
])
def test_a_parameter_the_core_cannot_honour_is_a_400_naming_it(sdk: openai.OpenAI, extra: dict[str, object],
                                                               param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="custom:healthy", messages=HELLO, extra_body=extra)  # type: ignore[arg-type]
    assert caught.value.param == param and param in caught.value.message


def test_an_image_part_is_a_400_naming_the_part(sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is it"},
                                             {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="custom:healthy", messages=messages)  # type: ignore[arg-type]
    assert caught.value.param == "messages[0].content[1].type"


def test_text_parts_and_developer_messages_are_passed_as_text(sdk: openai.OpenAI, fault_server: FaultServer) -> None:
    messages = [{"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]
    sdk.chat.completions.create(model="custom:healthy", messages=messages, n=1)  # type: ignore[arg-type]
    sent = fault_server.requests_to(CUSTOM_CHAT)[-1].json()["messages"]
    assert sent == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one\ntwo"}]


def test_an_unknown_model_prefix_is_the_sdks_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nosuch:model", messages=HELLO)  # type: ignore[arg-type]


def test_a_wrong_token_is_the_sdks_authentication_error_saying_how_to_get_one(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="sk-not-a-gateway-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert "tokens create" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_id_outside_printable_ascii_answers_with_percent_encoded_headers(
        chat_client: httpx.Client, stream: bool) -> None:
    # A host's model named in Cyrillic (or a client's id with a control character): latin-1 cannot encode
    # the first and h11 refuses the second, so the answer the model gave was a 500.
    for model, encoded in (("custom:модель", "custom:%D0%BC%D0%BE%D0%B4%D0%B5%D0%BB%D1%8C"),
                           ("custom:a\x01b", "custom:a%01b")):
        answer = chat_client.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "stream": stream})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-orchestrator-model"] == encoded
        if stream:
            assert '"content": "fi"' in answer.text and answer.text.rstrip().endswith("data: [DONE]")
        else:
            assert answer.json()["choices"][0]["message"]["content"] == "fine"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_max_tokens_past_int32_is_a_400_naming_it_and_never_reaches_the_host(
        chat_client: httpx.Client, fault_server: FaultServer, field: str) -> None:
    # A host parsing it as int32 answers 500, which would cool the model down for every caller.
    answer = chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO,
                                                            field: 2**31})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == field
    assert not [seen for seen in fault_server.seen if seen.path.endswith("/chat/completions")]
    assert chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO,
                                                          field: 2**31 - 1}).status_code == 200


@pytest.mark.parametrize("stop", [[f"s{i}" for i in range(17)], ["x" * 1001]])
def test_too_many_or_too_long_stop_sequences_are_a_400_naming_stop_and_never_reach_the_host(
        chat_client: httpx.Client, fault_server: FaultServer, stop: list[str]) -> None:
    answer = chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO,
                                                            "stop": stop})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "stop", answer.text
    assert "at most 16 sequences" in answer.json()["error"]["message"]
    assert not [seen for seen in fault_server.seen if seen.path.endswith("/chat/completions")]
    assert chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO,
                                                          "stop": stop[:16] if len(stop) > 1 else ["x" * 1000]}
                            ).status_code == 200
