"""API keys page: masked list, add / edit / delete with confirmation, test one and all, environment keys read-only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import respx
from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import KeyCheck
from tests.console.apptools import all_values, lmstudio_down, start
from tests.helpers import ANTHROPIC, FAKE_OPENAI_KEY, MISTRAL, OPENAI

PLAIN = "sk-live-PLAINTEXT-0123456789-abcd"
ADD = "FormSubmitter:add_key_form-Save key"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


def keys_page() -> AppTest:
    return start("app_pages/keys.py")


def rows(at: AppTest) -> list[dict[str, object]]:
    """Every key row, over the pools (one table per connection; the gateway tokens' table has no Key column)."""
    return [row for frame in at.dataframe if "Key" in frame.value.columns for row in frame.value.to_dict("records")]


def add(at: AppTest, provider: str, label: str, key: str) -> AppTest:
    at.selectbox(key="new_key_provider").set_value(provider)
    at.text_input(key="new_key_label").set_value(label)
    at.text_input(key="new_key_value").set_value(key)
    return at.button(key=ADD).click().run()


def test_an_added_key_is_shown_masked_and_never_in_plain_text(core: Callable[[], Orchestrator]) -> None:
    at = add(keys_page(), "openai", "work", PLAIN)
    assert not at.exception
    assert at.success[0].value.startswith("Saved the openai key “work” (••••abcd)")
    [row] = rows(at)
    assert (row["Provider"], row["Label"], row["Key"], row["Source"]) == ("OpenAI", "work", "••••abcd", "stored")
    assert at.text_input(key="new_key_value").value == ""  # cleared after the save
    assert at.text_input(key="new_key_value").proto.type == TextInputProto.PASSWORD
    assert PLAIN not in all_values(at) and "PLAINTEXT" not in all_values(at)
    assert core().keys.secret_for("openai") == PLAIN  # stored, encrypted, usable


def test_a_rejected_key_keeps_everything_that_was_typed(core: Callable[[], Orchestrator]) -> None:
    at = add(keys_page(), "mistral", "team", "sk-with space")
    assert not at.exception
    assert "contains a space" in at.error[0].value and "sk-with" not in at.error[0].value
    assert at.text_input(key="new_key_label").value == "team"
    assert at.text_input(key="new_key_value").value == "sk-with space"
    assert at.selectbox(key="new_key_provider").value == "mistral"
    add(at, "mistral", "team", "   ")
    assert "The key is empty" in at.error[0].value
    assert core().keys.list() == []


def test_edit_changes_the_label_and_replaces_the_key(core: Callable[[], Orchestrator]) -> None:
    info = core().keys.add("openai", "old", "sk-old-000000000000-1111")
    at = keys_page()
    at.text_input(key=f"edit_key_label_{info.id}").set_value("renamed")
    at.text_input(key=f"edit_key_value_{info.id}").set_value("sk-new-000000000000-2222")
    at.button(key=f"FormSubmitter:edit_key_form_{info.id}-Save changes").click().run()
    assert not at.exception
    assert at.success[0].value == "Updated the label and key of the openai key “renamed” (••••2222)."
    [row] = rows(at)
    assert (row["Label"], row["Key"]) == ("renamed", "••••2222")
    assert core().keys.secret_for("openai") == "sk-new-000000000000-2222"
    assert "sk-new-000000000000-2222" not in all_values(at)


def test_delete_asks_for_confirmation_first(core: Callable[[], Orchestrator]) -> None:
    info = core().keys.add("anthropic", "spare", "sk-ant-000000000000-9999")
    at = keys_page()
    at.button(key="key_delete").click().run()
    assert not at.exception
    assert any("is removed for good" in m.value for m in at.markdown)  # the dialog
    at.button(key="cancel_delete").click().run()
    assert len(rows(at)) == 1 and not any("is removed for good" in m.value for m in at.markdown)
    at.button(key="key_delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception
    assert at.success[0].value == "Deleted the anthropic key “spare”."
    assert core().keys.list() == [] and not at.dataframe
    assert info.id not in [k.id for k in core().keys.list()]


def test_testing_a_key_shows_and_persists_the_result(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    core().keys.add("openai", "work", PLAIN)
    route = wire.get(f"{OPENAI}/models").respond(json={"data": [{"id": "gpt-4.1-mini"}, {"id": "gpt-4o"}]})
    at = keys_page()
    at.button(key="key_test").click().run()
    assert not at.exception
    assert route.calls.last.request.headers["authorization"] == f"Bearer {PLAIN}"
    assert "✅ OK" in at.success[0].value and "2 models listed" in at.success[0].value
    [row] = rows(at)
    assert row["Last test"] == "✅ OK" and row["Tested at"] and row["Latency ms"] != "—"
    [stored] = core().keys.list()
    assert stored.last_test_status is KeyCheck.OK and stored.last_tested_at is not None


def test_test_all_reports_ok_rejected_and_could_not_verify(wire: respx.MockRouter,
                                                           core: Callable[[], Orchestrator]) -> None:
    keys = core().keys
    keys.add("openai", "good", PLAIN)
    keys.add("anthropic", "revoked", "sk-ant-revoked-0000000000")
    keys.add("mistral", "offline", "mistral-key-00000000000000")
    wire.get(f"{OPENAI}/models").respond(json={"data": []})
    wire.get(f"{ANTHROPIC}/v1/models").respond(401, json={"type": "error", "error": {
        "type": "authentication_error", "message": "invalid x-api-key"}})
    wire.get(f"{MISTRAL}/models").mock(side_effect=httpx.ConnectError("unreachable"))
    at = keys_page()
    at.button(key="key_test_all").click().run()
    assert not at.exception
    assert at.info[0].value == "Tested 3 keys: 1 OK, 1 rejected, 1 could not be verified."
    status = {r["Label"]: r["Last test"] for r in rows(at)}
    assert status == {"good": "✅ OK", "revoked": "❌ rejected", "offline": "⚠️ could not verify"}


def test_environment_keys_are_listed_read_only(wire: respx.MockRouter, with_openai_key: str) -> None:
    at = keys_page()
    assert not at.exception
    [row] = rows(at)
    assert (row["Label"], row["Key"], row["Source"]) == ("OPENAI_API_KEY", "••••cdef", "environment (read-only)")
    assert at.button(key="key_delete").disabled
    assert any("comes from the environment" in c.value for c in at.caption)
    assert FAKE_OPENAI_KEY not in all_values(at)
    wire.get(f"{OPENAI}/models").respond(json={"data": [{"id": "gpt-4.1-mini"}]})
    at.button(key="key_test").click().run()
    assert rows(at)[0]["Last test"] == "✅ OK"


def test_replacing_the_key_keeps_a_label_changed_elsewhere(core: Callable[[], Orchestrator]) -> None:
    info = core().keys.add("openai", "old", "sk-old-000000000000-1111")
    at = keys_page()
    core().edit_key(info.id, label="renamed-elsewhere")  # the API or another tab
    at.run()
    at.text_input(key=f"edit_key_value_{info.id}").set_value("sk-new-000000000000-2222")
    at.button(key=f"FormSubmitter:edit_key_form_{info.id}-Save changes").click().run()
    assert not at.exception and not at.warning
    [row] = rows(at)
    assert (row["Label"], row["Key"]) == ("renamed-elsewhere", "••••2222")
