"""Pure ranking and cooldown policy of fallback.py."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator_core.errors import (
    AuthenticationError,
    BadRequestError,
    ModelLoadError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    should_fall_back,
)
from orchestrator_core.fallback import cooldown_seconds, is_connection_wide, rank_alternatives
from orchestrator_core.types import ModelState, ModelStatus

NOW = datetime.now(UTC)


def status(model_id: str, state: ModelState) -> ModelStatus:
    return ModelStatus(model_id, state, "", NOW, local=not model_id.startswith(("openai", "anthropic", "google")))


STATUSES = [
    status("lmstudio:qwen", ModelState.NOT_LOADED),
    status("lmstudio:llama", ModelState.LOADED),
    status("openai:gpt-4.1-mini", ModelState.EXTERNAL_READY),
    status("anthropic:claude-haiku-4-5", ModelState.EXTERNAL_NO_KEY),
    status("google:gemini-2.5-flash", ModelState.EXTERNAL_READY),
    status("ollama:phi", ModelState.HOST_DOWN),
    status("lmstudio:cool", ModelState.COOLING_DOWN),
]


def test_alternatives_order_hosted_with_key_then_loaded_then_other_local() -> None:
    ranked = rank_alternatives("lmstudio:broken", STATUSES, priorities={}, stats={})
    assert ranked == ["google:gemini-2.5-flash", "openai:gpt-4.1-mini", "lmstudio:llama", "lmstudio:qwen"]


def test_alternatives_never_include_failed_cooling_down_no_key_or_host_down() -> None:
    ranked = rank_alternatives("openai:gpt-4.1-mini", STATUSES, priorities={}, stats={})
    assert "openai:gpt-4.1-mini" not in ranked
    assert not {"lmstudio:cool", "anthropic:claude-haiku-4-5", "ollama:phi"} & set(ranked)


def test_sleeping_ranks_after_loaded_and_failed_unloading_or_downloading_are_never_suggested() -> None:
    statuses = [
        status("llamacpp:cold", ModelState.NOT_LOADED),
        status("llamacpp:asleep", ModelState.SLEEPING),
        status("llamacpp:warm", ModelState.LOADED),
        status("llamacpp:broken", ModelState.LOAD_FAILED),
        status("llamacpp:going", ModelState.UNLOADING),
        status("llamacpp:fetching", ModelState.DOWNLOADING),
    ]
    ranked = rank_alternatives("openai:gpt-4.1-mini", statuses, priorities={}, stats={})
    assert ranked == ["llamacpp:warm", "llamacpp:asleep", "llamacpp:cold"]


def test_ready_and_usable_of_the_host_states() -> None:
    assert {s for s in ModelState if s.ready} == {ModelState.LOADED, ModelState.SLEEPING, ModelState.EXTERNAL_READY}
    assert {s for s in ModelState if s.usable} == {
        ModelState.LOADED, ModelState.SLEEPING, ModelState.EXTERNAL_READY, ModelState.NOT_LOADED, ModelState.LOADING}


def test_priority_breaks_ties_before_success_rate() -> None:
    ranked = rank_alternatives(
        "x:y", STATUSES, priorities={"openai:gpt-4.1-mini": 1, "google:gemini-2.5-flash": 5},
        stats={"google:gemini-2.5-flash": (1.0, 10.0), "openai:gpt-4.1-mini": (0.5, 900.0)},
    )
    assert ranked[:2] == ["openai:gpt-4.1-mini", "google:gemini-2.5-flash"]


def test_success_rate_then_median_latency_break_remaining_ties() -> None:
    ranked = rank_alternatives(
        "x:y", STATUSES, priorities={},
        stats={"google:gemini-2.5-flash": (0.9, 10.0), "openai:gpt-4.1-mini": (0.99, 900.0)},
    )
    assert ranked[0] == "openai:gpt-4.1-mini"
    ranked = rank_alternatives(
        "x:y", STATUSES, priorities={},
        stats={"google:gemini-2.5-flash": (0.9, 900.0), "openai:gpt-4.1-mini": (0.9, 100.0)},
    )
    assert ranked[0] == "openai:gpt-4.1-mini"


def test_excluded_models_and_providers_are_left_out() -> None:
    ranked = rank_alternatives(
        "x:y", STATUSES, priorities={}, stats={}, exclude=["google:gemini-2.5-flash"], exclude_providers=["lmstudio"]
    )
    assert ranked == ["openai:gpt-4.1-mini"]


def test_cooldown_follows_retry_after_and_is_longer_for_quota_and_auth() -> None:
    assert cooldown_seconds(RateLimitError("x", retry_after=17.0), 60) == 17.0
    assert cooldown_seconds(RateLimitError("x"), 60) == 60
    assert cooldown_seconds(QuotaExceededError("x"), 60) == 300
    assert cooldown_seconds(AuthenticationError("x"), 60) == 300
    assert cooldown_seconds(ProviderUnavailableError("x"), 60) == 60


def test_connection_wide_failures() -> None:
    assert is_connection_wide(AuthenticationError("x"), local=False)
    assert is_connection_wide(ProviderUnavailableError("down"), local=True)
    assert not is_connection_wide(ProviderUnavailableError("503"), local=False)
    assert not is_connection_wide(ModelLoadError("oom"), local=True)


def test_caller_errors_never_fall_back() -> None:
    assert not should_fall_back(BadRequestError("bad"))
    assert should_fall_back(RateLimitError("slow down"))
