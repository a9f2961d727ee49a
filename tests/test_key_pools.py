"""Key pools: several keys per connection; a bad key sits out alone and the call moves to the next key."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import KeyCheck, KeyTestResult, ModelState
from tests.helpers import settings
from tests.standins import StandIn, openai_standin

HELLO = [{"role": "user", "content": "hello"}]
GOOD = "gsk-good-key-0123456789abcdef"
HOT = "gsk-rate-limited-0123456789abcd"  # the stand-in answers 429 with retry-after: 30 for it
OTHER_GOOD = "gsk-good-too-0123456789abcdef"
MODEL = "groq:llama-3.3-70b"


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as o:
        yield o


@pytest.fixture
def groq() -> Iterator[StandIn]:
    with openai_standin(key=GOOD, rate_limited=(HOT,), models=("llama-3.3-70b",), word_delay_s=0) as server:
        yield server


def _pool(orch: Orchestrator, server: StandIn, *keys: str, mode: str = "ordered") -> list[int | str]:
    orch.add_connection("groq", "openai-compatible", base_url=server.base_url, key_mode=mode)
    # The newest key is tried first within a position, so the keys are added last to first.
    ids = [orch.add_key("groq", f"k{i}", key).id for i, key in reversed(list(enumerate(keys)))]
    return ids[::-1]


def test_a_pool_rotates_past_a_rate_limited_key_and_that_key_cools_alone(orch: Orchestrator, groq: StandIn) -> None:
    hot, good = _pool(orch, groq, HOT, GOOD)

    first = orch.chat(MODEL, HELLO, fallback=False)
    second = orch.chat(MODEL, HELLO, fallback=False)
    keys = {k.id: k for k in orch.keys_of("groq")}

    assert [(a.model, a.outcome, a.error_kind) for a in first.attempts] == [
        (MODEL, "error", "rate_limit"), (MODEL, "ok", None)]
    assert "trying the next key of groq" in (first.attempts[0].error or "")
    assert groq.keys_seen == [f"Bearer {HOT}", f"Bearer {GOOD}", f"Bearer {GOOD}"]  # the hot key sits out
    assert [a.outcome for a in second.attempts] == ["ok"]
    assert keys[hot].state == "cooling"
    assert keys[hot].cooling_until == pytest.approx(time.time() + 30, abs=5)  # its retry-after
    assert "Rate limit" in (keys[hot].last_error or "") and HOT not in (keys[hot].last_error or "")
    assert keys[good].state == "ok" and keys[good].last_used_at is not None
    assert orch.cooldowns() == []  # the model itself never cooled down
    assert orch.model_status(MODEL).state is ModelState.EXTERNAL_READY


def test_a_rejected_key_is_skipped_until_it_is_tested_again(orch: Orchestrator, groq: StandIn) -> None:
    wrong, good = _pool(orch, groq, "gsk-revoked-0123456789abcdef", GOOD)

    orch.chat(MODEL, HELLO, fallback=False)
    orch.chat(MODEL, HELLO, fallback=False)
    state_after_calls = {k.id: k.state for k in orch.keys_of("groq")}
    orch.edit_key(wrong, key=OTHER_GOOD)  # replaced: a clean slate
    replaced_state = {k.id: k.state for k in orch.keys_of("groq")}[wrong]

    assert state_after_calls == {wrong: "rejected", good: "ok"}
    assert groq.keys_seen == ["Bearer gsk-revoked-0123456789abcdef", f"Bearer {GOOD}", f"Bearer {GOOD}"]
    assert replaced_state == "untested"


def test_round_robin_takes_the_keys_in_turn(orch: Orchestrator) -> None:
    with openai_standin(key=None, models=("llama-3.3-70b",), word_delay_s=0) as open_server:
        _pool(orch, open_server, GOOD, OTHER_GOOD, mode="round-robin")
        for _ in range(4):
            orch.chat(MODEL, HELLO, fallback=False)
        seen = list(open_server.keys_seen)

    assert seen == [f"Bearer {k}" for k in (GOOD, OTHER_GOOD, GOOD, OTHER_GOOD)]


def test_every_key_cooling_skips_the_connection_without_a_request_and_falls_back(
    orch: Orchestrator, groq: StandIn
) -> None:
    _pool(orch, groq, HOT, "gsk-another-hot-0123456789ab")
    groq._server.rate_limited.add("gsk-another-hot-0123456789ab")  # both keys answer 429
    with openai_standin(models=("deepseek-chat",), word_delay_s=0) as deep:
        orch.add_connection("deepseek", "openai-compatible", base_url=deep.base_url)
        orch.add_model("deepseek:deepseek-chat", priority=5)
        orch.add_model(MODEL, priority=1)
        first = orch.chat(MODEL, HELLO)
        orch.reset_cooldowns()
        sent_before = len(groq.keys_seen)
        second = orch.chat(MODEL, HELLO)

    assert first.model_id == second.model_id == "deepseek:deepseek-chat"
    assert [(a.outcome, a.error_kind) for a in second.attempts] == [("skipped", "no_usable_key"), ("ok", None)]
    assert "every key of groq" in (second.attempts[0].error or "")
    assert len(groq.keys_seen) == sent_before  # no request went to groq
    assert orch.model_status(MODEL).state is ModelState.EXTERNAL_NO_KEY


def test_a_key_out_of_quota_cools_for_an_hour_and_the_next_key_answers(orch: Orchestrator) -> None:
    quota = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                       "code": "insufficient_quota"}}
    orch.add_connection("paid", "openai-compatible", base_url="http://127.0.0.1:9/v1")
    orch.add_key("paid", "funded", "sk-funded-0123456789abcdef")
    broke = orch.add_key("paid", "broke", "sk-broke-0123456789abcdef").id  # the newest: tried first
    with respx.mock() as wire:
        wire.post("http://127.0.0.1:9/v1/chat/completions").mock(side_effect=[
            httpx.Response(429, json=quota),
            httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": "paid for"},
                                                                 "finish_reason": "stop"}]}),
        ])
        result = orch.chat("paid:m", HELLO, fallback=False)
    info = {k.id: k for k in orch.keys_of("paid")}[broke]

    assert result.text == "paid for"
    assert info.state == "exhausted"
    assert info.cooling_until == pytest.approx(time.time() + 3600, abs=60)


def test_the_environment_key_is_a_read_only_member_of_its_kind_s_default_connection(
    db_url: str, groq: StandIn
) -> None:
    s = settings(db_url, local_hosts=(), env_keys={"custom": GOOD}, base_urls={"custom": groq.base_url})
    with Orchestrator.from_settings(s) as orch:
        orch.add_key("custom", "hot", HOT)  # stored keys come first, the env key last
        result = orch.chat("custom:llama-3.3-70b", HELLO, fallback=False)
        env = next(k for k in orch.keys_of("custom") if k.source == "env")

    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert groq.keys_seen == [f"Bearer {HOT}", f"Bearer {GOOD}"]
    assert (env.read_only, env.id, env.state) == (True, "env:custom", "ok")


def test_a_pool_shows_key_rejected_only_once_every_key_of_it_was_rejected(orch: Orchestrator, groq: StandIn) -> None:
    first, second = _pool(orch, groq, GOOD, OTHER_GOOD)
    orch.keys.record_test(first, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 20.0))
    one_rejected = orch.model_status(MODEL, force=True)
    pool_rejected_with_one = orch.keys.rejected("groq")
    orch.keys.record_test(second, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 20.0))
    both_rejected = orch.model_status(MODEL, force=True)

    assert one_rejected.state is ModelState.EXTERNAL_READY and not pool_rejected_with_one  # the other key answers
    assert both_rejected.state is ModelState.EXTERNAL_KEY_REJECTED and not both_rejected.state.ready
    assert "every key of groq was rejected" in both_rejected.detail
    assert orch.keys.rejected("groq") and not orch.keys.rejected("openai")
