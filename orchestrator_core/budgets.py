"""Budgets: monthly or daily spending limits per connection and overall, enforced alike by every process.

Budgets live in the database (store/prices.py) and spend is summed from the rollups (store/spend.py), so a
budget crossed by calls of one process refuses calls in every other. The per-call check is a memory read:
spend is summed again only when a process committed a costed metric row (the "spend" generation), a budget
changed (the "pricing" generation) or a UTC day or month began; with no budget set it never reads spend.

Spend counts rows once the metrics writer has committed them (within its ~0.2 s batch window), so a burst
of concurrent calls can overshoot a budget by the calls in flight; the next call after the commit is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import BudgetExceededError
from .store.db import Database
from .store.generations import Token, generations_for
from .store.prices import ALL_CONNECTIONS, BudgetEntry, PricingStore

WARN_SHARE = 0.8  # the console warns once spend passes this share of a budget
State = Literal["ok", "warning", "exceeded"]


@dataclass(frozen=True)
class BudgetStatus:
    """One budget and its spend in the current UTC day or calendar month."""

    scope: str
    period: str
    limit_usd: float
    spent_usd: float

    @property
    def share(self) -> float:
        return self.spent_usd / self.limit_usd if self.limit_usd > 0 else float("inf")

    @property
    def state(self) -> State:
        if self.spent_usd >= self.limit_usd:
            return "exceeded"
        return "warning" if self.share >= WARN_SHARE else "ok"

    @property
    def label(self) -> str:
        who = "all connections" if self.scope == ALL_CONNECTIONS else f"connection {self.scope!r}"
        return f"the {'monthly' if self.period == 'month' else 'daily'} budget of {who}"


@dataclass(frozen=True)
class _Snapshot:
    key: tuple[Token, Token]
    valid_until: float  # the next UTC midnight: a new day (or month) starts counting from 0
    statuses: tuple[BudgetStatus, ...]
    exceeded: dict[str, BudgetStatus]  # scope -> the first exceeded budget of that scope


class BudgetGuard:
    """Answers "may this connection spend?" from memory; reloads only when spend or budgets changed."""

    def __init__(self, db: Database, pricing: PricingStore, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.pricing = pricing
        self._generations = generations_for(db)
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()

    def statuses(self) -> tuple[BudgetStatus, ...]:
        """Every budget with what was spent against it so far."""
        return self._current().statuses

    def blocked_connections(self) -> frozenset[str]:
        """Connections whose own or the overall budget is spent ("*" stands for every hosted connection)."""
        return frozenset(self._current().exceeded)

    def check(self, provider: str, model_id: str, *, local: bool) -> None:
        """Raise BudgetExceededError when provider's budget or the overall one is spent (local models cost 0)."""
        if local:
            return
        exceeded = self._current().exceeded
        if not exceeded:
            return
        status = exceeded.get(provider) or exceeded.get(ALL_CONNECTIONS)
        if status is not None:
            raise _refusal(status, provider, model_id)

    def checks_from_memory(self) -> bool:
        """Whether check() would answer from what it has read (no spend query): a caller on an event loop asks.
        With no budget set it never reads spend; with one, until a costed call or a new day changes it."""
        if not self.pricing.budgets():
            return True
        snapshot = self._snapshot
        key = (self.pricing.token, self._generations.token("spend"))
        return snapshot is not None and snapshot.key == key and self._clock() < snapshot.valid_until

    def _current(self) -> _Snapshot:
        # Every call runs this: two change tokens and a clock, no date arithmetic until a day ends.
        now = self._clock()
        key = (self.pricing.token, self._generations.token("spend"))
        snapshot = self._snapshot
        if snapshot is None or snapshot.key != key or now >= snapshot.valid_until:
            with self._lock:
                snapshot = self._snapshot
                if snapshot is None or snapshot.key != key or now >= snapshot.valid_until:
                    snapshot = self._snapshot = self._load(key, now)
        return snapshot

    def _load(self, key: tuple[Token, Token], now: float) -> _Snapshot:
        from .store.spend import period_start, spend_by_provider  # noqa: PLC0415 - loads with the metrics module

        day = period_start("day", now)
        budgets = self.pricing.budgets()
        if not budgets:
            return _Snapshot(key, day + 86400, (), {})
        by_period = {"month": spend_by_provider(self.db, period_start("month", now)),
                     "day": spend_by_provider(self.db, day)}
        statuses = tuple(_status(b, by_period[b.period]) for b in budgets)
        exceeded: dict[str, BudgetStatus] = {}
        for status in statuses:
            if status.state == "exceeded":
                exceeded.setdefault(status.scope, status)
        return _Snapshot(key, day + 86400, statuses, exceeded)


def _status(budget: BudgetEntry, spend: dict[str, float]) -> BudgetStatus:
    spent = sum(spend.values()) if budget.scope == ALL_CONNECTIONS else spend.get(budget.scope, 0.0)
    return BudgetStatus(budget.scope, budget.period, budget.limit_usd, spent)


def _refusal(status: BudgetStatus, provider: str, model_id: str) -> BudgetExceededError:
    return BudgetExceededError(
        f"{model_id} was not called: {status.label} (${status.limit_usd:,.2f}) is spent "
        f"(${status.spent_usd:,.4f} so far). Raise or remove the budget on the Spend page, or pick a model "
        "of another connection or a local one.",
        scope=status.scope, period=status.period, limit_usd=status.limit_usd, spent_usd=status.spent_usd,
        provider=provider, model=model_id,
    )
