"""GET /metrics: Prometheus text, named after the OpenTelemetry GenAI conventions where one fits.

    gen_ai_client_operation_duration_seconds   histogram; gen_ai_request_model, gen_ai_response_model,
                                               gen_ai_provider_name, error_type ("" when it succeeded)
    gen_ai_client_time_to_first_token_seconds  histogram of streamed attempts (measured here, as a client)
    gen_ai_client_token_usage                  histogram; gen_ai_token_type input | output
    orchestrator_calls_total                   attempts by requested model, served model, outcome, error type
    orchestrator_fallbacks_total               fallbacks, from_model -> to_model
    orchestrator_cost_usd_total                USD of priced attempts by requested model, served model, provider
    orchestrator_unpriced_calls_total          answered attempts whose cost is unknown (unpriced, or no usage)
    orchestrator_model_state                   1 for each model's current state (ready, loaded, loading, ...)
    orchestrator_cooldowns_active              models in cooldown now (shared through the database)
    orchestrator_metric_rows_queued            call_metrics rows waiting for the writer thread

Counters see every attempt of this process (pages and API alike): they listen to the metrics recorder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# OTel's advice for gen_ai.client.operation.duration, in seconds.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
# Model ids are label values, and a client names the requested one: every made-up id (custom:x1, custom:x2...)
# that reached a host would be a set of series kept until exit. Past this many distinct ids, a new one that has
# not answered counts as OTHER_MODEL (the call metrics in the database still name it); one that answered is a
# real model and always gets its own series.
MAX_MODEL_LABELS = 1000
OTHER_MODEL = "other"


class GatewayMetrics:
    """One registry per app: counters fed by the recorder, gauges read from the orchestrator at scrape time."""

    def __init__(self, orchestrator: Callable[[], Orchestrator]) -> None:
        self.registry = CollectorRegistry()
        self._attached: set[int] = set()
        self._models: set[str] = set()
        model_labels = ["gen_ai_request_model", "gen_ai_response_model"]
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "Duration of one model attempt (GenAI client operation).",
            ["gen_ai_operation_name", *model_labels, "gen_ai_provider_name", "error_type"],
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.ttft = Histogram(
            "gen_ai_client_time_to_first_token_seconds", "Time to the first streamed token of an attempt.",
            [*model_labels], buckets=TTFT_BUCKETS, registry=self.registry)
        self.tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens per attempt, as the provider reported them.",
            ["gen_ai_operation_name", *model_labels, "gen_ai_token_type"], buckets=TOKEN_BUCKETS,
            registry=self.registry)
        self.calls = Counter("orchestrator_calls", "Model attempts by outcome.",
                             [*model_labels, "outcome", "error_type"], registry=self.registry)
        self.fallbacks = Counter("orchestrator_fallbacks", "Fallbacks from one model to the next.",
                                 ["from_model", "to_model"], registry=self.registry)
        self.cost = Counter("orchestrator_cost_usd", "USD spent by priced attempts (pricing.py).",
                            [*model_labels, "gen_ai_provider_name"], registry=self.registry)
        self.unpriced = Counter("orchestrator_unpriced_calls", "Answered attempts whose cost is unknown.",
                                [*model_labels], registry=self.registry)
        self.registry.register(_StateCollector(orchestrator))

    def attach(self, orch: Orchestrator) -> None:
        """Listen to orch's metric rows (once per orchestrator)."""
        if id(orch) not in self._attached:
            self._attached.add(id(orch))
            orch.metrics.add_listener(self.observe)

    def _model(self, model_id: str, *, answered: bool = False) -> str:
        if model_id in self._models:
            return model_id
        if len(self._models) >= MAX_MODEL_LABELS and not answered:
            return OTHER_MODEL
        self._models.add(model_id)
        return model_id

    def observe(self, row: MetricRow) -> None:
        answered = row.outcome == "ok"
        served = self._model(row.model, answered=answered)
        asked = row.requested_model or row.model
        requested = self._model(asked, answered=answered and asked == row.model)
        error = row.error_kind or ""
        self.calls.labels(requested, served, row.outcome, error).inc()
        if row.fallback_from:
            self.fallbacks.labels(self._model(row.fallback_from), served).inc()
        if row.outcome == "skipped":
            return  # a model in cooldown was not called: no operation to time
        provider = row.provider or row.model.partition(":")[0]
        self.duration.labels("chat", requested, served, provider, error).observe(row.latency_ms / 1000.0)
        if row.ttft_ms is not None:
            self.ttft.labels(requested, served).observe(row.ttft_ms / 1000.0)
        for kind, count in (("input", row.prompt_tokens), ("output", row.completion_tokens)):
            if count is not None:
                self.tokens.labels("chat", requested, served, kind).observe(count)
        if row.cost_usd is not None:
            self.cost.labels(requested, served, provider).inc(row.cost_usd)
        elif row.outcome == "ok":
            self.unpriced.labels(requested, served).inc()

    def render(self) -> bytes:
        """The exposition text (blocking: the state gauge asks the hosts, so call it on a worker thread)."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, orchestrator: Callable[[], Orchestrator]) -> None:
        self._orchestrator = orchestrator

    def collect(self) -> Iterator[GaugeMetricFamily]:
        orch = self._orchestrator()
        state = GaugeMetricFamily("orchestrator_model_state", "1 for the current state of each active model.",
                                  labels=["model", "state"])
        for status in orch.statuses():
            state.add_metric([status.model_id, status.state.value], 1.0)
        yield state
        yield GaugeMetricFamily("orchestrator_cooldowns_active", "Models in cooldown now.",
                                value=orch.active_cooldowns())
        yield GaugeMetricFamily("orchestrator_metric_rows_queued", "call_metrics rows waiting to be written.",
                                value=orch.metrics.queued)
