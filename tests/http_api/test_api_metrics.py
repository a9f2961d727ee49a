"""GET /metrics: Prometheus text with OpenTelemetry GenAI names, behind an admin token or METRICS_PUBLIC."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import prom
from api.app import create_api
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow
from tests.http_api.conftest import LiveServer, Upstream

HELLO = [{"role": "user", "content": "hi"}]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return next((v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls), None)


def test_calls_latency_fallbacks_state_and_cooldowns_are_exported(admin: httpx.Client, upstream: Upstream) -> None:
    admin.post("/v1/chat/completions", json={"model": "custom:dead", "messages": HELLO}).raise_for_status()
    with admin.stream("POST", "/v1/chat/completions",
                      json={"model": "custom:healthy", "messages": HELLO, "stream": True}) as answer:
        answer.read()
    found = samples(admin.get("/metrics").text)
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(found, duration, gen_ai_request_model="custom:dead", gen_ai_response_model="custom:dead",
                 error_type="unavailable", gen_ai_operation_name="chat", gen_ai_provider_name="custom") == 1
    assert value(found, duration, gen_ai_request_model="custom:dead", gen_ai_response_model="custom:healthy",
                 error_type="") == 1
    assert value(found, "orchestrator_fallbacks_total", from_model="custom:dead", to_model="custom:healthy") == 1
    assert value(found, "orchestrator_calls_total", gen_ai_request_model="custom:dead",
                 gen_ai_response_model="custom:dead", outcome="error") == 1
    assert value(found, "gen_ai_client_time_to_first_token_seconds_count",
                 gen_ai_response_model="custom:healthy") == 1
    assert value(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="input",
                 gen_ai_request_model="custom:healthy", gen_ai_response_model="custom:healthy") == 5
    assert value(found, "orchestrator_model_state", model="custom:dead", state="cooling_down") == 1
    assert value(found, "orchestrator_cooldowns_active") == 1
    assert value(found, "orchestrator_metric_rows_queued") is not None


def test_metrics_public_opens_metrics_without_a_token(make_orch: Callable[..., Orchestrator],
                                                      upstream: Upstream) -> None:
    orch = make_orch(metrics_public=True)
    server = LiveServer(create_api(lambda: orch, close=None)).start()
    try:
        answer = httpx.get(f"{server.url}/metrics")
        closed = httpx.get(f"{server.url}/v1/models")
    finally:
        server.stop()
    assert answer.status_code == 200 and "orchestrator_cooldowns_active" in answer.text
    assert closed.status_code == 401  # only /metrics is opened


def test_made_up_model_ids_stop_making_new_series_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prom, "MAX_MODEL_LABELS", 3)
    metrics = prom.GatewayMetrics(lambda: None)  # type: ignore[arg-type,return-value]  # the gauges are not read
    for n in range(50):  # a client inventing ids the host does not have: each one fails
        metrics.observe(MetricRow(model=f"custom:made-up-{n}", outcome="error", latency_ms=1.0,
                                  error_kind="model_not_found"))
    metrics.observe(MetricRow(model="custom:healthy", outcome="ok", latency_ms=1.0, requested_model="custom:nope"))

    totals = [s for s in metrics.calls.collect()[0].samples if s.name == "orchestrator_calls_total"]
    calls: dict[str, float] = {}
    for sample in totals:
        calls[sample.labels["gen_ai_request_model"]] = calls.get(sample.labels["gen_ai_request_model"], 0) + sample.value
    served = {s.labels["gen_ai_response_model"] for s in totals}
    assert calls == {"custom:made-up-0": 1, "custom:made-up-1": 1, "custom:made-up-2": 1, "other": 48}
    assert "custom:healthy" in served  # a model that answered always has its own series
