"""Prices: what a call costs, from the operator's overrides, else the bundled genai-prices table; local is free.

Resolution for a model id, first match wins:

1. an override for the model id (store/prices.py, the Spend page), then one for its connection ("openai:*");
2. a local host's model: 0 (it runs on this machine);
3. the genai-prices table bundled with the installed package (its version is the price source), matched by the
   ``price_table_id`` of the connection's KIND (a `work` connection of kind openai pays OpenAI's prices, a `groq`
   one of kind openai-compatible is unpriced unless overridden) and the model name;
4. otherwise the model is **unpriced**: its cost is None ("unknown"), never 0.

genai-prices can refresh its table over the network, but only when its ``UpdatePrices`` is started, which
nothing here does: the bundled snapshot is the table. Looking a price up in it costs about 0.3 ms, and importing
it about 0.5 s, so a model's rates are read once into a ``Price`` of plain floats (refreshed hourly, for prices
that change on a date) and the import runs in the background when the first call starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .providers.base import Provider
from .providers.registry import KINDS, PROVIDERS
from .types import ModelRef, Usage

log = logging.getLogger(__name__)

TABLE_PACKAGE = "genai-prices"
TABLE_TTL_S = 3600.0  # table prices can change on a date: a model's rates are read again after this long
# A request's size for cost ranking: characters per token, and the answer length assumed without max_tokens.
CHARS_PER_TOKEN = 4
ASSUMED_ANSWER_TOKENS = 256


@dataclass(frozen=True)
class Rate:
    """USD per million tokens; ``tiers`` are (input tokens above which, rate) pairs that apply to every token."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def at(self, input_tokens: int) -> float:
        for start, rate in reversed(self.tiers):
            if input_tokens > start:
                return rate
        return self.base


@dataclass(frozen=True)
class Cost:
    """The cost of one attempt in USD, and where its price came from."""

    input_usd: float
    output_usd: float
    source: str

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.output_usd


