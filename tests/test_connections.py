"""Connections side by side: two OpenAI-compatible services and two llama-servers, on loopback stand-ins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from orchestrator_core.config import Settings
from orchestrator_core.connections import KeyMode
from orchestrator_core.errors import (
    AllModelsFailedError,
    ConfigurationError,
    ConnectionDisabledError,
    InvalidConnectionError,
    InvalidKeyInputError,
    UnknownConnectionError,
)
from orchestrator_core.orchestrator import CallEvent, Orchestrator
from orchestrator_core.store import connections as store_module
from orchestrator_core.store.generations import generations_for
from orchestrator_core.store.tables import ConnectionRow
from orchestrator_core.types import ModelState
from tests.helpers import LMSTUDIO, lmstudio_models, openai_answer, settings
from tests.standins import StandIn, llamacpp_standin, openai_standin

HELLO = [{"role": "user", "content": "hello"}]
GROQ_KEY = "gsk-groq-test-0123456789abcdef"
DEEP_KEY = "sk-deep-test-0123456789abcdef"


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as o:  # no seeded host is probed
        yield o


@pytest.fixture
def services() -> Iterator[tuple[StandIn, StandIn]]:
    with openai_standin(key=GROQ_KEY, models=("llama-3.3-70b",), word_delay_s=0) as groq, \
            openai_standin(key=DEEP_KEY, models=("deepseek-chat",), word_delay_s=0) as deep:
        yield groq, deep


@pytest.fixture
def boxes() -> Iterator[tuple[StandIn, StandIn]]:
    with llamacpp_standin(models=("qwen.gguf",)) as a, llamacpp_standin(models=("gemma.gguf",)) as b:
        yield a, b


def _add_all(orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]) -> None:
    groq, deep = services
    orch.add_connection("groq", "openai-compatible", base_url=groq.base_url, key=GROQ_KEY)
    orch.add_connection("deepseek", "openai-compatible", base_url=deep.base_url, key=DEEP_KEY)
    orch.add_connection("box-a", "llamacpp", base_url=boxes[0].base_url)
    orch.add_connection("box-b", "llamacpp", base_url=boxes[1].base_url)
    orch.add_model("groq:llama-3.3-70b", priority=10)
    orch.add_model("deepseek:deepseek-chat", priority=20)


def test_two_compatible_services_and_two_llama_servers_answer_side_by_side(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)

    hosts = {h.provider: h for h in orch.hosts()}
    answers = {m: orch.chat(m, HELLO, fallback=False).model_id
               for m in ("groq:llama-3.3-70b", "deepseek:deepseek-chat", "box-a:qwen.gguf", "box-b:gemma.gguf")}

    assert {n: (h.reachable, h.models, h.loaded, h.kind) for n, h in hosts.items()} == {
        "box-a": (True, 1, 1, "llamacpp"), "box-b": (True, 1, 1, "llamacpp")}
    assert hosts["box-a"].display_name == "box-a (llama.cpp (llama-server))"
    assert [p for p in boxes[0].seen if p[0] == "GET"] == [("GET", "/models")]  # one probe request per host
    assert [p for p in boxes[1].seen if p[0] == "GET"] == [("GET", "/models")]
    assert answers == {m: m for m in answers}
    assert services[0].keys_seen[-1] == f"Bearer {GROQ_KEY}" and services[1].keys_seen[-1] == f"Bearer {DEEP_KEY}"
    assert ("POST", "/v1/chat/completions") in boxes[1].seen
    statuses = {s.model_id: s.state for s in orch.statuses()}
    assert statuses["box-b:gemma.gguf"] is ModelState.LOADED  # discovered on its own host
    assert statuses["groq:llama-3.3-70b"] is ModelState.EXTERNAL_READY


def test_a_failing_connection_falls_back_to_another_connection(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    services[0].fails = True  # groq answers 503

    result = orch.chat("groq:llama-3.3-70b", HELLO)

    assert result.model_id == "deepseek:deepseek-chat"
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("groq:llama-3.3-70b", "error"), ("deepseek:deepseek-chat", "ok")]


def test_a_disabled_connection_is_skipped_as_a_whole_and_says_how_to_enable_it(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    orch.add_model("groq:llama-3.1-8b", priority=1)  # a second model of the same connection, preferred
    orch.edit_connection("groq", enabled=False)

    result = orch.chat("groq:llama-3.3-70b", HELLO)

    assert result.model_id == "deepseek:deepseek-chat"
    assert result.attempts[0].error_kind == "connection_disabled"
    assert "enable it on the Connections page" in (result.attempts[0].error or "")
    assert not any(a.model == "groq:llama-3.1-8b" for a in result.attempts)
    assert [p for p in services[0].seen if p[0] == "POST"] == []
    assert {e.model_id for e in orch.cooldowns()} == set()  # a switched-off connection cools nothing down


def test_a_connection_with_a_rejected_key_is_skipped_as_a_whole(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    orch.add_model("groq:llama-3.1-8b", priority=1)
    [key] = orch.keys_of("groq")
    orch.edit_key(key.id, key="gsk-wrong-0123456789abcdef")

    result = orch.chat("groq:llama-3.3-70b", HELLO)

    assert result.model_id == "deepseek:deepseek-chat"
    assert [a.error_kind for a in result.attempts if a.outcome == "error"] == ["auth"]
    assert not any(a.model == "groq:llama-3.1-8b" for a in result.attempts)


def test_a_local_host_that_is_down_is_skipped_and_its_test_says_how_to_start_it(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    orch.add_connection("box-c", "llamacpp", base_url="http://127.0.0.1:9")  # nothing listens on port 9

    test = orch.test_connection("box-c")
    hosts = {h.provider: h.reachable for h in orch.hosts()}

    assert (test.reachable, test.model_count, test.key) == (False, None, None)
    assert "llama-server -m MODEL.gguf" in test.detail
    assert hosts == {"box-a": True, "box-b": True, "box-c": False}


def test_test_connection_counts_models_and_checks_the_key(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    orch.add_connection("groq-bad", "openai-compatible", base_url=services[0].base_url, key="gsk-bad-0123456789")

    good, bad = orch.test_connection("groq"), orch.test_connection("groq-bad")

    assert (good.reachable, good.model_count, good.key) == (True, 1, "ok")
    assert (bad.reachable, bad.model_count, bad.key) == (True, None, "rejected")
    assert "gsk-bad-0123456789" not in bad.detail


def test_a_changed_base_url_is_used_by_the_next_call_without_a_restart(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    orch.chat("box-a:qwen.gguf", HELLO, fallback=False)
    orch.registry.add("box-a:gemma.gguf")

    orch.edit_connection("box-a", base_url=boxes[1].base_url)
    orch.chat("box-a:gemma.gguf", HELLO, fallback=False)

    assert ("POST", "/v1/chat/completions") in boxes[1].seen
    assert orch.connection("box-a").base_url == boxes[1].base_url


def test_a_connection_added_in_one_process_is_used_in_another(db_url: str, services: tuple[StandIn, StandIn]) -> None:
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as first, \
            Orchestrator.from_settings(settings(db_url, local_hosts=())) as second:
        assert [c.name for c in second.connections() if not c.seeded] == []
        first.add_connection("groq", "openai-compatible", base_url=services[0].base_url, key=GROQ_KEY)
        generations_for(second.db).refresh()  # what the next read after FRESHNESS_S does

        result = second.chat("groq:llama-3.3-70b", HELLO, fallback=False)

    assert result.text.startswith("Stand-in answer")


def test_an_edit_a_disable_and_a_cooling_key_in_one_process_are_honoured_by_the_next_call_in_another(
    db_url: str, services: tuple[StandIn, StandIn]
) -> None:
    # A call looks its connection, its provider and its keys up once per attempt (issue 8): each lookup must
    # still follow what another process changed, once that process's write is seen (generations.refresh()).
    with openai_standin(key=GROQ_KEY, models=("llama-3.3-70b",), word_delay_s=0) as moved, \
            Orchestrator.from_settings(settings(db_url, local_hosts=())) as first, \
            Orchestrator.from_settings(settings(db_url, local_hosts=())) as second:
        first.add_connection("groq", "openai-compatible", base_url=services[0].base_url, key=GROQ_KEY)
        seen = generations_for(second.db).refresh
        seen()
        assert second.chat("groq:llama-3.3-70b", HELLO, fallback=False).text.startswith("Stand-in answer")
        built = second.factory.provider("groq")

        first.edit_connection("groq", options={})  # stored again, nothing changed: the provider is kept
        seen()
        second.chat("groq:llama-3.3-70b", HELLO, fallback=False)
        assert second.factory.provider("groq") is built

        first.edit_connection("groq", base_url=moved.base_url)
        seen()
        second.chat("groq:llama-3.3-70b", HELLO, fallback=False)
        assert ("POST", "/v1/chat/completions") in moved.seen

        first.edit_connection("groq", enabled=False)
        seen()
        with pytest.raises(ConnectionDisabledError):
            second.chat("groq:llama-3.3-70b", HELLO, fallback=False)

        first.edit_connection("groq", enabled=True)
        (key,) = first.keys_of("groq")
        first.keys.record_fault(key.id, "cooling", "429 from the host", 600)
        seen()
        with pytest.raises(AllModelsFailedError) as failed:
            second.chat("groq:llama-3.3-70b", HELLO, fallback=False)
        assert [(a.outcome, a.error_kind) for a in failed.value.attempts] == [("skipped", "no_usable_key")]


def test_a_connection_moved_while_its_model_loads_gets_the_prompt_at_its_new_address(db_url: str) -> None:
    # An attempt looks its connection up once, before the check-and-load; a load takes a while, so the
    # prompt goes to the connection as it is after the load, not as it was before it.
    moved = "http://127.0.0.1:1235"
    with respx.mock(assert_all_called=False) as wire, \
            Orchestrator.from_settings(settings(db_url, local_hosts=("lmstudio",))) as orch:
        wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": False}))
        wire.get(f"{moved}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
        wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(json=openai_answer("old address", "qwen"))
        wire.post(f"{moved}/v1/chat/completions").respond(json=openai_answer("new address", "qwen"))

        def move_on_loading(event: CallEvent) -> None:
            if event.kind == "loading":
                orch.edit_connection("lmstudio", base_url=moved)

        result = orch.chat("lmstudio:qwen", HELLO, fallback=False, on_event=move_on_loading)

    assert result.text == "new address"


def test_bad_connections_are_refused_with_what_to_fix(orch: Orchestrator) -> None:
    with pytest.raises(InvalidConnectionError, match="needs a base URL"):
        orch.add_connection("groq", "openai-compatible")
    with pytest.raises(InvalidConnectionError, match="lower-case letters"):
        orch.add_connection("Groq Cloud", "openai-compatible", base_url="https://api.groq.com/openai/v1")
    with pytest.raises(InvalidConnectionError, match="already exists"):
        orch.add_connection("openai", "openai")  # the seeded name is taken
    with pytest.raises(InvalidConnectionError, match="Unknown kind"):
        orch.add_connection("x", "bard")
    with pytest.raises(InvalidConnectionError, match="has no option"):
        orch.add_connection("x", "openai", options={"api_version": "v1"})
    with pytest.raises(InvalidKeyInputError, match="space"):
        orch.add_connection("x", "openai", key="sk bad")
    with pytest.raises(UnknownConnectionError):
        orch.connection("x")  # nothing was stored by the refused adds
    with pytest.raises(UnknownConnectionError, match="connections add nope"):
        orch.chat("nope:model", HELLO)


@pytest.mark.parametrize(("url", "said"), [
    ("http://192.168.1.20:1234x", "Invalid port"), ("http://[::1:8080", "Invalid port"), ("http://:8080", "no host"),
    ("http://host.test:99999", "out of range"), ("http://host..test", "empty part"),
    ("http://me:pw-secret@host.test:12a4", "cannot be read"),
])
def test_a_url_httpx_cannot_use_is_refused_before_it_breaks_every_status_check(
        orch: Orchestrator, url: str, said: str) -> None:
    # Stored, such a URL raised httpx.InvalidURL (or UnicodeError) out of hosts() and statuses(): every page's
    # status, the Connections page itself included, so it could not even be removed there.
    with pytest.raises(InvalidConnectionError, match=said) as info:
        orch.add_connection("desk", "lmstudio", base_url=url)
    assert "pw-secret" not in info.value.message
    orch.add_connection("desk", "lmstudio", base_url="http://192.168.1.20:1234")
    with pytest.raises(InvalidConnectionError, match=said):
        orch.edit_connection("desk", base_url=url)
    assert orch.connection("desk").base_url == "http://192.168.1.20:1234"
    assert [h.provider for h in orch.hosts()] == ["desk"]


def test_an_env_url_httpx_cannot_use_stops_the_start_with_what_to_fix() -> None:
    with pytest.raises(ConfigurationError, match="LLAMACPP_BASE_URL.*Invalid port"):
        Settings.from_env({"LLAMACPP_BASE_URL": "http://127.0.0.1:80:90"})


def test_removing_a_connection_deactivates_its_models_and_a_seeded_one_is_only_disabled(
    orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)

    orch.remove_connection("groq")
    orch.remove_connection("openai")

    assert "groq" not in {c.name for c in orch.connections()}
    assert {m.model_id: m.active for m in orch.models()}["groq:llama-3.3-70b"] is False
    assert orch.connection("openai").enabled is False
    assert orch.connection("openai").key_mode is KeyMode.ORDERED


def test_a_removed_connections_keys_go_with_it_and_a_new_one_of_that_name_starts_without(
    db_url: str, orch: Orchestrator, services: tuple[StandIn, StandIn], boxes: tuple[StandIn, StandIn]
) -> None:
    _add_all(orch, services, boxes)
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as other:  # another process on the database
        assert other.keys_of("groq")

        orch.remove_connection("groq")
        orch.add_connection("groq", "openai-compatible", base_url="http://127.0.0.1:9")

        assert orch.keys_of("groq") == []
        generations_for(other.db).refresh()  # what the next read after FRESHNESS_S does
        assert other.keys_of("groq") == []
    assert [k.provider for k in orch.keys_of()] == ["deepseek"]  # another connection's keys stay


def test_every_kind_is_offered_with_its_facts(orch: Orchestrator) -> None:
    kinds = {k.kind: k for k in orch.kinds()}

    assert list(kinds) == ["openai", "anthropic", "google", "mistral", "genspark", "openai-compatible", "lmstudio",
                           "ollama", "llamacpp"]
    assert kinds["openai-compatible"].default_base_url is None and kinds["openai-compatible"].seeded_name == "custom"
    assert kinds["google"].key_env_vars == ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    assert kinds["lmstudio"].local and not kinds["lmstudio"].needs_key
    assert kinds["anthropic"].options == ("anthropic_version",)


def test_two_first_edits_of_a_seeded_connection_at_once_both_apply(
    db_url: str, orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as other:
        real_select, raced = store_module.select, []

        def select_before_the_other_wrote(*what: object) -> object:
            # This process reads "never edited", then the other process stores its first edit, then this insert.
            if not raced:
                raced.append(True)
                other.edit_connection("openai", enabled=False)
                return real_select(ConnectionRow).where(ConnectionRow.name == "no such row")
            return real_select(*what)

        monkeypatch.setattr(store_module, "select", select_before_the_other_wrote)
        orch.edit_connection("openai", key_mode="round-robin")

    assert raced
    assert (orch.connection("openai").enabled, orch.connection("openai").key_mode) == (False, KeyMode.ROUND_ROBIN)
