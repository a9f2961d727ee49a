"""Bad input gets a clear error and stores nothing wrong; a huge prompt that is allowed arrives intact;
a load, a cancelled stream and a close leave nothing running."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from orchestrator_core.errors import (
    EmptyPromptError,
    InputError,
    InvalidKeyInputError,
    InvalidModelIdError,
    ModelLoadTimeoutError,
    ModelNotFoundError,
    UnknownProviderError,
)
from orchestrator_core.orchestrator import MAX_PROMPT_CHARS, Orchestrator
from orchestrator_core.store.tables import AIModel, ApiKey
from tests.faults.conftest import OrchFactory, assert_nothing_left_behind, metric_rows, running_threads
from tests.faults.fault_server import FaultServer, Reply
from tests.faults.wire import (
    HEALTHY_DEFAULT,
    HELLO,
    LMSTUDIO_LOAD,
    LMSTUDIO_STATUS,
    SHAPES,
    healthy,
    lmstudio_models,
    openai_stream,
)

OPENAI = SHAPES["openai"]


def count(orch: Orchestrator, table: type) -> int:
    with orch.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


@pytest.mark.parametrize("messages", [
    [],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "  \n\t "}],
    [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "   "}],
], ids=["no-messages", "empty", "whitespace", "system-only"])
def test_empty_prompt_is_refused_before_any_request_or_metric(
    messages: list, server: FaultServer, make_orch: OrchFactory
) -> None:
    orch = make_orch()
    with pytest.raises(EmptyPromptError, match="(?i)empty"):
        orch.chat(OPENAI.model_id, messages)
    with pytest.raises(EmptyPromptError):
        list(orch.stream_chat(OPENAI.model_id, messages))
    assert server.seen == [] and metric_rows(orch) == []


def test_one_megabyte_prompt_works_and_reaches_the_server_byte_for_byte(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    server.script(OPENAI.call_path(False), healthy(OPENAI))
    prompt = ("Grüße, 世界 🚀 " * 80_000)[:1_000_000]
    orch = make_orch(read_timeout_s=5.0)
    result = orch.chat(OPENAI.model_id, [{"role": "user", "content": prompt}])
    assert result.text == "fine"
    (seen,) = server.requests_to(OPENAI.call_path(False))
    assert seen.json()["messages"] == [{"role": "user", "content": prompt}]
    assert [(r.model, r.outcome) for r in metric_rows(orch)] == [(OPENAI.model_id, "ok")]


def test_prompt_over_the_size_guard_is_refused_without_a_request(server: FaultServer, make_orch: OrchFactory) -> None:
    orch = make_orch()
    with pytest.raises(InputError, match="2,000,000") as info:
        orch.chat(OPENAI.model_id, [{"role": "user", "content": "x" * (MAX_PROMPT_CHARS + 1)}])
    assert type(info.value) is InputError and "shorten it" in info.value.message
    assert server.seen == [] and metric_rows(orch) == []


@pytest.mark.parametrize("model_id", ["gpt-4o", "openai:", ":gpt-4o", "open ai:gpt-4o", "openai:gpt 4o", "", "   "])
def test_malformed_model_id_is_refused_and_never_registered(
    model_id: str, server: FaultServer, make_orch: OrchFactory
) -> None:
    orch = make_orch()
    models_before = count(orch, AIModel)
    with pytest.raises(InvalidModelIdError, match="provider:model"):
        orch.chat(model_id, HELLO)
    with pytest.raises(InvalidModelIdError):
        orch.registry.add(model_id)
    with pytest.raises(InvalidModelIdError):
        orch.manager.check_status(model_id)
    assert count(orch, AIModel) == models_before
    assert server.seen == [] and metric_rows(orch) == []


def test_unknown_provider_names_the_known_ones_and_stores_nothing(server: FaultServer, make_orch: OrchFactory) -> None:
    orch = make_orch()
    models_before = count(orch, AIModel)
    with pytest.raises(UnknownProviderError) as info:
        orch.chat("nosuch:model", HELLO)
    assert "'nosuch'" in info.value.message and "openai" in info.value.message and "lmstudio" in info.value.message
    with pytest.raises(UnknownProviderError):
        orch.registry.add("nosuch:model")
    with pytest.raises(InvalidKeyInputError, match="Unknown provider"):
        orch.keys.add("nosuch", "work", "sk-some-key-0123456789")
    assert count(orch, AIModel) == models_before and count(orch, ApiKey) == 0
    assert server.seen == [] and metric_rows(orch) == []


def test_unknown_model_id_is_reported_by_the_provider_and_not_registered(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    server.script(OPENAI.call_path(False), Reply.json(404, {"error": {
        "message": "The model `gpt-nonexistent` does not exist", "type": "invalid_request_error",
        "code": "model_not_found"}}))
    orch = make_orch()
    models_before = count(orch, AIModel)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        orch.chat("openai:gpt-nonexistent", HELLO, fallback=False)
    with pytest.raises(InvalidModelIdError, match="not registered"):
        orch.registry.set_active("openai:gpt-nonexistent", True)
    assert count(orch, AIModel) == models_before
    assert [(r.outcome, r.error_kind) for r in metric_rows(orch)] == [("error", "model_not_found")]


def test_duplicate_key_label_is_refused_and_the_first_key_stays(server: FaultServer, make_orch: OrchFactory) -> None:
    orch = make_orch()
    first = orch.keys.add("openai", "work", "sk-first-key-0123456789")
    with pytest.raises(InvalidKeyInputError, match="already exists") as info:
        orch.keys.add("openai", " work ", "sk-second-key-9876543210")
    assert "sk-second" not in info.value.message
    assert count(orch, ApiKey) == 1
    assert orch.keys.secret_by_id(first.id) == "sk-first-key-0123456789"
    second = orch.keys.add("openai", "home", "sk-second-key-9876543210")
    with pytest.raises(InvalidKeyInputError, match="already exists"):
        orch.keys.update(second.id, label="work")
    assert {k.label for k in orch.keys.list("openai") if k.source == "stored"} == {"work", "home"}


@pytest.mark.parametrize("key", ["sk-abc\ndef-0123456789", "sk-abc def-0123456789", "sk-abc\r\n\tdef", "", " \n "])
def test_key_with_a_line_break_or_space_inside_is_refused_without_echoing_it(
    key: str, server: FaultServer, make_orch: OrchFactory
) -> None:
    orch = make_orch()
    with pytest.raises(InvalidKeyInputError) as info:
        orch.keys.add("openai", "work", key)
    for part in filter(None, key.split()):
        assert part not in info.value.message
    assert count(orch, ApiKey) == 0


def test_key_pasted_with_a_trailing_newline_is_stored_without_it(server: FaultServer, make_orch: OrchFactory) -> None:
    server.script(OPENAI.call_path(False), healthy(OPENAI))
    orch = make_orch(env_keys={})
    info = orch.keys.add("openai", "work", "  sk-pasted-key-0123456789\n")
    assert orch.keys.secret_by_id(info.id) == "sk-pasted-key-0123456789"
    orch.chat(OPENAI.model_id, HELLO)
    (seen,) = server.requests_to(OPENAI.call_path(False))
    assert seen.headers["authorization"] == "Bearer sk-pasted-key-0123456789"


def test_unknown_chat_parameter_is_refused(server: FaultServer, make_orch: OrchFactory) -> None:
    orch = make_orch()
    with pytest.raises(InputError, match="temprature"):
        orch.chat(OPENAI.model_id, HELLO, temprature=0.5)
    assert server.seen == []


# ---------------------------------------------------------------------------------------------
# Lifecycle: what a load, a cancelled stream and close() leave behind


def test_load_request_outliving_its_timeout_is_a_load_timeout_whoever_notices_first(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    # wait_for_load allows 5 s, but the load request itself times out after load_timeout_s: the class must
    # be the same as when wait_for_load notices first (it was ProviderTimeoutError).
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models(loaded=False)))
    server.script(LMSTUDIO_LOAD, Reply.stall())
    baseline = running_threads()
    orch = make_orch(local_hosts=("lmstudio",))
    orch.manager.load("lmstudio:qwen")
    with pytest.raises(ModelLoadTimeoutError, match="did not finish loading") as info:
        orch.manager.wait_for_load("lmstudio:qwen", timeout_s=5.0)
    assert info.value.model == "lmstudio:qwen"
    assert len(server.requests_to(LMSTUDIO_LOAD)) == 1
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_stream_abandoned_by_the_reader_closes_its_connection_and_records_the_cancel(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    server.script(OPENAI.call_path(True), Reply.stream(openai_stream(["one", "two", "three"], OPENAI.model),
                                                        then="stall"))
    baseline = running_threads()
    orch = make_orch()
    stream = orch.stream_chat(OPENAI.model_id, HELLO)
    pieces = iter(stream)
    assert next(pieces) == "one"
    pieces.close()  # the reader went away (a closed browser tab, a Ctrl-C)
    assert server.wait_all_closed(2.0), "the abandoned stream still holds its connection"
    assert [(r.outcome, r.error_kind) for r in metric_rows(orch)] == [("error", "cancelled")]
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_close_flushes_queued_metrics_and_stops_every_thread(server: FaultServer, make_orch: OrchFactory) -> None:
    server.script(HEALTHY_DEFAULT.call_path(False), healthy(HEALTHY_DEFAULT))
    baseline = running_threads()
    orch = make_orch()
    for _ in range(20):
        orch.chat(HEALTHY_DEFAULT.model_id, HELLO)
    orch.close()
    assert_nothing_left_behind(server, baseline)
    with Orchestrator.from_settings(orch.settings) as again:  # what close() flushed is on disk
        assert len(metric_rows(again)) == 20
