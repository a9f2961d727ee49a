"""Models page: the live table, load / unload / reset actions, the registry, charts and the CSV export."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import rollup
from tests.console.apptools import lmstudio_down, seed_metrics, shown, start
from tests.helpers import LMSTUDIO, lmstudio_models

GPT = "openai:gpt-4.1-mini"
CLAUDE = "anthropic:claude-haiku-4-5"


def models_page() -> AppTest:
    return start("app_pages/models.py")


def table(at: AppTest) -> dict[str, dict[str, object]]:
    frame = at.dataframe[0].value
    return {row["Model"]: row for row in frame.to_dict("records")}


def successes(at: AppTest) -> list[str]:
    return [s.value for s in at.success]


def test_table_lists_every_model_with_state_and_call_stats(wire: respx.MockRouter, with_openai_key: str,
                                                          core: Callable[[], Orchestrator]) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True, "llama": False}))
    orch = core()
    seed_metrics(orch)
    orch.failures.record(CLAUDE, "rate_limit", "slow down", 60)
    at = models_page()
    assert not at.exception
    rows = table(at)
    assert set(rows) == {GPT, CLAUDE, "google:gemini-2.5-flash", "mistral:mistral-small-latest", "lmstudio:qwen",
                         "lmstudio:llama"}
    assert rows["lmstudio:qwen"]["State"] == "✅ loaded" and rows["lmstudio:llama"]["State"] == "💤 not loaded"
    assert rows[GPT]["State"] == "🌐 hosted, ready" and rows[GPT]["Calls"] == 21 and rows[GPT]["Success"] == "100%"
    low, high = rollup.bucket_edges(rollup.bucket_index(300.0))  # estimated from the rollups' histogram
    assert low <= float(str(rows[GPT]["p50 ms"])) <= high
    assert str(rows[CLAUDE]["State"]).startswith("⏸️ cooling down until") and rows[CLAUDE]["Cooldown until"] != "—"
    assert str(rows[CLAUDE]["Last error"]).startswith("rate_limit at ")
    assert rows["google:gemini-2.5-flash"]["State"] == "❌ no key"


def test_missing_figures_show_a_dash_never_none(wire: respx.MockRouter, with_openai_key: str) -> None:
    lmstudio_down(wire)
    at = models_page()
    row = table(at)[GPT]  # never called: no success rate, no latency, no error, no cooldown
    assert [row[c] for c in ("Success", "p50 ms", "p95 ms", "Last error", "Cooldown until")] == ["—"] * 5
    assert "None" not in at.dataframe[0].value.to_csv()


def test_the_models_page_draws_no_chart_and_links_to_usage(wire: respx.MockRouter,
                                                           core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    seed_metrics(core())
    at = models_page()
    assert not at.exception and not at.get("plotly_chart")  # five charts redrawn per action made actions slow
    assert [link.proto.page for link in at.get("page_link")] == ["usage"]


def test_the_detail_panel_shows_what_the_table_leaves_out(wire: respx.MockRouter,
                                                         core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    core().failures.record(CLAUDE, "rate_limit", "slow down, you are over the per-minute quota", 60)
    at = models_page()
    at.selectbox(key="action_model").set_value(CLAUDE).run()
    assert not at.exception
    panel = at.expander[0]
    assert panel.label.startswith("Detail:")
    shown_text = shown(" ".join(str(m.value) for m in panel.markdown))
    assert "over the per-minute quota" in shown_text and "**Source:** seed" in shown_text


def test_refresh_now_asks_the_host_again(wire: respx.MockRouter) -> None:
    route = wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
    at = models_page()
    before = route.call_count
    at.run()
    assert route.call_count == before  # the status cache answers ordinary reruns
    at.button(key="models_refresh_now").click().run()
    assert not at.exception and route.call_count == before + 1


def test_reset_one_failure_then_all(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    orch = core()
    orch.failures.record(GPT, "rate_limit", "slow down", 60)
    orch.failures.record(CLAUDE, "timeout", "too slow", 60)
    at = models_page()
    at.selectbox(key="action_model").set_value(GPT).run()
    at.button(key="action_reset").click().run()
    assert not at.exception
    assert f"{GPT}: failure cleared." in successes(at)
    assert orch.failures.get(GPT) is None and orch.failures.get(CLAUDE) is not None
    assert table(at)[GPT]["Cooldown until"] == "—"  # the table rendered after the action already shows it
    at.button(key="action_reset_all").click().run()
    assert "Cleared 1 failure(s); every model may be tried again." in successes(at)
    assert orch.failures.active() == {}


def test_load_and_wait_shows_progress_until_the_model_is_loaded(wire: respx.MockRouter) -> None:
    loads: list[str] = []
    wire.get(f"{LMSTUDIO}/api/v1/models").mock(
        side_effect=lambda r: httpx.Response(200, json=lmstudio_models({"qwen": bool(loads)})))
    wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(
        side_effect=lambda r: loads.append("qwen") or httpx.Response(200, json={"status": "loaded"}))
    at = models_page()
    at.selectbox(key="action_model").set_value("lmstudio:qwen").run()
    at.button(key="action_load_wait").click().run()
    assert not at.exception
    assert loads == ["qwen"]
    status = at.status[0]
    assert status.label.startswith("lmstudio:qwen is loaded (") and status.state == "complete"


def test_load_starts_in_the_background_and_unload_calls_the_host(wire: respx.MockRouter) -> None:
    loaded = {"qwen": False}
    wire.get(f"{LMSTUDIO}/api/v1/models").mock(side_effect=lambda r: httpx.Response(200, json=lmstudio_models(loaded)))
    load = wire.post(f"{LMSTUDIO}/api/v1/models/load").mock(
        side_effect=lambda r: loaded.update(qwen=True) or httpx.Response(200, json={"status": "loaded"}))
    unload = wire.post(f"{LMSTUDIO}/api/v1/models/unload").mock(
        side_effect=lambda r: loaded.update(qwen=False) or httpx.Response(200, json={"instance_id": "qwen"}))
    at = models_page()
    at.selectbox(key="action_model").set_value("lmstudio:qwen").run()
    at.button(key="action_load").click().run()
    assert not at.exception
    assert any(s.startswith("Loading lmstudio:qwen started") for s in successes(at))
    deadline = time.monotonic() + 2
    while not loaded["qwen"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert load.call_count == 1
    at.button(key="action_unload").click().run()
    assert not at.exception and "lmstudio:qwen unloaded." in successes(at)
    assert unload.calls.last.request.content == b'{"instance_id":"qwen"}'


def test_an_action_on_a_host_that_is_down_shows_why_instead_of_failing(
        wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    core().registry.add("lmstudio:qwen")
    at = models_page()
    assert table(at)["lmstudio:qwen"]["State"] == "❌ host down"
    at.selectbox(key="action_model").set_value("lmstudio:qwen").run()
    at.button(key="action_load").click().run()
    assert not at.exception
    assert any("Cannot reach lmstudio" in e.value for e in at.error)


def test_registry_add_deactivate_prioritise_and_remove(wire: respx.MockRouter,
                                                       core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    at = models_page()
    at.text_input(key="new_model_id").set_value("mistral:mistral-large-latest")
    at.number_input(key="new_model_priority").set_value(40)
    at.button(key="FormSubmitter:add_model_form-Add model").click().run()
    assert not at.exception
    registry = core().registry
    entry = registry.get("mistral:mistral-large-latest")
    assert entry is not None and entry.priority == 40 and entry.source == "user"
    assert at.text_input(key="new_model_id").value == ""  # cleared after a successful add
    at.selectbox(key="edit_model").set_value("mistral:mistral-large-latest").run()
    at.toggle(key="edit_active_mistral:mistral-large-latest").set_value(False)
    at.number_input(key="edit_priority_mistral:mistral-large-latest").set_value(5)
    at.button(key="FormSubmitter:edit_form_mistral:mistral-large-latest-Save").click().run()
    entry = registry.get("mistral:mistral-large-latest")
    assert entry is not None and (entry.active, entry.priority) == (False, 5)
    assert table(at)["mistral:mistral-large-latest"]["State"] == "➖ inactive"
    at.button(key="remove_model_ask").click().run()
    assert not at.exception and registry.get("mistral:mistral-large-latest") is not None  # asked, not removed
    at.button(key="cancel_remove_model").click().run()
    assert registry.get("mistral:mistral-large-latest") is not None
    at.button(key="remove_model_ask").click().run()
    at.button(key="confirm_remove_model").click().run()
    assert not at.exception and registry.get("mistral:mistral-large-latest") is None


def test_adding_a_bad_model_id_keeps_what_was_typed(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    at = models_page()
    at.text_input(key="new_model_id").set_value("gpt-4o")
    at.button(key="FormSubmitter:add_model_form-Add model").click().run()
    assert not at.exception
    assert any("not of the form provider:model" in e.value for e in at.error)
    assert at.text_input(key="new_model_id").value == "gpt-4o"


def test_an_action_message_shows_once_as_a_banner_not_also_as_a_toast(
        wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    core()
    at = models_page()
    at.selectbox(key="action_model").set_value(GPT).run()
    at.button(key="action_reset").click().run()
    assert f"{GPT} had no failure." in successes(at)
    assert [t.value for t in at.toast] == []


def test_saving_the_priority_keeps_a_deactivation_made_elsewhere(wire: respx.MockRouter,
                                                                 core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    core().add_model("mistral:mistral-large-latest", priority=40)
    at = models_page()
    at.selectbox(key="edit_model").set_value("mistral:mistral-large-latest").run()
    core().edit_model("mistral:mistral-large-latest", active=False)  # the API, the CLI or another tab
    at.run()
    at.number_input(key="edit_priority_mistral:mistral-large-latest").set_value(5)
    at.button(key="FormSubmitter:edit_form_mistral:mistral-large-latest-Save").click().run()
    assert not at.exception and not at.warning
    entry = core().registry.get("mistral:mistral-large-latest")
    # The form used to send back the 'active' it first showed, switching the model on again.
    assert entry is not None and (entry.active, entry.priority) == (False, 5)
