"""Cost of every call (issue 11): priced from usage on the wire, unknown when unpriced, overrides, budgets, ranking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from genai_prices import Usage as TableUsage
from genai_prices import calc_price
from sqlalchemy import select

from orchestrator_core.errors import AllModelsFailedError, BudgetExceededError, UnknownConnectionError
from orchestrator_core.fallback import rank_alternatives
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.pricing import Price, PriceBook
from orchestrator_core.store.tables import CallMetric
from orchestrator_core.types import ModelState, ModelStatus, Usage
from tests.helpers import ANTHROPIC, GOOGLE, LMSTUDIO, OPENAI, lmstudio_models, other_hosts_down, settings, sse_response

HELLO = [{"role": "user", "content": "Say hello"}]
KEYS = {"openai": "sk-test-openai-0123456789abcdef", "anthropic": "sk-ant-test-0123456789abcdef",
        "google": "AIza-test-0123456789abcdef"}


@pytest.fixture
def wire() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        other_hosts_down(router)
        router.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True}))
        yield router


@pytest.fixture
def orch(db_url: str, wire: respx.MockRouter) -> Iterator[Orchestrator]:
    o = Orchestrator.from_settings(settings(db_url, env_keys=KEYS))
    yield o
    o.close()


def rows(orch: Orchestrator) -> list[CallMetric]:
    orch.metrics.flush()
    with orch.db.session() as s:
        found = list(s.scalars(select(CallMetric).order_by(CallMetric.id)))
        s.expunge_all()
    return found


def table_cost(model: str, provider: str, prompt: int, completion: int, cached: int = 0) -> float:
    """The price genai-prices itself computes (its own calc_price, not this project's arithmetic)."""
    usage = TableUsage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached)
    return float(calc_price(usage, model, provider_id=provider).total_price)


