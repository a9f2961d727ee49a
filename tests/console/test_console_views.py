"""Streamlit-free shaping of core data: icons, table rows, captions, notices, time ranges, CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from console import costs, views
from orchestrator_core.errors import AllModelsFailedError, ModelLoadError
from orchestrator_core.loader import HostStatus
from orchestrator_core.store.keys import KeyInfo
from orchestrator_core.store.metrics import ModelStats
from orchestrator_core.types import (
    Attempt,
    ChatResult,
    KeyCheck,
    ModelFacts,
    ModelState,
    ModelStatus,
    OrchestratedResult,
    Usage,
)

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    model_id: str
    provider: str
    active: bool = True
    priority: int = 100
    source: str = "user"


def status(model_id: str, state: ModelState, detail: str = "", **kw: object) -> ModelStatus:
    return ModelStatus(model_id, state, detail, NOW, **kw)  # type: ignore[arg-type]


def result(model_id: str, requested: str, attempts: tuple[Attempt, ...], ttft: float | None = 120.0) -> OrchestratedResult:
    chat = ChatResult("hi", "stop", Usage(7, 3), model_id.partition(":")[2], model_id.partition(":")[0])
    return OrchestratedResult(chat, model_id, requested, attempts, 812.4, ttft, "req-1")


def test_every_model_state_has_the_icon_the_issue_names() -> None:
    expected = {ModelState.EXTERNAL_READY: "🌐", ModelState.LOADED: "✅", ModelState.LOADING: "🔄",
                ModelState.NOT_LOADED: "💤", ModelState.COOLING_DOWN: "⏸️", ModelState.HOST_DOWN: "❌",
                ModelState.EXTERNAL_NO_KEY: "❌", ModelState.SLEEPING: "😴", ModelState.DOWNLOADING: "⬇️",
                ModelState.UNLOADING: "⏏️", ModelState.LOAD_FAILED: "⛔", ModelState.EXTERNAL_KEY_REJECTED: "🚫"}
    assert {s: views.state_icon(s) for s in ModelState} == expected
    assert set(views.STATE_WORDS) == set(ModelState)
    until = NOW + timedelta(minutes=5)
    text = views.state_text(status("openai:x", ModelState.COOLING_DOWN, cooldown_until=until))
    assert text == f"⏸️ cooling down until {views.clock_time(until)}"


def test_state_text_names_the_new_host_states_and_the_percent() -> None:
    assert views.state_text(status("llamacpp:a", ModelState.LOAD_FAILED, "exit code 1")) == "⛔ load failed"
    assert views.state_text(status("llamacpp:a", ModelState.UNLOADING)) == "⏏️ unloading"
    assert views.state_text(status("llamacpp:a", ModelState.SLEEPING)) == "😴 sleeping (wakes on request)"
    assert views.state_text(status("llamacpp:a", ModelState.LOADING, progress=42.4)) == "🔄 loading 42%"
    assert views.state_text(status("llamacpp:a", ModelState.DOWNLOADING, progress=7.0)) == "⬇️ downloading 7%"


def test_a_failed_load_counts_as_unavailable_in_the_overview() -> None:
    counts = views.state_counts([status("llamacpp:a", ModelState.LOAD_FAILED),
                                 status("llamacpp:b", ModelState.SLEEPING)])
    assert (counts["unavailable"], counts["ready"]) == (1, 1)


def test_model_rows_merge_status_registry_and_call_stats() -> None:
    statuses = [status("openai:gpt", ModelState.EXTERNAL_READY, "key configured"),
                status("lmstudio:qwen", ModelState.COOLING_DOWN, "unavailable", cooldown_until=NOW, local=True)]
    entries = [Entry("lmstudio:qwen", "lmstudio", priority=50, source="discovered"), Entry("openai:gpt", "openai"),
               Entry("mistral:small", "mistral", active=False)]
    stats = {"openai:gpt": ModelStats("openai:gpt", 10, 9, 1, 0.9, 200.0, 950.26, 200.0, "rate_limit", "slow down",
                                      NOW, NOW)}
    rows = views.model_rows(statuses, entries, stats)
    assert [r["Model"] for r in rows] == ["lmstudio:qwen", "openai:gpt", "mistral:small"]  # active by priority
    qwen, gpt, small = rows
    assert qwen["State"].startswith("⏸️ cooling down") and qwen["Cooldown until"] != "—" and qwen["Calls"] == 0
    assert (gpt["Calls"], gpt["Success"], gpt["p95 ms"]) == (10, "90%", "950")
    assert gpt["Last error"] == f"rate_limit at {views.clock_time(NOW)}"  # the whole message is in model_detail
    assert small["State"] == views.INACTIVE and small["Success"] == "—" and small["p50 ms"] == "—"


def test_model_detail_has_the_long_texts_and_dashes_for_missing_ones() -> None:
    entry = Entry("openai:gpt", "openai")
    stat = ModelStats("openai:gpt", 10, 9, 1, 0.9, 200.0, 950.26, 200.0, "rate_limit", "slow down", NOW, NOW)
    detail = dict(views.model_detail(status("openai:gpt", ModelState.EXTERNAL_READY, "key configured"), entry, stat))
    assert detail["Provider"] == "OpenAI" and detail["Detail"] == "key configured"
    assert detail["Last error"].startswith("rate_limit at ") and detail["Last error"].endswith(": slow down")
    assert detail["Cooldown until"] == "—"
    assert dict(views.model_detail(None, entry, None))["Last call"] == "—"


def test_grouped_puts_local_connections_first_and_keeps_each_group_together() -> None:
    statuses = {m.model_id: m for m in [
        status("openai:a", ModelState.EXTERNAL_READY), status("lmstudio:x", ModelState.LOADED, local=True),
        status("anthropic:b", ModelState.EXTERNAL_READY), status("openai:c", ModelState.EXTERNAL_READY),
        status("ollama:y", ModelState.NOT_LOADED, local=True), status("lmstudio:z", ModelState.LOADED, local=True)]}
    assert views.grouped(statuses) == ["lmstudio:x", "lmstudio:z", "ollama:y", "anthropic:b", "openai:a", "openai:c"]


def test_state_counts_for_the_overview() -> None:
    counts = views.state_counts([status("a:1", ModelState.LOADED), status("b:1", ModelState.EXTERNAL_READY),
                                 status("c:1", ModelState.COOLING_DOWN), status("d:1", ModelState.EXTERNAL_NO_KEY),
                                 status("e:1", ModelState.NOT_LOADED)])
    assert counts == {"total": 5, "ready": 2, "loaded": 1, "cooling": 1, "unavailable": 1}


def test_resolve_range_presets_end_now_and_custom_spans_whole_local_days() -> None:
    now = 1_800_000_000.0
    assert views.resolve_range("Last hour", now) == views.TimeRange(now - 3600, now)
    assert views.resolve_range("Last 7 days", now).span_s == 7 * 86400
    custom = views.resolve_range("Custom", now, (date(2026, 3, 2), date(2026, 3, 1)))
    start = datetime.fromtimestamp(custom.since).astimezone()
    assert (start.date(), start.hour, start.minute) == (date(2026, 3, 1), 0, 0)
    assert datetime.fromtimestamp(custom.until).astimezone().date() == date(2026, 3, 3)
    assert views.resolve_range("Custom", now, ()).span_s == 86400  # a half-picked range falls back to a day


@pytest.mark.parametrize(("span", "bucket"), [(3600, 60), (86400, 1800), (7 * 86400, 3 * 3600), (10, 10),
                                              (400 * 86400, 86400)])
def test_bucket_size_is_round_and_gives_about_sixty_points(span: float, bucket: int) -> None:
    assert views.bucket_seconds(span) == bucket


def test_csv_has_a_header_an_iso_time_column_and_every_row() -> None:
    rows = [{"id": 1, "ts": 0.0, "model": "openai:x", "outcome": "ok"},
            {"id": 2, "ts": 60.0, "model": "lmstudio:q", "outcome": "error", "extra": "ignored"}]
    text = views.csv_text(rows, ["id", "ts", "model", "outcome"])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "id,ts,time_utc,model,outcome"
    assert [(r["id"], r["time_utc"], r["outcome"]) for r in parsed] == [
        ("1", "1970-01-01T00:00:00+00:00", "ok"), ("2", "1970-01-01T00:01:00+00:00", "error")]


def test_answer_caption_names_model_latency_first_token_tokens_and_fallback_path() -> None:
    direct = result("openai:gpt", "openai:gpt", (Attempt("openai:gpt", "ok", 800.0),))
    assert views.answer_caption(direct) == ("answered by openai:gpt · 812 ms · first token 120 ms · tokens 7 in / 3 out"
                                            " · cost unknown")
    attempts = (Attempt("lmstudio:q", "error", 5.0, "unavailable", "Cannot reach lmstudio"),
                Attempt("openai:gpt", "ok", 800.0, fallback_from="lmstudio:q"))
    fell = result("openai:gpt", "lmstudio:q", attempts, ttft=None)
    assert views.answer_caption(fell).endswith("fallback lmstudio:q → openai:gpt")
    assert "first token" not in views.answer_caption(fell)
    assert views.fallback_notice(fell) == ("lmstudio:q could not answer (lmstudio:q: Cannot reach lmstudio). "
                                           "openai:gpt answered instead.")


def test_answer_caption_shows_the_cost_and_the_failed_attempts_cost_never_zero_for_unknown() -> None:
    attempts = (Attempt("openai:a", "error", 5.0, "bad_response", "cut", cost_usd=0.0021),
                Attempt("openai:b", "ok", 800.0, fallback_from="openai:a", cost_usd=0.000435))
    caption = views.answer_caption(result("openai:b", "openai:a", attempts))
    assert "cost $0.000435 (+ $0.0021 for the failed attempts before it)" in caption
    assert costs.usd(None) == "unknown" and costs.usd(0.0) == "$0" and costs.usd(12.5) == "$12.50"


def test_failure_notice_says_why_and_names_the_alternative() -> None:
    load = ModelLoadError("lmstudio:q could not be loaded: out of memory", model="lmstudio:q")
    assert views.failure_notice("lmstudio:q", load, "openai:gpt") == (
        "lmstudio:q failed: lmstudio:q could not be loaded: out of memory Suggested instead: openai:gpt.")
    every = AllModelsFailedError([Attempt("a:1", "error", 1.0, "timeout", "too slow")])
    text = views.failure_notice("a:1", every, None)
    assert text.startswith("No model could answer (a:1: too slow).") and "No other model is usable" in text


def test_key_rows_show_only_the_mask_and_the_last_test() -> None:
    tested = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    keys = [KeyInfo(1, "openai", "work", "••••cdef", "stored", last_tested_at=tested,
                    last_test_status=KeyCheck.REJECTED, last_test_detail="401", last_test_latency_ms=88.04),
            KeyInfo("env:mistral", "mistral", "MISTRAL_API_KEY", "••••1234", "env")]
    rows = views.key_rows(keys)
    assert rows[0]["Key"] == "••••cdef" and rows[0]["Last test"] == "❌ rejected" and rows[0]["Latency ms"] == "88"
    assert rows[1]["Source"] == "environment (read-only)" and rows[1]["Last test"] == "not tested"
    assert views.key_option(keys[1]) == "mistral · MISTRAL_API_KEY · ••••1234 (environment)"
    summary = {r["Provider"]: r["Keys"] for r in views.provider_key_rows(keys)}
    assert summary["OpenAI"] == "✅ 1 key (stored)" and summary["Mistral"] == "✅ 1 key (environment)"
    assert summary["Anthropic"].startswith("➕ none: add one on the API keys page")


def test_next_steps_guide_a_newcomer_and_vanish_once_ready() -> None:
    down = HostStatus("lmstudio", "LM Studio", "http://127.0.0.1:1234", False, "refused", 0, 0, NOW)
    up = HostStatus("lmstudio", "LM Studio", "http://127.0.0.1:1234", True, "1 models", 1, 1, NOW)
    no_key = [status("openai:gpt", ModelState.EXTERNAL_NO_KEY)]
    steps = views.next_steps([down], [], no_key)
    assert "start LM Studio and its local server" in steps[0][0] and "Add one on the API keys page" in steps[1][0]
    assert "No model is usable" in steps[2][0]
    assert [link for _, link in steps] == ["connections", "keys", "models"]  # the steps are links to their pages
    key = KeyInfo(1, "openai", "default", "••••cdef", "stored")
    assert views.next_steps([up], [key], [status("lmstudio:q", ModelState.LOADED)]) == []
    assert views.host_line(up) == "🟢 LM Studio: 1 loaded of 1" and views.host_line(down).startswith("🔴")
    assert views.host_line(down, seen_up=False) == "⚪ LM Studio: not running (never seen up)"


def test_probe_hint_names_the_hosts_never_seen_up_and_the_local_hosts_line_to_set() -> None:
    def host(provider: str, name: str, up: bool) -> HostStatus:
        return HostStatus(provider, name, "http://127.0.0.1:1", up, "", 0, 0, NOW)

    hosts = [host("lmstudio", "LM Studio", True), host("ollama", "Ollama", False), host("llamacpp", "llama.cpp", False)]
    hint = views.probe_hint(hosts, {"lmstudio", "llamacpp"})
    assert hint is not None and hint.startswith("Ollama never answered here") and "LOCAL_HOSTS=lmstudio,llamacpp" in hint
    assert views.probe_hint(hosts, {"lmstudio", "ollama", "llamacpp"}) is None
    assert views.probe_hint(hosts[1:], set()) is None  # none ever up: Getting started says what to start


def test_picker_status_gives_the_state_and_reason_beside_a_plain_id_picker() -> None:
    text = views.picker_status(status("lmstudio:qwen", ModelState.HOST_DOWN, "Cannot reach lmstudio"))
    assert text == "❌ host down — Cannot reach lmstudio"
    assert views.picker_status(None) == "❔ status unknown"
    assert views.picker_status(status("lmstudio:q", ModelState.LOADED, "loaded")) == "✅ loaded"  # said once


def test_default_model_is_last_used_then_loaded_local_then_hosted_with_a_tested_key() -> None:
    statuses = {s.model_id: s for s in [
        status("openai:gpt", ModelState.EXTERNAL_READY), status("mistral:small", ModelState.EXTERNAL_READY),
        status("lmstudio:qwen", ModelState.LOADED, local=True), status("ollama:llama", ModelState.NOT_LOADED, local=True),
        status("google:flash", ModelState.EXTERNAL_KEY_REJECTED)]}
    assert views.default_model(statuses, "ollama:llama", ["mistral"]) == "ollama:llama"
    assert views.default_model(statuses, "google:flash", ["mistral"]) == "lmstudio:qwen"  # last used cannot answer
    del statuses["lmstudio:qwen"]
    assert views.default_model(statuses, None, ["mistral"]) == "mistral:small"  # its key tested OK
    assert views.default_model(statuses, None, []) == "openai:gpt"


def test_the_load_label_shows_one_clock() -> None:
    assert views.load_label("lmstudio:q", 1.1, "loading for 3s") == views.plain("Loading lmstudio:q… 1.1 s")
    assert views.load_label("llamacpp:t", 2.0, "loading 40%") == views.plain("Loading llamacpp:t… 2.0 s — loading 40%")


def test_model_facts_read_like_lm_studios_model_list() -> None:
    facts = ModelFacts(size_bytes=4_680_000_000, context_length=8192, max_context_length=32768,
                       memory_bytes=5_100_000_000)
    assert views.model_facts(facts) == "4.7 GB · context 8,192 of 32,768 · 5.1 GB in memory"
    assert views.model_facts(ModelFacts(size_bytes=274_290_560, max_context_length=2048)) == "274 MB · context 2,048 max"
    assert views.model_facts(None) == views.model_facts(ModelFacts()) == ""
    loaded = status("lmstudio:q", ModelState.LOADED, "loaded", local=True, facts=facts)
    assert views.picker_status(loaded).endswith(views.plain(" · 4.7 GB · context 8,192 of 32,768 · 5.1 GB in memory"))
