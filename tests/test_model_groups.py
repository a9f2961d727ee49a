"""Model groups: a name usable wherever a model id is; the call tries the members in order, then falls back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.errors import InvalidConnectionError, ProviderUnavailableError, UnknownConnectionError
from orchestrator_core.orchestrator import Orchestrator
from tests.helpers import FAKE_OPENAI_KEY, LMSTUDIO, OPENAI, lmstudio_models, openai_answer, other_hosts_down, settings

HELLO = [{"role": "user", "content": "hello"}]
MISTRAL = "https://api.mistral.ai/v1"


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        other_hosts_down(router)
        yield router


@pytest.fixture
def orch(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    keys = {"openai": FAKE_OPENAI_KEY, "mistral": "mistral-test-key-0123456789"}
    with Orchestrator.from_settings(settings(db_url, env_keys=keys, local_hosts=("lmstudio",))) as o:
        yield o


def test_a_group_tries_its_members_in_order_with_check_and_load_and_names_member_and_group(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    loaded: list[str] = []
    wire.get(f"{LMSTUDIO}/api/v1/models").mock(
        side_effect=lambda _r: httpx.Response(200, json=lmstudio_models({"qwen": bool(loaded)})))
    load = wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(side_effect=lambda _r: loaded.append("qwen") or
                                                          httpx.Response(200, json={"status": "loaded"}))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(503, json={"error": {"message": "busy"}})
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("from openai"))
    orch.set_group("default", ["lmstudio:qwen", "openai:gpt-4.1-mini", "mistral:mistral-small-latest"])

    result = orch.chat("default", HELLO, fallback=False)  # members are tried even with fallback off

    assert load.call_count == 1  # the local member was loaded before its prompt
    assert (result.model_id, result.group, result.text) == ("openai:gpt-4.1-mini", "default", "from openai")
    assert result.requested_model == "lmstudio:qwen" and result.fell_back
    assert [(a.model, a.outcome) for a in result.attempts] == [("lmstudio:qwen", "error"),
                                                               ("openai:gpt-4.1-mini", "ok")]


def test_after_the_members_the_usual_fallback_runs_when_it_is_on(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({}))
    wire.post(f"{OPENAI}/chat/completions").respond(503, json={"error": {"message": "down"}})
    wire.post(f"{MISTRAL}/chat/completions").respond(json=openai_answer("mistral here", "mistral-small-latest"))
    orch.set_group("fast", ["openai:gpt-4.1-mini"])

    result = orch.chat("fast", HELLO)
    with pytest.raises(ProviderUnavailableError):  # fallback off, one member: its own error
        orch.reset_cooldowns()
        orch.chat("fast", HELLO, fallback=False)

    assert (result.model_id, result.group) == ("mistral:mistral-small-latest", "fast")


def test_groups_are_listed_replaced_and_removed(orch: Orchestrator) -> None:
    orch.set_group("default", ["openai:gpt-4.1-mini"])
    orch.set_group("default", ["mistral:mistral-small-latest", "openai:gpt-4.1-mini"])
    orch.set_group("fast", ["openai:gpt-4.1-mini"])
    listed = {g.name: g.members for g in orch.groups()}
    orch.remove_group("fast")

    assert listed == {"default": ("mistral:mistral-small-latest", "openai:gpt-4.1-mini"),
                      "fast": ("openai:gpt-4.1-mini",)}
    assert [g.name for g in orch.groups()] == ["default"]


def test_a_bad_group_is_refused_with_what_to_fix(orch: Orchestrator) -> None:
    with pytest.raises(InvalidConnectionError, match="no ':'"):
        orch.set_group("a:b", ["openai:gpt-4.1-mini"])
    with pytest.raises(InvalidConnectionError, match="at least one model id"):
        orch.set_group("empty", [])
    with pytest.raises(UnknownConnectionError, match="groq"):
        orch.set_group("default", ["groq:llama-3.3-70b"])
    with pytest.raises(UnknownConnectionError):
        orch.remove_group("never-made")
    assert orch.groups() == []
