"""Alternative selection and cooldown policy: pure functions the model manager and orchestrator share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .errors import (
    OrchestratorError,
    RateLimitError,
)
from .types import ModelRef, ModelState, ModelStatus

# Tiers of suggest_alternative: lower is tried first.
TIER_HOSTED_READY = 0
TIER_LOCAL_LOADED = 1
TIER_LOCAL_SLEEPING = 2  # answers without a load, but its first answer waits for the weights to come back
TIER_LOCAL_OTHER = 3


def cooldown_seconds(exc: OrchestratorError, base_s: float) -> float:
    """How long a model sits out after this failure: the error class's cooldown_factor of FAILURE_COOLDOWN_S."""
    if isinstance(exc, RateLimitError) and exc.retry_after:
        return max(exc.retry_after, 1.0)
    return base_s * (exc.cooldown_factor or 1.0)


def cools_down(exc: OrchestratorError) -> bool:
    """False for a refusal or safety block: the prompt was refused, the model itself is fine."""
    return exc.cooldown_factor is not None


def is_connection_wide(exc: OrchestratorError, *, local: bool) -> bool:
    """True when the failure means every model of this connection would fail the same way now."""
    return exc.connection_wide or (local and exc.host_wide)


# The tier each state puts a model in. Not there (never suggested): host down, no key, cooling down; a failed
# load (it would fail again), an unload under way (the user wants it gone), a download (minutes, not a load):
# none of these answers soon.
_TIERS: dict[ModelState, int] = {
    ModelState.EXTERNAL_READY: TIER_HOSTED_READY,
    ModelState.LOADED: TIER_LOCAL_LOADED,
    ModelState.SLEEPING: TIER_LOCAL_SLEEPING,
    ModelState.NOT_LOADED: TIER_LOCAL_OTHER,
    ModelState.LOADING: TIER_LOCAL_OTHER,
}
_NO_STATS = (1.0, float("inf"))


def tier_of(status: ModelStatus) -> int | None:
    """The tier a status puts a model in, or None when it must not be suggested."""
    return _TIERS.get(status.state)


def rank_alternatives(
    failed_model: ModelRef | str,
    statuses: Iterable[ModelStatus],
    *,
    priorities: Mapping[str, int],
    stats: Mapping[str, tuple[float, float]],
    exclude: Iterable[str] = (),
    exclude_providers: Iterable[str] = (),
    cost_of: Callable[[str], float | None] | None = None,
) -> list[str]:
    """Models to try instead of failed_model, best first.

    Order: hosted models with a usable key, then local models already loaded, then sleeping ones,
    then other local models; never the failed model, one in cooldown, or an excluded one. Ties: priority (lower
    first), then success rate (higher first), then median latency (lower first), then model id.
    ``stats`` maps model id -> (success_rate, median_latency_ms) from the call metrics. With ``cost_of`` (the
    RANKING=cost setting: a model's estimated cost for this request, None when unpriced), the cheaper model of
    a tier comes first and unpriced ones after every priced one; the order above breaks ties.
    """
    skip = {failed_model.id if isinstance(failed_model, ModelRef) else failed_model, *exclude}
    skip_providers = set(exclude_providers)
    # Sort keys, not objects: a fallback hop ranks every active model on the calling thread (~50 of them for a
    # local host with its library registered), so a dataclass per candidate was most of the ranking's time.
    ranked: list[tuple[int, float, int, float, float, str]] = []
    for status in statuses:
        tier = tier_of(status)
        model_id = status.model_id
        if tier is None or model_id in skip or (skip_providers and model_id.partition(":")[0] in skip_providers):
            continue
        rate, median = stats.get(model_id, _NO_STATS)
        ranked.append((tier, _estimated(cost_of, model_id), priorities.get(model_id, 100), -rate, median, model_id))
    ranked.sort()
    return [key[-1] for key in ranked]


def _estimated(cost_of: Callable[[str], float | None] | None, model_id: str) -> float:
    if cost_of is None:
        return 0.0
    cost = cost_of(model_id)
    return float("inf") if cost is None else cost
