"""Connections page: list with status, add with a kind picker that pre-fills the URL, edit, enable/disable, remove
behind a confirmation, Test (reachability, model count, key check, how to start a local host that is down)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import all_values, lmstudio_down, start

PAGE = "app_pages/connections.py"
ADD = "FormSubmitter:add_conn_form-Add connection"
GROQ_KEY = "gsk-live-PLAINTEXT-0123456789-wxyz"
GROQ = "https://api.groq.example/openai/v1"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


def page() -> AppTest:
    return start(PAGE)


def rows(at: AppTest) -> dict[str, dict[str, object]]:
    return {r["Name"]: r for r in at.dataframe[0].value.to_dict("records")}


def add(at: AppTest, kind: str, name: str, url: str | None = None, key: str = "") -> AppTest:
    at.selectbox(key="new_conn_kind").set_value(kind).run()
    at.text_input(key="new_conn_name").set_value(name)
    if url is not None:
        at.text_input(key="new_conn_url").set_value(url)
    at.text_input(key="new_conn_key").set_value(key)
    return at.button(key=ADD).click().run()


def test_the_page_lists_the_seeded_connections_with_their_status() -> None:
    at = page()
    assert not at.exception
    table = rows(at)
    assert {"openai", "lmstudio", "custom"} <= set(table)
    assert table["lmstudio"]["Status"] == "🔴 not reachable"
    assert table["openai"]["Status"] == "❌ no key"
    assert table["openai"]["Source"] == "environment"
    assert table["ollama"]["Status"] == "⚪ not probed (not in LOCAL_HOSTS)"  # LOCAL_HOSTS=lmstudio here


def test_the_kind_picker_prefills_the_default_url(core: Callable[[], Orchestrator]) -> None:
    defaults = {k.kind: k.default_base_url for k in core().kinds()}
    at = page()
    at.selectbox(key="new_conn_kind").set_value("ollama").run()
    assert at.text_input(key="new_conn_url").value == defaults["ollama"]
    at.selectbox(key="new_conn_kind").set_value("openai-compatible").run()
    assert at.text_input(key="new_conn_url").value == ""  # no default: the operator types it


def test_an_added_connection_is_listed_and_its_key_never_shown(core: Callable[[], Orchestrator]) -> None:
    at = add(page(), "openai-compatible", "groq", GROQ, GROQ_KEY)
    assert not at.exception
    assert at.success[0].value.startswith("Added groq")
    row = rows(at)["groq"]
    assert (row["Base URL"], row["Keys"], row["Source"], row["Status"]) == (GROQ, 1, "added", "✅ 1 key")
    assert GROQ_KEY not in all_values(at) and "PLAINTEXT" not in all_values(at)
    assert at.text_input(key="new_conn_key").value == ""
    assert core().connection("groq").base_url == GROQ


def test_a_bad_name_says_what_to_fix_and_keeps_what_was_typed() -> None:
    at = add(page(), "openai-compatible", "Has Spaces", GROQ, GROQ_KEY)
    assert not at.exception
    assert "lower-case letters" in at.error[0].value
    assert GROQ_KEY not in at.error[0].value
    assert at.text_input(key="new_conn_name").value == "Has Spaces"
    assert at.text_input(key="new_conn_url").value == GROQ
    assert at.text_input(key="new_conn_key").value == GROQ_KEY


def test_credentials_in_a_base_url_are_masked_on_the_page() -> None:
    at = add(page(), "openai-compatible", "vllm", "https://bob:hunter2-secret@vllm.example/v1")
    assert not at.exception
    assert rows(at)["vllm"]["Base URL"] == "https://***@vllm.example/v1"
    assert "hunter2-secret" not in "\n".join(str(m.value) for m in at.success)
    assert "hunter2-secret" not in at.dataframe[0].value.to_csv()


def test_the_edit_form_masks_url_credentials_and_saving_it_keeps_them(core: Callable[[], Orchestrator]) -> None:
    url = "https://bob:hunter2-secret@vllm.example/v1"
    at = add(page(), "openai-compatible", "vllm", url)
    at.selectbox(key="conn_pick").set_value("vllm").run()
    assert at.text_input(key="edit_conn_url_vllm").value == "https://***@vllm.example/v1"
    at = at.button(key="FormSubmitter:edit_conn_form_vllm-Save changes").click().run()
    assert not at.exception
    assert "hunter2-secret" not in all_values(at)
    assert core().connection("vllm").base_url == url  # the masked URL sent back did not replace the password


def test_editing_the_base_url_takes_effect(core: Callable[[], Orchestrator], wire: respx.MockRouter) -> None:
    for host in ("192.0.2.10", "192.0.2.11"):  # the sidebar probes the new host: down
        wire.route(host=host).mock(side_effect=httpx.ConnectError("refused"))
    at = add(page(), "lmstudio", "desk", "http://192.0.2.10:1234")
    at.selectbox(key="conn_pick").set_value("desk").run()
    at.text_input(key="edit_conn_url_desk").set_value("http://192.0.2.11:1234")
    at = at.button(key="FormSubmitter:edit_conn_form_desk-Save changes").click().run()
    assert not at.exception
    assert core().connection("desk").base_url == "http://192.0.2.11:1234"
    assert rows(at)["desk"]["Base URL"] == "http://192.0.2.11:1234"


def test_saving_one_field_keeps_what_another_process_changed_in_the_others(
        core: Callable[[], Orchestrator]) -> None:
    at = add(page(), "openai-compatible", "vllm", "https://one.example/v1")
    at.selectbox(key="conn_pick").set_value("vllm").run()
    core().edit_connection("vllm", base_url="https://two.example/v1")  # the CLI, the API or another tab
    at.run()
    assert at.text_input(key="edit_conn_url_vllm").value == "https://two.example/v1"  # the field follows
    at.selectbox(key="edit_conn_mode_vllm").set_value("round-robin")
    at = at.button(key="FormSubmitter:edit_conn_form_vllm-Save changes").click().run()
    assert not at.exception and not at.warning
    # The form used to send back the URL it first showed, silently undoing the other change.
    assert (core().connection("vllm").base_url, core().connection("vllm").key_mode.value) == (
        "https://two.example/v1", "round-robin")


def test_a_refused_edit_keeps_what_was_typed(core: Callable[[], Orchestrator]) -> None:
    at = add(page(), "openai-compatible", "vllm", "https://one.example/v1")
    at.selectbox(key="conn_pick").set_value("vllm").run()
    at.text_input(key="edit_conn_url_vllm").set_value("ftp://one.example")
    at = at.button(key="FormSubmitter:edit_conn_form_vllm-Save changes").click().run()
    assert "does not fit" in at.error[0].value
    assert at.text_input(key="edit_conn_url_vllm").value == "ftp://one.example"
    assert core().connection("vllm").base_url == "https://one.example/v1"


def test_disable_and_enable(core: Callable[[], Orchestrator]) -> None:
    at = add(page(), "openai-compatible", "groq", GROQ, GROQ_KEY)
    at.selectbox(key="conn_pick").set_value("groq").run()
    at = at.button(key="conn_toggle").click().run()
    assert rows(at)["groq"]["Status"] == "⏸️ disabled"
    assert core().connection("groq").enabled is False
    at = at.button(key="conn_toggle").click().run()
    assert core().connection("groq").enabled is True


def test_remove_asks_first_and_says_models_are_deactivated_and_metrics_kept(
    core: Callable[[], Orchestrator],
) -> None:
    at = add(page(), "openai-compatible", "groq", GROQ, GROQ_KEY)
    orch = core()
    orch.add_model("groq:llama-3.3-70b")
    at.selectbox(key="conn_pick").set_value("groq").run()
    at = at.button(key="conn_remove").click().run()
    said = " ".join(str(m.value) for m in at.markdown)
    assert "Its 1 registered model is deactivated" in said
    assert "metrics are kept" in said
    at = at.button(key="cancel_remove").click().run()
    assert "groq" in rows(at)
    at = at.button(key="conn_remove").click().run()
    at = at.button(key="confirm_remove").click().run()
    assert not at.exception
    assert "groq" not in rows(at)
    assert [m.active for m in core().models() if m.model_id == "groq:llama-3.3-70b"] == [False]


def test_test_of_a_local_host_that_is_down_says_how_to_start_it() -> None:
    at = add(page(), "lmstudio", "desk", "http://127.0.0.1:1234")
    at.selectbox(key="conn_pick").set_value("desk").run()
    at = at.button(key="conn_test_button").click().run()
    assert not at.exception
    [shown] = [e.value for e in at.error]
    assert "Reachable: no" in shown
    assert "lms server start" in shown or "start" in shown.lower()


def test_test_reports_reachability_model_count_and_the_key_check(wire: respx.MockRouter) -> None:
    route = wire.get(f"{GROQ}/models").mock(return_value=httpx.Response(
        200, json={"object": "list", "data": [{"id": "llama-3.3-70b", "object": "model"},
                                              {"id": "mixtral", "object": "model"}]}))
    at = add(page(), "openai-compatible", "groq", GROQ, GROQ_KEY)
    at.selectbox(key="conn_pick").set_value("groq").run()
    at = at.button(key="conn_test_button").click().run()
    assert not at.exception
    [shown] = [e.value for e in at.success]
    assert "Reachable: yes" in shown and "Models: 2." in shown and "Key: accepted." in shown
    assert route.calls.last.request.headers["authorization"] == f"Bearer {GROQ_KEY}"
    assert GROQ_KEY not in all_values(at)


def test_a_rejected_key_is_a_warning_in_a_sentence(wire: respx.MockRouter) -> None:
    wire.get(f"{GROQ}/models").mock(return_value=httpx.Response(401, json={"error": {"message": "bad key"}}))
    at = add(page(), "openai-compatible", "groq", GROQ, GROQ_KEY)
    at.selectbox(key="conn_pick").set_value("groq").run()
    at = at.button(key="conn_test_button").click().run()
    assert not at.exception
    [shown] = [e.value for e in at.warning]
    assert "Key: rejected." in shown
