"""The Spend page and the cost on other pages (issue 11): totals, unpriced models, overrides, budgets."""

from __future__ import annotations

import time
from collections.abc import Callable

import respx

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.metrics import MetricRow
from tests.console.apptools import lmstudio_down, start, texts

SPEND = "app_pages/spend.py"


def seed_costs(orch: Orchestrator) -> None:
    now = time.time()
    rows = [MetricRow(model="openai:gpt-4o-mini", outcome="ok", latency_ms=100, request_id=f"p{i}", prompt_tokens=9,
                      completion_tokens=3, cost_usd=0.25, price_source="genai-prices 0.2.3", ts=now - 300 + i)
            for i in range(3)]
    rows.append(MetricRow(model="custom:house", outcome="ok", latency_ms=100, request_id="u", prompt_tokens=9,
                          completion_tokens=3, ts=now - 200))  # unpriced: cost unknown
    rows.append(MetricRow(model="anthropic:claude-3-5-haiku", outcome="ok", latency_ms=90, request_id="f",
                          requested_model="openai:gpt-4o", fallback_from="openai:gpt-4o", cost_usd=0.01,
                          requested_cost_usd=0.04, ts=now - 100))
    for row in rows:
        orch.metrics.record(row)
    orch.metrics.flush()


def test_spend_page_sums_spend_lists_unpriced_models_and_warns_of_a_budget(
    wire: respx.MockRouter, core: Callable[[], Orchestrator]
) -> None:
    lmstudio_down(wire)
    orch = core()
    seed_costs(orch)
    orch.pricing.set_budget("openai", "month", 0.9)
    at = start(SPEND)
    assert not at.exception
    assert [m.value for m in at.metric] == ["$0.76", "$0.76", "$0.76"]  # today, this week, this month
    shown = "\n".join(texts(at))
    assert "`custom:house`" in shown and "unknown cost (never $0)" in shown
    assert "The monthly budget of connection 'openai' is 83% used" in shown
    models = at.dataframe[0].value.to_dict("records")
    assert models[0]["model"] == "openai:gpt-4o-mini" and models[0]["USD per 1,000 calls"] == "250"
    unpriced = next(r for r in models if r["model"] == "custom:house")
    assert unpriced["spent USD"] == "—"  # unknown, shown as a dash: neither 0 nor "None"
    fallbacks = at.dataframe[1].value.to_dict("records")
    assert fallbacks == [{"fell back from": "openai:gpt-4o", "answered by": "anthropic:claude-3-5-haiku",
                          "answers": 1, "cost USD": "0.01", "requested model would have cost USD": "0.04",
                          "saved USD": "0.03"}]


def test_spend_page_saves_a_price_override_and_a_budget(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    at = start(SPEND)
    at.text_input(key="price_target").set_value("custom:house")
    at.number_input(key="price_input").set_value(1.5)
    at.number_input(key="price_output").set_value(4.0)
    at = at.button(key="price_save").click().run()
    assert not at.exception
    at.selectbox(key="budget_scope").set_value("custom")
    at.selectbox(key="budget_period").set_value("day")
    at.number_input(key="budget_limit").set_value(3.0)
    at = at.button(key="budget_save").click().run()
    assert not at.exception, at.exception
    orch = core()
    [override] = orch.pricing.overrides()
    assert (override.target, override.input_per_mtok, override.output_per_mtok, override.cached_input_per_mtok) == (
        "custom:house", 1.5, 4.0, None)
    assert [(b.scope, b.period, b.limit_usd) for b in orch.pricing.budgets()] == [("custom", "day", 3.0)]
    assert "custom:house" not in "\n".join(texts(at)).split("Unpriced models")[-1].split("Price overrides")[0]


def test_overview_shows_spend_and_top_models(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    seed_costs(core())
    at = start()
    assert not at.exception
    spent = {m.label: m.value for m in at.metric if m.label.startswith("Spent")}
    assert spent == {"Spent today": "$0.76", "Spent this week": "$0.76", "Spent this month": "$0.76"}
    top = at.dataframe[0].value.to_dict("records")  # before the keys table
    assert [r["model"] for r in top][:2] == ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku"]


def test_spend_page_offers_the_hosted_connections_as_budget_scopes(
    wire: respx.MockRouter, core: Callable[[], Orchestrator]
) -> None:
    lmstudio_down(wire)
    orch = core()
    orch.add_connection("groq", "openai-compatible", base_url="https://api.groq.com/openai/v1")
    orch.add_connection("desk", "lmstudio", base_url="http://192.0.2.20:1234")
    wire.get("http://192.0.2.20:1234/api/v1/models").respond(json={"models": []})
    at = start(SPEND)
    assert not at.exception
    options = at.selectbox(key="budget_scope").options
    assert options[0] == "*" and {"openai", "custom", "groq"} <= set(options)
    assert "desk" not in options and "lmstudio" not in options  # local models cost 0
    at.selectbox(key="budget_scope").set_value("groq")
    at.number_input(key="budget_limit").set_value(5.0)
    at = at.button(key="budget_save").click().run()
    assert not at.exception
    assert [(b.scope, b.limit_usd) for b in orch.pricing.budgets()] == [("groq", 5.0)]
