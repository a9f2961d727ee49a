"""The operator's price overrides and budgets, in the database so every process prices and limits alike.

Every call reads both, so they are read from memory; a write in this process or another reloads them
(the "pricing" area of generations.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import Table, delete, select

from ..errors import InputError
from ..pricing import Price
from ..types import ModelRef
from .db import Database
from .generations import Generations, Token, generations_for
from .tables import Budget, PriceOverride, utcnow

AREA = "pricing"
Period = Literal["month", "day"]
PERIODS: tuple[Period, ...] = ("month", "day")
ALL_CONNECTIONS = "*"

_OVERRIDES = cast(Table, PriceOverride.__table__)
_BUDGETS = cast(Table, Budget.__table__)


@dataclass(frozen=True)
class OverrideEntry:
    target: str  # a model id, or "provider:*" for every model of a connection
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None
    updated_at: datetime

    def price(self) -> Price:
        return Price.per_mtok(self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok, "override")


@dataclass(frozen=True)
class BudgetEntry:
    scope: str  # a connection (the prefix of its model ids) or "*" for all of them together
    period: Period
    limit_usd: float


class PricingStore:
    """Price overrides and budgets; reads come from memory until any process writes either."""

    def __init__(self, db: Database, *, generations: Generations | None = None) -> None:
        self.db = db
        self._generations = generations or generations_for(db)
        self._loaded: tuple[Token, dict[str, OverrideEntry], dict[str, Price], tuple[BudgetEntry, ...]] | None = None

    @property
    def token(self) -> Token:
        """Changes whenever any process changed an override or a budget."""
        return self._generations.token(AREA)

    def overrides(self) -> list[OverrideEntry]:
        """Every override, by target."""
        return sorted(self._state()[1].values(), key=lambda e: e.target)

    def override_prices(self) -> Mapping[str, Price]:
        """Target -> Price, for pricing.PriceBook."""
        return self._state()[2]

    def budgets(self) -> tuple[BudgetEntry, ...]:
        """Every budget, overall first, then by connection and period."""
        return self._state()[3]

    def set_override(self, target: str, input_per_mtok: float, output_per_mtok: float,
                     cached_input_per_mtok: float | None = None) -> OverrideEntry:
        """Set the price of a model id or of a whole connection ("openai:*"), in USD per million tokens."""
        entry = OverrideEntry(
            _target(target), _usd("input price", input_per_mtok), _usd("output price", output_per_mtok),
            None if cached_input_per_mtok is None else _usd("cached input price", cached_input_per_mtok), utcnow(),
        )
        with self._generations.writing(AREA) as s:
            s.execute(delete(_OVERRIDES).where(_OVERRIDES.c.target == entry.target))
            s.execute(_OVERRIDES.insert().values(**entry.__dict__))
        return entry

    def remove_override(self, target: str) -> bool:
        """Drop an override (the table price applies again); False when there was none."""
        with self._generations.writing(AREA) as s:
            found = s.connection().execute(delete(_OVERRIDES).where(_OVERRIDES.c.target == target.strip()))
            return bool(found.rowcount)

    def set_budget(self, scope: str, period: str, limit_usd: float) -> BudgetEntry:
        """Set the monthly or daily budget of a connection, or of all of them ("*")."""
        scope, checked = _scope(scope), _period(period)
        limit = _usd("budget", limit_usd)
        with self._generations.writing(AREA) as s:
            s.execute(delete(_BUDGETS).where(_BUDGETS.c.scope == scope, _BUDGETS.c.period == checked))
            s.execute(_BUDGETS.insert().values(scope=scope, period=checked, limit_usd=limit, updated_at=utcnow()))
        return BudgetEntry(scope, checked, limit)

    def remove_budget(self, scope: str, period: str) -> bool:
        """Drop a budget; False when there was none."""
        with self._generations.writing(AREA) as s:
            found = s.connection().execute(delete(_BUDGETS).where(_BUDGETS.c.scope == scope.strip().lower(),
                                                     _BUDGETS.c.period == period))
            return bool(found.rowcount)

    def _state(self) -> tuple[Token, dict[str, OverrideEntry], dict[str, Price], tuple[BudgetEntry, ...]]:
        token = self.token
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            with self.db.engine.connect() as conn:
                overrides = {r.target: OverrideEntry(r.target, r.input_per_mtok, r.output_per_mtok,
                                                     r.cached_input_per_mtok, r.updated_at)
                             for r in conn.execute(select(_OVERRIDES))}
                budgets = tuple(BudgetEntry(r.scope, r.period, r.limit_usd) for r in conn.execute(
                    select(_BUDGETS).order_by(_BUDGETS.c.scope != ALL_CONNECTIONS, _BUDGETS.c.scope,
                                              _BUDGETS.c.period)))
            loaded = (token, overrides, {t: e.price() for t, e in overrides.items()}, budgets)
            self._loaded = loaded
        return loaded


def _target(text: str) -> str:
    text = (text or "").strip()
    provider, sep, name = text.partition(":")
    if sep and name == "*" and provider.strip():
        return f"{provider.strip().lower()}:*"
    return ModelRef.parse(text).id


def _scope(text: str) -> str:
    scope = (text or "").strip().lower()
    if not scope or ":" in scope or any(c.isspace() for c in scope) or len(scope) > 64:
        raise InputError(f"Budget scope {text!r} must be a connection name (the part of a model id before ':', "
                         "such as openai) or * for all connections.")
    return scope


def _period(text: str) -> Period:
    for period in PERIODS:
        if text == period:
            return period
    raise InputError(f"Budget period {text!r} must be month or day.")


def _usd(what: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} {value!r} is not a number; enter US dollars such as 2.5.") from None
    if not math.isfinite(number) or number < 0:
        raise InputError(f"The {what} must be a finite amount of at least 0 US dollars; got {value!r}.")
    return number
