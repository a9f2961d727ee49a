"""ProviderFactory: what every outgoing request carries (User-Agent) and the provider versions settings choose."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import respx

import orchestrator_core
from orchestrator_core.clients import ProviderFactory, shared_ssl_context, tls_context_for
from orchestrator_core.config import Settings
from orchestrator_core.types import ChatParams, KeyCheck, Message
from tests.helpers import ANTHROPIC, GOOGLE, LMSTUDIO, MISTRAL, OPENAI, openai_answer

HELLO: list[Message] = [{"role": "user", "content": "Hi"}]
KEYS = {"openai": "sk-test-0123456789", "anthropic": "sk-ant-test-0123456789", "google": "AIzaTest0123456789",
        "mistral": "mistral-test-0123456789"}
CLAUDE = {"type": "message", "role": "assistant", "model": "claude-haiku-4-5", "stop_reason": "end_turn",
          "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 1, "output_tokens": 1}}
GEMINI = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}


@pytest.fixture
def factory() -> Iterator[ProviderFactory]:
    made = ProviderFactory(Settings(env_keys=KEYS))
    yield made
    made.close()


def test_every_provider_request_says_orchestrator_core_and_its_version(
    factory: ProviderFactory, respx_mock: respx.MockRouter
) -> None:
    routes = [
        respx_mock.post(f"{OPENAI}/chat/completions").respond(json=openai_answer()),
        respx_mock.post(f"{MISTRAL}/chat/completions").respond(json=openai_answer()),
        respx_mock.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE),
        respx_mock.post(f"{GOOGLE}/v1/models/gemini-2.5-flash:generateContent").respond(json=GEMINI),
        respx_mock.get(f"{LMSTUDIO}/v1/models").respond(json={"data": []}),
    ]
    factory.get("openai").chat("gpt-4.1-mini", HELLO, ChatParams())
    factory.get("mistral").chat("mistral-small", HELLO, ChatParams())
    factory.get("anthropic").chat("claude-haiku-4-5", HELLO, ChatParams())
    factory.get("google", "status").chat("gemini-2.5-flash", HELLO, ChatParams())
    factory.get("lmstudio", "status").list_models()
    expected = f"orchestrator-core/{orchestrator_core.__version__}"
    assert [route.calls.last.request.headers["user-agent"] for route in routes] == [expected] * len(routes)
    assert expected == orchestrator_core.USER_AGENT


def test_default_versions_are_the_current_sdks(factory: ProviderFactory, respx_mock: respx.MockRouter) -> None:
    claude = respx_mock.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE)
    gemini = respx_mock.post(f"{GOOGLE}/v1/models/gemini-2.5-flash:generateContent").respond(json=GEMINI)
    factory.get("anthropic").chat("claude-haiku-4-5", HELLO, ChatParams())
    factory.get("google").chat("gemini-2.5-flash", HELLO, ChatParams())
    assert claude.calls.last.request.headers["anthropic-version"] == "2026-10-21"
    assert claude.calls.last.request.headers["x-api-key"] == KEYS["anthropic"]
    assert gemini.called  # /v1, as google-genai 3.x calls by default
    assert_versions_can_be_pinned_from_the_environment(respx_mock)


def assert_versions_can_be_pinned_from_the_environment(respx_mock: respx.MockRouter) -> None:
    env = {"ANTHROPIC_VERSION": "2023-06-01", "GEMINI_API_VERSION": "v1beta", "ANTHROPIC_API_KEY": "sk-ant-0123456",
           "GOOGLE_API_KEY": "AIzaTest0123456789"}
    claude = respx_mock.post(f"{ANTHROPIC}/v1/messages").respond(json=CLAUDE)
    gemini = respx_mock.post(f"{GOOGLE}/v1beta/models/gemini-2.5-flash:generateContent").respond(json=GEMINI)
    factory = ProviderFactory(Settings.from_env(env))
    try:
        factory.get("anthropic").chat("claude-haiku-4-5", HELLO, ChatParams())
        factory.get("google").chat("gemini-2.5-flash", HELLO, ChatParams())
    finally:
        factory.close()
    assert claude.calls.last.request.headers["anthropic-version"] == "2023-06-01"
    assert gemini.called


def test_settings_read_fallback_on_content_filter_and_reject_an_unknown_gemini_version() -> None:
    from orchestrator_core.errors import ConfigurationError

    assert Settings.from_env({}).fallback_on_content_filter is True
    assert Settings.from_env({"FALLBACK_ON_CONTENT_FILTER": "false"}).fallback_on_content_filter is False
    with pytest.raises(ConfigurationError, match="GEMINI_API_VERSION='v2' is not one of v1, v1beta"):
        Settings.from_env({"GEMINI_API_VERSION": "v2"})
    assert Settings.from_env({}).gemini_api_version is None  # the provider's default (v1) applies



@pytest.mark.parametrize(("provider", "path"), [("openai", f"{OPENAI}/models"), ("anthropic", f"{ANTHROPIC}/v1/models"),
                                                ("google", f"{GOOGLE}/v1/models"), ("mistral", f"{MISTRAL}/models")])
def test_test_key_on_a_200_that_is_not_a_model_list_could_not_verify(
    factory: ProviderFactory, respx_mock: respx.MockRouter, provider: str, path: str
) -> None:
    # A proxy's or another API's 200: no "data" (OpenAI-style, Anthropic) or "models" (Gemini) array.
    respx_mock.get(path).respond(json={"object": "list", "items": [{"id": "m", "name": "models/m"}]})
    result = factory.get(provider, "status").test_key()
    assert result.status is KeyCheck.UNVERIFIED
    assert "array" in result.detail and "accepted" not in result.detail


def test_a_plain_http_host_gets_a_tls_context_without_the_ca_bundle_that_still_verifies() -> None:
    plain = tls_context_for("http://127.0.0.1:1234")

    assert plain.cert_store_stats()["x509_ca"] == 0  # the bundle costs a CLI start ~35 ms to load
    assert plain.verify_mode is ssl.CERT_REQUIRED and plain.check_hostname  # an https request fails closed
    assert tls_context_for("https://api.openai.com/v1") is shared_ssl_context()
    assert shared_ssl_context().cert_store_stats()["x509_ca"] > 0