@dataclass(frozen=True)
class Price:
    """A model's rates per million tokens; cached_input None means cached input costs the input rate."""

    input: Rate
    output: Rate
    cached_input: Rate | None
    source: str  # "genai-prices 0.2.3" | "override" | "local"

    @classmethod
    def per_mtok(cls, input_usd: float, output_usd: float, cached_input_usd: float | None, source: str) -> Price:
        cached = Rate(cached_input_usd) if cached_input_usd is not None else None
        return cls(Rate(input_usd), Rate(output_usd), cached, source)

    def cost(self, usage: Usage) -> Cost | None:
        """The cost of this usage, or None when the call reported no token counts."""
        if usage.prompt_tokens is None and usage.completion_tokens is None:
            return None
        prompt = usage.prompt_tokens or 0
        cached = min(usage.cached_tokens or 0, prompt)
        cached_rate = (self.cached_input or self.input).at(prompt)
        input_usd = ((prompt - cached) * self.input.at(prompt) + cached * cached_rate) / 1e6
        output_usd = (usage.completion_tokens or 0) * self.output.at(prompt) / 1e6
        return Cost(input_usd, output_usd, self.source)

    def estimate(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a request of this size (no cached input)."""
        return (input_tokens * self.input.at(input_tokens) + output_tokens * self.output.at(input_tokens)) / 1e6


LOCAL_PRICE = Price(Rate(0.0), Rate(0.0), None, "local")

OverrideSource = Callable[[], Mapping[str, Price]]
KindOf = Callable[[str], str | None]  # a connection's kind, or None for an unknown connection


def seeded_kind(connection: str) -> str | None:
    """The kind of a seeded connection (named after its kind; ``custom`` is openai-compatible), else None."""
    cls = PROVIDERS.get(connection)
    return cls.kind if cls is not None else None


class PriceBook:
    """Prices by model id: overrides (read through ``overrides``), local models, the bundled table."""

    def __init__(self, overrides: OverrideSource, *, kind_of: KindOf = seeded_kind,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._overrides = overrides
        self._kind_of = kind_of  # the table is chosen by the connection's kind, not by its name
        self._clock = clock
        # model id -> (valid until, price), for one set of overrides: a call reads it with two dict lookups.
        self._resolved: dict[str, tuple[float, Price | None]] = {}
        self._resolved_for: Mapping[str, Price] | None = None
        self._warm_lock = threading.Lock()
        self._warming: threading.Thread | None = None

    def price(self, model_id: str) -> Price | None:
        """The price that applies to model_id now, or None when it is unpriced."""
        overrides = self._overrides()
        if overrides is not self._resolved_for:  # an override changed somewhere: resolve every model again
            self._resolved, self._resolved_for = {}, overrides
        now = self._clock()
        hit = self._resolved.get(model_id)
        if hit is not None and now < hit[0]:
            return hit[1]
        ref = ModelRef.parse(model_id)
        price = _resolve(ref, overrides, KINDS.get(self._kind_of(ref.provider) or ""))
        self._resolved[model_id] = (now + TABLE_TTL_S, price)
        return price

    def cost(self, model_id: str, usage: Usage | None) -> Cost | None:
        """What a call that reported usage cost; None when unpriced or no usage was reported."""
        if usage is None:
            return None
        price = self.price(model_id)
        return price.cost(usage) if price is not None else None

    def estimate(self, model_id: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD a request of this size would cost on model_id, or None when unpriced."""
        price = self.price(model_id)
        return price.estimate(input_tokens, output_tokens) if price is not None else None

    def load(self) -> None:
        """Import the table now, on this thread (a server's start-up: see Orchestrator.warm_for_serving)."""
        _load_table()

    def warm(self) -> None:
        """Import the table in a background thread (once), so the first priced call does not wait ~0.5 s for it."""
        if self._warming is not None:
            return
        with self._warm_lock:
            if self._warming is None:
                self._warming = threading.Thread(target=_load_table, name="orchestrator-prices", daemon=True)
                self._warming.start()


def _resolve(ref: ModelRef, overrides: Mapping[str, Price], kind: type[Provider] | None) -> Price | None:
    found = overrides.get(ref.id) or overrides.get(f"{ref.provider}:*")
    if found is not None:
        return found
    if kind is not None and kind.local:
        return LOCAL_PRICE
    return table_price(ref, _table_id(kind))


def table_price(ref: ModelRef, table_id: str | None) -> Price | None:
    """The bundled genai-prices table's price for a model of that table provider id, or None when unknown."""
    if table_id is None:
        return None
    snapshot = _load_table()
    try:
        _, model = snapshot.find_provider_model(ref.name, None, table_id, None)
    except LookupError:
        return None
    prices = model.get_prices(datetime.now(UTC))
    source = f"{TABLE_PACKAGE} {_table_version()}"
    input_rate, output_rate = _rate(getattr(prices, "input_mtok", None)), _rate(getattr(prices, "output_mtok", None))
    if input_rate is None and output_rate is None:
        return None  # priced per image, second or request only: not a token price this console can apply
    return Price(input_rate or Rate(0.0), output_rate or Rate(0.0), _rate(getattr(prices, "cache_read_mtok", None)),
                 source)


def estimated_tokens(characters: int, max_tokens: int | None) -> tuple[int, int]:
    """(input, output) tokens a request is expected to use, from its characters and max_tokens."""
    return max(1, characters // CHARS_PER_TOKEN), max_tokens or ASSUMED_ANSWER_TOKENS


def _rate(value: Any) -> Rate | None:
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return Rate(float(value))
    return Rate(float(value.base), tuple((int(t.start), float(t.price)) for t in tiers))


def _table_id(kind: type[Provider] | None) -> str | None:
    """The price table's provider id of a kind (None: openai-compatible and unknown connections, which only an
    override prices: a `groq` connection of kind openai-compatible is not OpenAI)."""
    return kind.price_table_id if kind is not None else None


_TABLE_LOCK = threading.Lock()


def _load_table() -> Any:
    with _TABLE_LOCK:  # one import and one snapshot, however many threads ask first
        from genai_prices import data_snapshot  # noqa: PLC0415 - ~0.5 s import, paid only when a price is looked up

        return data_snapshot.get_snapshot()


def _table_version() -> str:
    from genai_prices import __version__  # noqa: PLC0415 - see _load_table

    return str(__version__)