# -- wire answers with usage ------------------------------------------------------------------------
def openai_answer(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def openai_stream(prompt: int, completion: int) -> httpx.Response:
    return sse_response({"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
                        {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                        {"model": "gpt-4o-mini", "choices": [],
                         "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}, "[DONE]")


def anthropic_answer(prompt: int, completion: int) -> dict[str, Any]:
    return {"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": prompt, "output_tokens": completion}}


def anthropic_stream(prompt: int, completion: int) -> httpx.Response:
    events = [
        ("message_start", {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "content": [],
                                                                "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": completion}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def gemini_chunk(prompt: int, completion: int, finish: str | None = "STOP") -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion}}


# -- priced from usage ------------------------------------------------------------------------------
def test_openai_plain_and_streamed_calls_are_priced_from_their_usage(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    route = wire.post(f"{OPENAI}/chat/completions")
    route.side_effect = [httpx.Response(200, json=openai_answer(1200, 300, cached=1000)), openai_stream(900, 40)]
    plain = orch.chat("openai:gpt-4o-mini", HELLO)
    stream = orch.stream_chat("openai:gpt-4o-mini", HELLO)
    assert "".join(stream) == "Hi"
    assert stream.result is not None
    assert plain.cost_usd == pytest.approx(table_cost("gpt-4o-mini", "openai", 1200, 300, cached=1000))
    assert stream.result.cost_usd == pytest.approx(table_cost("gpt-4o-mini", "openai", 900, 40))
    stored = rows(orch)
    assert [r.cost_usd for r in stored] == pytest.approx([plain.cost_usd, stream.result.cost_usd])
    assert [r.streamed for r in stored] == [False, True]
    assert stored[0].input_cost_usd + stored[0].output_cost_usd == pytest.approx(stored[0].cost_usd)
    assert stored[0].price_source == "genai-prices 0.2.3"


def test_anthropic_plain_and_streamed_calls_are_priced_from_their_usage(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    route = wire.post(f"{ANTHROPIC}/v1/messages")
    route.side_effect = [httpx.Response(200, json=anthropic_answer(2000, 500)), anthropic_stream(800, 60)]
    plain = orch.chat("anthropic:claude-sonnet-4-5", HELLO)
    stream = orch.stream_chat("anthropic:claude-sonnet-4-5", HELLO)
    assert "".join(stream) == "Hi" and stream.result is not None
    assert plain.cost_usd == pytest.approx(table_cost("claude-sonnet-4-5", "anthropic", 2000, 500))
    assert stream.result.cost_usd == pytest.approx(table_cost("claude-sonnet-4-5", "anthropic", 800, 60))
    assert [r.cost_usd for r in rows(orch)] == pytest.approx([plain.cost_usd, stream.result.cost_usd])


def test_gemini_plain_and_streamed_calls_are_priced_from_their_usage(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    wire.post(f"{GOOGLE}/v1/models/gemini-2.5-flash:generateContent").respond(json=gemini_chunk(3000, 700))
    wire.post(f"{GOOGLE}/v1/models/gemini-2.5-flash:streamGenerateContent").mock(return_value=sse_response(
        gemini_chunk(400, 0, finish=None), gemini_chunk(400, 90), newline="\r\n"))
    plain = orch.chat("google:gemini-2.5-flash", HELLO)
    stream = orch.stream_chat("google:gemini-2.5-flash", HELLO)
    assert "".join(stream) == "HiHi" and stream.result is not None
    assert plain.cost_usd == pytest.approx(table_cost("gemini-2.5-flash", "google", 3000, 700))
    assert stream.result.cost_usd == pytest.approx(table_cost("gemini-2.5-flash", "google", 400, 90))
    assert [r.cost_usd for r in rows(orch)] == pytest.approx([plain.cost_usd, stream.result.cost_usd])


def test_tiered_table_price_applies_the_tier_the_prompt_reaches() -> None:
    book = PriceBook(dict)
    small, large = Usage(100_000, 1000), Usage(300_000, 1000)  # gemini-2.5-pro costs more past 200k input tokens
    for usage in (small, large):
        cost = book.cost("google:gemini-2.5-pro", usage)
        assert cost is not None
        expected = table_cost("gemini-2.5-pro", "google", usage.prompt_tokens or 0, usage.completion_tokens or 0)
        assert cost.total_usd == pytest.approx(expected)


# -- unknown is not zero ----------------------------------------------------------------------------
def test_unpriced_model_is_recorded_as_unknown_not_zero(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(100, 10, cached=0))
    result = orch.chat("openai:house-model-nobody-prices", HELLO)
    assert result.cost_usd is None
    row = rows(orch)[0]
    assert (row.prompt_tokens, row.cost_usd, row.input_cost_usd, row.price_source) == (100, None, None, None)
    assert "openai:house-model-nobody-prices" in orch.unpriced_models(["openai:house-model-nobody-prices",
                                                                       "openai:gpt-4o-mini", "lmstudio:qwen"])
    assert orch.unpriced_models(["openai:gpt-4o-mini", "lmstudio:qwen"]) == []


def test_call_that_reports_no_usage_is_cost_unknown(orch: Orchestrator, wire: respx.MockRouter) -> None:
    answer = openai_answer(1, 1, 0)
    del answer["usage"]
    wire.post(f"{OPENAI}/chat/completions").respond(json=answer)
    assert orch.chat("openai:gpt-4o-mini", HELLO).cost_usd is None
    assert rows(orch)[0].cost_usd is None


def test_local_model_costs_zero(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(json={**openai_answer(50, 5, 0), "model": "qwen"})
    result = orch.chat("lmstudio:qwen", HELLO)
    assert result.cost_usd == 0.0
    assert rows(orch)[0].price_source == "local"


# -- overrides --------------------------------------------------------------------------------------
def test_override_beats_the_table(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(1_000_000, 500_000, cached=400_000))
    orch.pricing.set_override("openai:gpt-4o-mini", 2.0, 8.0, cached_input_per_mtok=0.5)
    result = orch.chat("openai:gpt-4o-mini", HELLO)
    assert result.cost_usd == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)
    assert rows(orch)[0].price_source == "override"
    orch.pricing.remove_override("openai:gpt-4o-mini")
    again = orch.chat("openai:gpt-4o-mini", HELLO)
    assert again.cost_usd == pytest.approx(table_cost("gpt-4o-mini", "openai", 1_000_000, 500_000, 400_000))


def test_connection_override_prices_every_model_of_it_and_a_model_override_wins(orch: Orchestrator) -> None:
    orch.pricing.set_override("custom:*", 1.0, 1.0)
    orch.pricing.set_override("custom:big", 10.0, 10.0)
    usage = Usage(1_000_000, 0)
    assert orch.prices.cost("custom:small", usage) == orch.prices.cost("custom:other", usage)
    small, big = orch.prices.cost("custom:small", usage), orch.prices.cost("custom:big", usage)
    assert small is not None and big is not None and (small.total_usd, big.total_usd) == (1.0, 10.0)


def test_fallback_answer_records_what_the_requested_model_would_have_charged(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(429, json={"error": {"message": "slow down"}})
    wire.post(f"{ANTHROPIC}/v1/messages").respond(json=anthropic_answer(1000, 100))
    orch.registry.add("anthropic:claude-3-5-haiku", priority=1)
    result = orch.chat("openai:gpt-4o", HELLO)
    assert result.model_id == "anthropic:claude-3-5-haiku"
    answer = rows(orch)[-1]
    assert answer.cost_usd == pytest.approx(table_cost("claude-3-5-haiku", "anthropic", 1000, 100))
    assert answer.requested_cost_usd == pytest.approx(table_cost("gpt-4o", "openai", 1000, 100))


# -- budgets ----------------------------------------------------------------------------------------
CROSS_BUDGET = textwrap.dedent("""
    import sys, respx
    from orchestrator_core.orchestrator import Orchestrator
    from tests.helpers import OPENAI, other_hosts_down, settings
    from tests.test_cost import KEYS, openai_answer
    with respx.mock(assert_all_called=False) as wire:
        other_hosts_down(wire)
        wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(1_000_000, 1_000_000, cached=0))
        with Orchestrator.from_settings(settings(sys.argv[1], env_keys=KEYS)) as orch:
            print(orch.chat("openai:gpt-4o-mini", [{"role": "user", "content": "hi"}]).cost_usd)
""")


def test_budget_crossed_in_one_process_refuses_calls_in_another(
    orch: Orchestrator, wire: respx.MockRouter, db_url: str
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(10, 10, cached=0))
    orch.pricing.set_budget("openai", "month", 0.5)
    orch.chat("openai:gpt-4o-mini", HELLO)  # under budget: this process has read the budgets and the spend
    root = Path(__file__).resolve().parent.parent
    other = subprocess.run([sys.executable, "-c", CROSS_BUDGET, db_url], cwd=root, capture_output=True, text=True,
                           timeout=120, check=False)
    assert other.returncode == 0, other.stderr
    assert float(other.stdout.strip()) > 0.5  # that one call spent the whole budget
    with pytest.raises(BudgetExceededError, match="monthly budget of connection 'openai'") as refused:
        orch.chat("openai:gpt-4o-mini", HELLO)
    assert refused.value.http_status == 402 and refused.value.limit_usd == 0.5
    assert wire.routes[-1].call_count == 1  # the refused call sent nothing


def test_spent_budget_makes_fallback_skip_that_connection(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{ANTHROPIC}/v1/messages").respond(529, json={"error": {"message": "overloaded"}})
    openai = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(10, 10, cached=0))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(json={**openai_answer(5, 5, 0), "model": "qwen"})
    orch.registry.add("openai:gpt-4o-mini", priority=1)  # hosted and first in priority: fallback's first pick
    orch.registry.add("lmstudio:qwen", priority=50)
    orch.pricing.set_override("openai:*", 1e6, 1e6)  # any call spends a fortune
    orch.pricing.set_budget("openai", "day", 1.0)
    orch.chat("openai:gpt-4o-mini", HELLO)
    rows(orch)  # written: the spend is in the rollups
    result = orch.chat("anthropic:claude-sonnet-4-5", HELLO)
    assert result.model_id == "lmstudio:qwen"
    assert openai.call_count == 1  # the fallback did not pick the over-budget connection
    assert result.cost_usd == 0.0


def test_the_alternatives_verb_leaves_out_a_spent_connection_as_a_call_does(orch: Orchestrator,
                                                                            wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(10, 10, cached=0))
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json={"models": []})
    orch.registry.add("openai:gpt-4o-mini", priority=1)
    orch.registry.add("lmstudio:qwen", priority=50)
    assert "openai:gpt-4o-mini" in orch.alternatives("anthropic:claude-sonnet-4-5")
    orch.pricing.set_override("openai:*", 1e6, 1e6)
    orch.pricing.set_budget("openai", "day", 1.0)
    orch.chat("openai:gpt-4o-mini", HELLO)
    rows(orch)
    assert "openai:gpt-4o-mini" not in orch.alternatives("anthropic:claude-sonnet-4-5")  # what /alternative shows


def test_budget_status_warns_past_80_percent(orch: Orchestrator, wire: respx.MockRouter) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(1_000_000, 0, cached=0))
    orch.pricing.set_override("openai:gpt-4o-mini", 0.85, 0.0)
    orch.pricing.set_budget("*", "month", 1.0)
    orch.chat("openai:gpt-4o-mini", HELLO)
    rows(orch)
    (status,) = orch.budgets.statuses()
    assert (status.scope, status.state) == ("*", "warning") and status.spent_usd == pytest.approx(0.85)


# -- ranking ----------------------------------------------------------------------------------------
def _ready(model_id: str) -> ModelStatus:
    return ModelStatus(model_id, ModelState.EXTERNAL_READY, "", datetime.now(UTC))


def test_cost_ranking_chooses_the_cheaper_of_two_alternatives() -> None:
    statuses = [_ready("openai:gpt-4o"), _ready("openai:gpt-4o-mini")]
    priorities = {"openai:gpt-4o": 1, "openai:gpt-4o-mini": 2}  # priority alone picks the dearer one
    book = PriceBook(dict)

    def cost_of(model_id: str) -> float | None:
        return book.estimate(model_id, 2000, 256)

    by_priority = rank_alternatives("anthropic:x", statuses, priorities=priorities, stats={})
    by_cost = rank_alternatives("anthropic:x", statuses, priorities=priorities, stats={}, cost_of=cost_of)
    assert by_priority[0] == "openai:gpt-4o" and by_cost[0] == "openai:gpt-4o-mini"


def test_cost_ranking_puts_unpriced_models_after_priced_ones_of_their_tier() -> None:
    statuses = [_ready("custom:mystery"), _ready("openai:gpt-4o")]
    ranked = rank_alternatives("x:y", statuses, priorities={"custom:mystery": 1}, stats={},
                               cost_of=lambda m: None if m.startswith("custom") else 0.01)
    assert ranked == ["openai:gpt-4o", "custom:mystery"]


def _only(orch: Orchestrator, priorities: dict[str, int]) -> None:
    """Exactly these models registered and active, with these priorities (the seeds switched off)."""
    for entry in orch.registry.list():
        if entry.model_id not in priorities:
            orch.registry.set_active(entry.model_id, False)
    for model_id, priority in priorities.items():
        if orch.registry.get(model_id) is None:
            orch.registry.add(model_id, priority=priority)
        orch.registry.set_priority(model_id, priority)


def test_ranking_cost_setting_makes_fallback_pick_the_cheaper_model(db_url: str, wire: respx.MockRouter) -> None:
    wire.post(f"{ANTHROPIC}/v1/messages").respond(529, json={"error": {"message": "overloaded"}})
    wire.post(f"{GOOGLE}/v1/models/gemini-2.5-pro:generateContent").respond(json=gemini_chunk(10, 10))
    wire.post(f"{GOOGLE}/v1/models/gemini-2.5-flash:generateContent").respond(json=gemini_chunk(10, 10))
    chosen = {}
    for ranking in ("cost", "priority"):
        with Orchestrator.from_settings(settings(db_url, env_keys=KEYS, ranking=ranking, local_hosts=())) as orch:
            _only(orch, {"anthropic:claude-sonnet-4-5": 0, "google:gemini-2.5-pro": 1, "google:gemini-2.5-flash": 2})
            chosen[ranking] = orch.chat("anthropic:claude-sonnet-4-5", HELLO).model_id
    assert chosen == {"cost": "google:gemini-2.5-flash", "priority": "google:gemini-2.5-pro"}


def test_price_table_is_the_bundled_one_and_never_updates_itself() -> None:
    from genai_prices import data_snapshot, update_prices

    book = PriceBook(dict)
    assert book.price("openai:gpt-4o-mini") is not None
    assert update_prices._shared_updater.ref_count == 0  # no UpdatePrices started: nothing downloads
    assert data_snapshot._custom_snapshot is None
    assert isinstance(Price.per_mtok(1, 2, None, "override").cost(Usage(1, 1)).total_usd, float)  # type: ignore[union-attr]
    assert Decimal(str(table_cost("gpt-4o-mini", "openai", 1_000_000, 0))) == Decimal("0.15")


def test_budget_check_sums_spend_again_only_after_spend_or_budgets_changed(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    from sqlalchemy import event

    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(10, 10, cached=0))
    orch.pricing.set_budget("openai", "month", 100.0)
    spend_queries: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "cost_usd_sum" in statement and "SELECT" in statement.upper():
            spend_queries.append(statement)

    event.listen(orch.db.engine, "before_cursor_execute", seen)
    try:
        for _ in range(50):
            orch.budgets.check("openai", "openai:gpt-4o-mini", local=False)
        assert len(spend_queries) == 2  # month and day, read once for 50 checks
        orch.chat("openai:gpt-4o-mini", HELLO)
        orch.metrics.flush()  # a costed row committed: the spend generation moved
        orch.budgets.check("openai", "openai:gpt-4o-mini", local=False)
        assert len(spend_queries) == 4
    finally:
        event.remove(orch.db.engine, "before_cursor_execute", seen)


# -- connections (issue 10): priced by kind, budgets by connection name ----------------------------------
def test_a_connection_is_priced_by_its_kind_not_by_its_name(orch: Orchestrator) -> None:
    orch.add_connection("groq", "openai-compatible", base_url="https://api.groq.com/openai/v1")
    orch.add_connection("work", "openai")
    orch.add_connection("desk", "lmstudio", base_url="http://192.0.2.20:1234")
    assert orch.prices.price("groq:gpt-4o-mini") is None  # an openai-compatible service is not OpenAI
    work, openai = orch.prices.price("work:gpt-4o-mini"), orch.prices.price("openai:gpt-4o-mini")
    assert work is not None and work == openai  # a second OpenAI account pays OpenAI's prices
    desk = orch.prices.price("desk:qwen")
    assert desk is not None and desk.source == "local"
    orch.pricing.set_override("groq:*", 0.5, 1.0)
    groq = orch.prices.price("groq:gpt-4o-mini")
    assert groq is not None and groq.source == "override"


def test_spent_overall_budget_keeps_fallback_off_every_hosted_connection_also_added_ones(
    orch: Orchestrator, wire: respx.MockRouter
) -> None:
    wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer(10, 10, cached=0))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(503, json={"error": {"message": "busy"}})
    orch.add_connection("work", "openai", key="sk-test-work-0123456789abcdef")
    orch.registry.add("work:gpt-4o-mini", priority=1)  # hosted and first in priority: fallback's first pick
    orch.registry.add("lmstudio:qwen", priority=50)
    orch.pricing.set_override("openai:*", 1e6, 1e6)
    orch.pricing.set_budget("*", "day", 1.0)
    orch.chat("openai:gpt-4o-mini", HELLO)  # spends the overall budget
    rows(orch)
    with pytest.raises(AllModelsFailedError) as failed:
        orch.chat("lmstudio:qwen", HELLO)  # local: never refused; its fallbacks would all be hosted
    tried = [a.model for a in failed.value.attempts]
    assert tried[0] == "lmstudio:qwen"
    assert not [m for m in tried if not m.startswith("lmstudio:")]  # no hosted one tried, not even skipped


def test_a_budget_on_an_unknown_connection_is_refused_and_one_on_an_added_connection_is_kept(
    orch: Orchestrator,
) -> None:
    with pytest.raises(UnknownConnectionError, match="opneai"):
        orch.set_budget("opneai", "month", 10.0)  # misspelt: it would never be spent
    orch.add_connection("groq", "openai-compatible", base_url="https://api.groq.com/openai/v1")
    orch.set_budget("Groq", "day", 2.0)
    orch.set_budget("*", "month", 50.0)
    assert {(b.scope, b.period) for b in orch.pricing.budgets()} == {("groq", "day"), ("*", "month")}
