"""Alternative selection and cooldown policy: pure functions the model manager and orchestrator share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Candidate:
    model_id: str
    tier: int
    priority: int
    success_rate: float
    median_latency_ms: float
    cost_usd: float = 0.0  # estimated for the request with RANKING=cost (unpriced: infinity); else 0


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


def tier_of(status: ModelStatus) -> int | None:
    """The tier a status puts a model in, or None when it must not be suggested."""
    if status.state is ModelState.EXTERNAL_READY:
        return TIER_HOSTED_READY
    if status.state is ModelState.LOADED:
        return TIER_LOCAL_LOADED
    if status.state is ModelState.SLEEPING:
        return TIER_LOCAL_SLEEPING
    if status.state in (ModelState.NOT_LOADED, ModelState.LOADING):
        return TIER_LOCAL_OTHER
    # Host down, no key, cooling down; a failed load (it would fail again), an unload under way (the
    # user wants it gone), a download (minutes, not a load): none of these answers soon.
    return None


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
    candidates: list[Candidate] = []
    for status in statuses:
        tier = tier_of(status)
        provider = status.model_id.partition(":")[0]
        if tier is None or status.model_id in skip or provider in skip_providers:
            continue
        rate, median = stats.get(status.model_id, (1.0, float("inf")))
        cost = _estimated(cost_of, status.model_id)
        candidates.append(Candidate(status.model_id, tier, priorities.get(status.model_id, 100), rate, median, cost))
    candidates.sort(key=lambda c: (c.tier, c.cost_usd, c.priority, -c.success_rate, c.median_latency_ms, c.model_id))
    return [c.model_id for c in candidates]


def _estimated(cost_of: Callable[[str], float | None] | None, model_id: str) -> float:
    if cost_of is None:
        return 0.0
    cost = cost_of(model_id)
    return float("inf") if cost is None else cost
