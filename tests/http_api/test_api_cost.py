"""The gateway's cost (issue 11): the x-orchestrator-cost-usd header, cost in /metrics, 402 past a budget."""

from __future__ import annotations

import httpx

from orchestrator_core.orchestrator import Orchestrator
from tests.http_api.test_api_metrics import samples, value

HELLO = [{"role": "user", "content": "hi"}]


def test_answer_carries_its_cost_in_a_header_and_metrics_count_it(admin: httpx.Client, orch: Orchestrator) -> None:
    orch.pricing.set_override("custom:healthy", 1e6, 2e6)  # the stand-in reports 5 prompt, 2 completion tokens
    priced = admin.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO})
    unpriced = admin.post("/v1/chat/completions", json={"model": "custom:other", "messages": HELLO})
    assert priced.headers["x-orchestrator-cost-usd"] == "9"
    assert unpriced.headers["x-orchestrator-cost-usd"] == "unknown"  # never "0" for a model nobody priced
    found = samples(admin.get("/metrics").text)
    assert value(found, "orchestrator_cost_usd_total", gen_ai_response_model="custom:healthy",
                 gen_ai_provider_name="custom") == 9.0
    assert value(found, "orchestrator_unpriced_calls_total", gen_ai_response_model="custom:other") == 1.0


def test_spent_budget_is_a_402_naming_the_budget(chat_client: httpx.Client, orch: Orchestrator) -> None:
    orch.pricing.set_override("custom:*", 1e6, 1e6)
    orch.pricing.set_budget("custom", "month", 5.0)
    first = chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO})
    assert first.status_code == 200
    orch.metrics.flush()
    refused = chat_client.post("/v1/chat/completions", json={"model": "custom:healthy", "messages": HELLO})
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert "monthly budget of connection 'custom'" in error["message"]
