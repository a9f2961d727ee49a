"""Orchestrator: the facade the console, the CLI and scripts use to run prompts with check-and-load and fallback.

A call walks a chain of models. Before a local model is called it is checked and, if needed, loaded
and waited for. A failure another model could fix is recorded, the model cools down and the call
moves to ``ModelManager.suggest_alternative``, up to ``max_fallback_hops`` times; a caller error
(bad request, empty prompt) is raised at once. Every attempt is written to ``call_metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from collections.abc import Collection as CollectionABC
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from . import exits
from .bridge import Offload, bridged, in_executor, on_loop
from .budgets import BudgetGuard, BudgetStatus
from .clients import ProviderFactory
from .config import Settings
from .connections import Connection, ConnectionTest, KeyMode, KindInfo, ModelGroup, kinds
from .errors import (
    AllModelsFailedError,
    BadResponseError,
    BudgetExceededError,
    ConnectionDisabledError,
    ContentFilteredError,
    InputError,
    InvalidConnectionError,
    InvalidKeyInputError,
    InvalidModelIdError,
    InvalidParameterError,
    OrchestratorError,
    ProviderError,
    StreamInterruptedError,
    UnknownConnectionError,
    should_fall_back,
)
from .fallback import cools_down, is_connection_wide
from .loader import HostStatus, LoadProgress, ModelManager
from .pricing import Cost, PriceBook, estimated_tokens
from .probe import probe_connection
from .providers.base import Provider
from .store.connections import ConnectionStore, GroupStore
from .store.db import Database
from .store.failures import FailureCache, FailureEntry
from .store.keys import KeyInfo, KeyStore, check_key
from .store.prices import ALL_CONNECTIONS, BudgetEntry, OverrideEntry, PricingStore
from .store.registry import ModelEntry, ModelRegistry
from .store.secret import PoolKey, load_fernet
from .store.spool import Spool
from .store.tokens import TokenStore
from .types import (
    Attempt,
    ChatParams,
    ChatResult,
    KeyTestResult,
    Message,
    ModelRef,
    ModelState,
    ModelStatus,
    OrchestratedResult,
    StreamEvent,
    TextDelta,
    Usage,
    validate_messages,
)

if TYPE_CHECKING:
    from .store.metrics import MetricRow, MetricsRecorder

log = logging.getLogger("orchestrator_core")

MAX_PROMPT_CHARS = 2_000_000  # a guard against pasting a file by mistake, far above any context window
# Request ids: a random per-process prefix and a counter; os.urandom per call costs more than the
# rest of the facade on some machines.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)
STATS_MAX_AGE_S = 30.0  # ranking statistics older than this are refreshed in the background
KEY_EXHAUSTED_COOLDOWN_S = 3600.0  # a key out of quota sits out an hour (a rate-limited one: its retry-after)
POOL_THREADS = 8  # host probes (one per local connection) and statistics refreshes


@dataclass(frozen=True)
class CallEvent:
    """Progress of a call, for a UI: loading, load progress, an attempt failing, a fallback."""

    kind: str  # "loading" | "load_progress" | "attempt_failed" | "fallback" | "answering"
    model_id: str
    detail: str
    elapsed_s: float = 0.0
    error: OrchestratorError | None = None


EventSink = Callable[[CallEvent], None]


class Orchestrator:
    """Runs prompts on any registered model with check-and-load, automatic fallback and metrics."""

    def __init__(self, settings: Settings, database: Database, *, warm_up: bool = True) -> None:
        exits.install()  # SIGTERM / SIGHUP unwind like Ctrl-C, so queued metric rows are written or spooled
        self.settings = settings
        self.db = database
        fernet = load_fernet(settings.secret_key, database.dir)
        self.connection_store = ConnectionStore(database, settings)
        self.group_store = GroupStore(database)
        names = _ConnectionNames(self.connection_store)  # live: a connection added anywhere is known at once
        self.keys = KeyStore(database, fernet, env_keys=settings.env_keys, known_providers=names)
        self.keys.verify_secret()
        self.registry = ModelRegistry(database, known_providers=names)
        self.failures = FailureCache(database)
        self._metrics: MetricsRecorder | None = None
        self._metrics_lock = threading.Lock()
        spool = Spool.for_database(database)
        if spool is not None and spool.pending():
            _ = self.metrics  # rows an earlier process spooled are written at this start, not at the first call
        self.tokens = TokenStore(database)  # gateway tokens of the HTTP API (api/)
        self.pricing = PricingStore(database)  # price overrides and budgets (issue 11)
        self.prices = PriceBook(self.pricing.override_prices, kind_of=self._kind_of)
        self.budgets = BudgetGuard(database, self.pricing)
        self.factory = ProviderFactory(settings, self.keys.secret_for, connections=self.connection_store,
                                       key_problem=self.keys.pool_problem)
        # Long-lived: host probes and statistics refreshes must not start threads during a call.
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="orchestrator")
        # Off the hot path: the pool's first thread starts now and the cooldown write is compiled, so the
        # first call past a dead host pays its refused connect, not ~10 ms of set-up. (Done when it resolves.)
        self.warming: Future[None] | None = self._pool.submit(self._warm_up) if warm_up else None
        self.manager = ModelManager(settings, self.factory, self.registry, self.failures, self._model_stats,
                                    pool=self._pool, key_rejected=self.keys.rejected)
        self._stats_cache: tuple[float, dict[str, tuple[float, float]]] | None = None
        self._stats_wanted = False
        self._stats_refreshing = threading.Lock()

    def _warm_up(self) -> None:
        """Start the cooldown writer, rehearse its write and load what the first fallback ranks (the registry)."""
        self.failures.warm()
        self.registry.list()

    def warm_for_serving(self) -> None:
        """Load now what the first calls would load: the async client, httpx, the price table, the metric writer.

        A server (the API's start-up) calls it before it freezes its start-up objects out of the garbage
        collector's full passes, which otherwise scan them all every few seconds under load."""
        try:
            if self.warming is not None:
                self.warming.result()
        except Exception:  # a busy database at start-up: the first calls do what the warm-up could not
            log.warning("the warm-up did not finish; serving without it", exc_info=True)
        from .providers import aio, guard  # noqa: F401, PLC0415 - what a call loads on first use
        from .store import spend  # noqa: F401, PLC0415 - as the budgets load it

        aio.load()
        self.prices.load()
        _ = self.metrics

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, check_writable: bool = True) -> Orchestrator:
        """Build from Settings (default: the environment and .env), opening and migrating the database.

        check_writable=False is for read-only commands: they start while another process writes, and
        skip the warm-up (a rehearsed write) that only a process making calls needs.
        """
        settings = settings or Settings.from_env()
        database = Database.open(settings.database_url, check_writable=check_writable,
                                 connect_timeout_s=settings.db_connect_timeout_s)
        try:
            return cls(settings, database, warm_up=check_writable)
        except OrchestratorError:
            database.dispose()
            raise
        except (SQLAlchemyError, sqlite3.Error) as exc:
            # Open only checks the migration table: damage elsewhere shows on the first reads (the keys).
            database.dispose()
            raise database.startup_error(exc) from exc

    @property
    def metrics(self) -> MetricsRecorder:
        """The metrics recorder, started on first use (a status check records nothing and need not load it)."""
        recorder = self._metrics
        if recorder is None:
            with self._metrics_lock:
                if self._metrics is None:
                    from .store.metrics import MetricsRecorder  # noqa: PLC0415 - the metrics module loads on the first recorded call

                    self._metrics = MetricsRecorder(self.db)
                recorder = self._metrics
        return recorder

    def close(self) -> None:
        """Flush metrics and release connections."""
        if self._metrics is not None:
            self._metrics.close()
        self.failures.close()
        left = exits.shutdown_pool(self._pool)  # bounded: a task stuck in a read must not hold the exit up
        if left:
            log.warning("Background task(s) still running at close, left to finish on their own: %s", ", ".join(left))
        self.manager.close()
        self.factory.close()
        self.db.dispose()

    async def aclose(self) -> None:
        """Close the running loop's connections of achat and astream_chat before the loop ends."""
        aio = sys.modules.get("orchestrator_core.providers.aio")  # never imported: no loop made a connection
        if aio is not None:
            await aio.close_sessions()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat ------------------------------------------------------------------------------------
    def chat(
        self,
        model: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        **params: Any,
    ) -> OrchestratedResult:
        """Send messages to a model id or group, loading it first if needed and falling back on failures."""
        call = _Call(self, model, messages, params, fallback, on_event, streamed=False)
        try:
            return call.run()
        except OrchestratorError as exc:
            call.stamp(exc)
            raise

    async def achat(
        self,
        model: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        offload: Offload = in_executor,
        **params: Any,
    ) -> OrchestratedResult:
        """chat for a caller on an event loop (the gateway): a provider that can answers on the loop, any other
        on a worker thread; the blocking steps run through offload, as astream_chat's do."""
        sink = on_loop(on_event, asyncio.get_running_loop()) if on_event is not None else None
        call = _Call(self, model, messages, params, fallback, sink, streamed=False)
        try:
            return await call.arun(offload)
        except OrchestratorError as exc:
            call.stamp(exc)
            raise

    def stream_chat(
        self,
        model: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        **params: Any,
    ) -> ChatStream:
        """Like chat, but iterate the returned ChatStream for text; ``.result`` is set when it ends."""
        call = _Call(self, model, messages, params, fallback, on_event, streamed=True)
        return ChatStream(call)

    def astream_chat(
        self,
        model: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        offload: Offload = in_executor,
        **params: Any,
    ) -> AsyncChatStream:
        """stream_chat for a caller on an event loop (the gateway): iterate it with ``async for``.

        A provider that streams natively is read on the loop, any other on one worker thread; the steps that
        can block (check-and-load of a model not known to be ready, a fallback's ranking, a failure's cooldown,
        the next key) run through ``offload``. on_event is called on the loop. Call it on the loop that will
        read the stream."""
        sink = on_loop(on_event, asyncio.get_running_loop()) if on_event is not None else None
        call = _Call(self, model, messages, params, fallback, sink, streamed=True)
        return AsyncChatStream(call, offload)

    # -- connections ---------------------------------------------------------------------------------
    def kinds(self) -> list[KindInfo]:
        """Every provider kind with its facts (default URL, key needed, local host, options)."""
        return kinds()

    def connections(self) -> list[Connection]:
        """Every connection: the seeded ones (one per kind) first, then the others by name."""
        counts = Counter(k.provider for k in self.keys.list())
        return [dataclasses.replace(c, key_count=counts[c.name]) for c in self.connection_store.list()]

    def connection(self, name: str) -> Connection:
        """One connection; UnknownConnectionError when there is none of that name."""
        found = self.connection_store.get(name)
        return dataclasses.replace(found, key_count=len(self.keys.list(found.name)))

    def add_connection(
        self, name: str, kind: str, *, base_url: str | None = None, options: Mapping[str, str] | None = None,
        enabled: bool = True, key_mode: KeyMode | str = KeyMode.ORDERED, key: str | None = None,
    ) -> Connection:
        """Add a connection (and its first key); it is used at once, in every process on the database."""
        if key is not None:
            check_key(key)  # refused before anything is stored
        added = self.connection_store.add(name, kind, base_url=base_url, options=options, enabled=enabled,
                                          key_mode=key_mode)
        if key is not None:
            self.keys.add(added.name, None, key)
        return self.connection(added.name)

    def edit_connection(
        self, name: str, *, base_url: str | None = None, options: Mapping[str, str] | None = None,
        enabled: bool | None = None, key_mode: KeyMode | str | None = None,
    ) -> Connection:
        """Change a connection's URL, options, enabled flag or key mode."""
        self.connection_store.edit(name, base_url=base_url, options=options, enabled=enabled, key_mode=key_mode)
        self.manager.invalidate(name)
        return self.connection(name)

    def remove_connection(self, name: str) -> None:
        """Remove a connection and its stored keys: its models are deactivated, its metrics kept; a seeded one is
        disabled (keys kept)."""
        self.connection_store.remove(name)
        self.manager.invalidate(name)

    def test_connection(self, name: str) -> ConnectionTest:
        """Reachability, the model count and the key check of one connection, with one request."""
        return probe_connection(self.connection(name), self.factory)

    # -- keys --------------------------------------------------------------------------------------
    def keys_of(self, connection: str | None = None) -> list[KeyInfo]:
        """Keys (masked) with their pool state, of one connection or all."""
        return self.keys.list(connection)

    def add_key(self, connection: str, label: str | None, key: str) -> KeyInfo:
        """Store a key in a connection's pool."""
        return self.keys.add(connection, label, key)

    def edit_key(self, key_id: int | str, *, label: str | None = None, key: str | None = None) -> KeyInfo:
        """Relabel or replace a key; a replaced key forgets its test and its faults."""
        return self.keys.update(key_id, label=label, key=key)

    def delete_key(self, key_id: int | str) -> None:
        self.keys.delete(key_id)

    def test_key(self, key_id: int | str) -> KeyTestResult:
        """Test one stored or environment key against its connection and persist the result."""
        info = next((k for k in self.keys.list() if k.id == key_id), None)
        if info is None:
            raise InvalidKeyInputError(f"No key with id {key_id!r}; it may have been deleted.")
        provider = self.factory.get(info.provider, "status", api_key=self.keys.secret_by_id(key_id))
        result = provider.test_key()
        self.keys.record_test(key_id, result)
        return result

    def test_all_keys(self, connection: str | None = None) -> dict[int | str, KeyTestResult]:
        """Test every key (of one connection); keys are tested concurrently."""
        ids = [k.id for k in self.keys.list(connection)]
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(ids)), thread_name_prefix="key-test") as pool:
            return dict(zip(ids, pool.map(self.test_key, ids), strict=True))

    # -- model groups ------------------------------------------------------------------------------
    def groups(self) -> list[ModelGroup]:
        return self.group_store.list()

    def set_group(self, name: str, members: Sequence[str]) -> ModelGroup:
        """Create or replace a group; every member must be connection:model on a known connection."""
        for member in members:
            self.connection_store.get(ModelRef.parse(member.strip()).provider)
        return self.group_store.set(name, [ModelRef.parse(m.strip()).id for m in members])

    def remove_group(self, name: str) -> None:
        self.group_store.remove(name)

    def resolve(self, model: str) -> tuple[str | None, tuple[ModelRef, ...]]:
        """(group name or None, the models to try in order) for a model id or a group name; parsed once."""
        text = (model or "").strip()
        if text and ":" not in text:
            group = self.group_store.find(text)
            if group is not None:
                known = {c.name for c in self.connection_store.list()}
                refs = tuple(r for r in map(ModelRef.parse, group.members) if r.provider in known)
                if not refs:
                    raise InvalidConnectionError(f"Group {group.name} has no member on a known connection; "
                                                 f"set it again with 'groups set {group.name} MODEL ...'.")
                return group.name, refs
        ref = ModelRef.parse(text)
        self.connection_store.get(ref.provider)
        return None, (ref,)

    # -- models, status and cooldowns, for the pages -----------------------------------------------------
    def statuses(self, *, force: bool = False) -> list[ModelStatus]:
        """Every active model with its status (one request per stale local host)."""
        return self.manager.list_with_status(force=force)

    def model_status(self, model_id: str, *, force: bool = False) -> ModelStatus:
        return self.manager.check_status(model_id, force=force)

    def hosts(self, *, force: bool = False) -> list[HostStatus]:
        """Every probed local host, by connection."""
        return self.manager.hosts(force=force)

    def load(self, model_id: str) -> ModelStatus:
        """Start loading a local model (returns at once)."""
        return self.manager.load(model_id)

    def wait_for_load(self, model_id: str, *, timeout_s: float | None = None,
                      on_progress: Callable[[LoadProgress], None] | None = None) -> ModelStatus:
        return self.manager.wait_for_load(model_id, timeout_s=timeout_s, on_progress=on_progress)

    def unload(self, model_id: str) -> ModelStatus:
        return self.manager.unload(model_id)

    def suggest_alternative(self, model_id: str) -> str | None:
        return self.manager.suggest_alternative(model_id)

    def cooldowns(self) -> list[FailureEntry]:
        return self.manager.failure_list()

    def active_cooldowns(self) -> int:
        """How many models are cooling down now (from memory: no query when nothing changed)."""
        return len(self.failures.active())

    def alternatives(self, model_id: str) -> list[str]:
        """Every model a call to model_id would fall back to, best first, as a call ranks them: never a
        connection whose budget is spent. Ranked by priority (RANKING=cost needs a request's size)."""
        return self.manager.alternatives(model_id, exclude_providers=self.over_budget_connections())

    def over_budget_connections(self) -> set[str]:
        """Connections fallback must not pick: their budget, or the overall one, is spent."""
        try:
            blocked = self.budgets.blocked_connections()
        except Exception:
            log.warning("could not read the budgets", exc_info=True)
            return set()
        if ALL_CONNECTIONS in blocked:  # the overall budget: every hosted connection (local ones cost 0)
            return {c.name for c in self.connection_store.list() if not c.local}
        return set(blocked)

    def check_database(self) -> None:
        """One round trip to the database; raises (SQLAlchemyError) when it does not answer."""
        self.db.ping()

    def cooldown(self, model_id: str) -> FailureEntry | None:
        """The model's cooldown, or None when it is not cooling down."""
        return self.failures.get(model_id)

    def reset_cooldowns(self, model_id: str | None = None) -> int:
        """Clear the failure cache for one model or all; returns how many entries were cleared."""
        return self.manager.reset_failed(model_id)

    def models(self) -> list[ModelEntry]:
        """The registry: every model, active or not, by priority."""
        return self.registry.list()

    def add_model(self, model_id: str, *, display_name: str | None = None, priority: int = 100) -> ModelEntry:
        return self.registry.add(model_id, display_name=display_name, priority=priority)

    def edit_model(self, model_id: str, *, active: bool | None = None, priority: int | None = None) -> ModelEntry:
        entry = self.registry.get(model_id)
        if active is not None:
            entry = self.registry.set_active(model_id, active)
        if priority is not None:
            entry = self.registry.set_priority(model_id, priority)
        if entry is None:
            raise InvalidModelIdError(f"Model {model_id!r} is not registered; add it first.", model=model_id)
        return entry

    def remove_model(self, model_id: str) -> None:
        self.registry.remove(model_id)

    # -- metric queries, for the pages -------------------------------------------------------------------
    def metric_query(self, name: str, *args: Any) -> Any:
        """store.metrics.<name>(database, *args): the chart and table queries of the Metrics page."""
        from .store import metrics as metric_queries  # noqa: PLC0415 - the metrics module loads on the first recorded call

        query = getattr(metric_queries, name, None) if not name.startswith("_") else None
        if not inspect.isfunction(query) or query.__module__ != metric_queries.__name__:
            raise InputError(f"Unknown metric query {name!r}; see orchestrator_core/store/metrics.py.")
        return query(self.db, *args)

    def spend_query(self, name: str, *args: Any) -> Any:
        """store.spend.<name>(database, *args): the spend sums of the Overview and the Spend page."""
        from .store import spend as spend_queries  # noqa: PLC0415 - like the metric queries: loaded when a page asks

        query = getattr(spend_queries, name, None) if not name.startswith("_") else None
        if not inspect.isfunction(query) or query.__module__ != spend_queries.__name__:
            raise InputError(f"Unknown spend query {name!r}; see orchestrator_core/store/spend.py.")
        return query(self.db, *args)

    def export_metrics(self, since: float | None, until: float | None) -> tuple[tuple[str, ...], Iterator[Any]]:
        """The column names and the rows of every call attempt in the window, for a CSV download."""
        from .store import metrics as metric_queries  # noqa: PLC0415 - the metrics module loads on the first recorded call

        return tuple(metric_queries.EXPORT_COLUMNS), metric_queries.iter_export(self.db, since, until)

    def flush_metrics(self, timeout_s: float) -> None:
        """Write queued metric rows before a page reads them, unless the database is busy (then read what is stored)."""
        if not self.metrics.stalled:
            self.metrics.flush(timeout=timeout_s)

    @property
    def database_name(self) -> str:
        """The database URL without its password (a cache key for the pages)."""
        return self.db.url.render_as_string(hide_password=True)
    # -- cost -------------------------------------------------------------------------------------
    def budget_statuses(self) -> tuple[BudgetStatus, ...]:
        """Every budget with what was spent of it in its period (the Overview and Spend page warnings)."""
        return self.budgets.statuses()

    def price_overrides(self) -> list[OverrideEntry]:
        return self.pricing.overrides()

    def set_price_override(self, target: str, input_per_mtok: float, output_per_mtok: float,
                           cached_input_per_mtok: float | None = None) -> OverrideEntry:
        """The operator's price for a model id or a whole connection ("groq:*"); wins over the table."""
        return self.pricing.set_override(target, input_per_mtok, output_per_mtok, cached_input_per_mtok)

    def remove_price_override(self, target: str) -> bool:
        return self.pricing.remove_override(target)

    def set_budget(self, scope: str, period: str, limit_usd: float) -> BudgetEntry:
        """A monthly or daily budget for a connection, or "*" for all; an unknown connection is refused, since a
        budget on a misspelt name would never be spent."""
        name = (scope or "").strip().lower()
        if name != ALL_CONNECTIONS:
            self.connection_store.get(name)
        return self.pricing.set_budget(name, period, limit_usd)

    def remove_budget(self, scope: str, period: str) -> bool:
        return self.pricing.remove_budget(scope, period)

    def _kind_of(self, connection: str) -> str | None:
        """A connection's kind for pricing (from memory), or None when there is no such connection."""
        try:
            return self.connection_store.get(connection).kind
        except UnknownConnectionError:
            return None

    def unpriced_models(self, model_ids: Iterable[str] | None = None) -> list[str]:
        """Models whose calls are recorded at an unknown cost: no override, not local, not in the price table.

        Default: every registered model; the console adds the models seen in the call metrics."""
        ids = [e.model_id for e in self.registry.list()] if model_ids is None else list(model_ids)
        return sorted({m for m in ids if self.prices.price(m) is None})

    # -- metrics for the console --------------------------------------------------------------------
    def _model_stats(self) -> dict[str, tuple[float, float]]:
        """(success rate, median latency) per model over the last 7 days, for ranking fallbacks.

        A fallback hop never waits for the query: it ranks with the figures at hand (until the first read,
        tier and priority alone: the statistics only break ties after those). Figures missing or older
        than STATS_MAX_AGE_S are read in the background once the call that asked has ended, so the query
        does not share the CPU with that call (it was most of a first fallback's time)."""
        cached = self._stats_cache
        if cached is None or time.monotonic() - cached[0] >= STATS_MAX_AGE_S:
            self._stats_wanted = True
        return cached[1] if cached is not None else {}

    def _refresh_stats_if_wanted(self) -> None:
        """After a call: start the statistics read a fallback of it asked for (one at a time)."""
        if self._stats_wanted and self._stats_refreshing.acquire(blocking=False):
            self._stats_wanted = False
            try:
                self._pool.submit(self._refresh_stats_in_background)
            except RuntimeError:  # the pool is shut down: the orchestrator is closing
                self._stats_refreshing.release()

    def _refresh_stats(self) -> None:
        from .store import metrics as metric_queries  # noqa: PLC0415 - the metrics module loads on the first recorded call

        rows = metric_queries.model_stats(self.db, since=time.time() - 7 * 86400)
        stats = {m: (s.success_rate, s.p50_ms if s.p50_ms is not None else float("inf")) for m, s in rows.items()}
        self._stats_cache = (time.monotonic(), stats)

    def _refresh_stats_in_background(self) -> None:
        try:
            self._refresh_stats()
        except Exception:
            log.warning("could not refresh the model statistics used for ranking", exc_info=True)
            self._stats_cache = (time.monotonic(), self._stats_cache[1] if self._stats_cache else {})
        finally:
            self._stats_refreshing.release()


class ChatStream:
    """An iterator of text deltas; after it is exhausted ``result`` holds the OrchestratedResult."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self.result: OrchestratedResult | None = None
        self._iter: Generator[str, None, None] | None = None

    @property
    def request_id(self) -> str:
        """The id every metric row of this call carries (known before the first token)."""
        return self._call.request_id

    @property
    def requested_model(self) -> str:
        """The model id asked for, normalised (provider lower-cased)."""
        return self._call.requested

    def __iter__(self) -> Generator[str, None, None]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    def close(self) -> None:
        """Stop reading: a stream still running records its attempt as cancelled."""
        if self._iter is not None:
            self._iter.close()

    def _run(self) -> Generator[str, None, None]:
        inner = self._call.run_stream()
        try:
            for item in inner:
                if isinstance(item, OrchestratedResult):
                    self.result = item
                else:
                    yield item
        except OrchestratorError as exc:
            self._call.stamp(exc)
            raise
        finally:
            inner.close()  # at once, not when garbage is collected: the cancelled attempt is recorded now


class AsyncChatStream:
    """ChatStream for ``async for``; after it is exhausted ``result`` holds the OrchestratedResult."""

    def __init__(self, call: _Call, offload: Offload) -> None:
        self._call = call
        self._offload = offload
        self.result: OrchestratedResult | None = None
        self._iter: AsyncGenerator[str, None] | None = None

    @property
    def request_id(self) -> str:
        return self._call.request_id

    @property
    def requested_model(self) -> str:
        return self._call.requested

    def __aiter__(self) -> AsyncGenerator[str, None]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    async def aclose(self) -> None:
        """Stop reading: a stream still running records its attempt as cancelled."""
        if self._iter is not None:
            await self._iter.aclose()

    async def _run(self) -> AsyncGenerator[str, None]:
        inner = self._call.arun_stream(self._offload)
        try:
            async for item in inner:
                if isinstance(item, OrchestratedResult):
                    self.result = item
                else:
                    yield item
        except OrchestratorError as exc:
            self._call.stamp(exc)
            raise
        finally:
            await inner.aclose()


@dataclass(frozen=True)
class _Begun:
    """An attempt ready to send: its model, connection, keys and provider, and when it started."""

    ref: ModelRef
    connection: Connection
    keys: list[PoolKey | None]
    provider: Provider
    started: float


class _Call:
    """One chat call walking its fallback chain; every attempt becomes an Attempt and a metric row."""

    def __init__(
        self,
        orch: Orchestrator,
        model_id: str,
        messages: list[Message],
        params: dict[str, Any],
        fallback: bool | None,
        on_event: EventSink | None,
        *,
        streamed: bool,
    ) -> None:
        self.orch = orch
        self.group, self.members = orch.resolve(model_id)
        self.requested = self.members[0].id
        self.messages = validate_messages(list(messages))
        _check_size(self.messages)
        self.params = _params(params)
        self.fallback = orch.settings.fallback_enabled if fallback is None else fallback
        self.on_event = on_event
        self.streamed = streamed
        self.request_id = f"{_ID_PREFIX}-{next(_ID_COUNTER):08x}"
        self.attempts: list[Attempt] = []
        self.tried: set[str] = set()
        self.dead_providers: set[str] = set()
        self.refused: tuple[str, ContentFilteredError] | None = None
        self.started = time.perf_counter()
        orch.prices.warm()  # the price table imports while the first call waits for its answer

    # -- the chain -------------------------------------------------------------------------------
    def chain(self) -> Iterator[ModelRef]:
        """Models to try in order: the requested one (a group's members, in order), then suggested alternatives."""
        previous: ModelRef | None = None
        for member in self.members:
            if member.provider in self.dead_providers or member.id in self.tried:
                continue
            if previous is not None:
                self.emit("fallback", member.id, f"{self.group}: moving on from {previous.id} to {member.id}")
            self.tried.add(member.id)
            yield member
            previous = member
        hops = 0
        while previous is not None and self.fallback and hops < self.orch.settings.max_fallback_hops:
            found = self.orch.manager.suggest_alternative(
                previous, exclude=self.tried, exclude_providers=self.dead_providers | self.over_budget(),
                cost_of=self.cost_of(),
            )
            hops += 1
            if found is None:
                return
            self.emit("fallback", found, f"falling back from {previous.id} to {found}")
            self.tried.add(found)
            previous = ModelRef.parse(found)
            yield previous

    def run(self) -> OrchestratedResult:
        try:
            return self._run()
        finally:
            self.orch._refresh_stats_if_wanted()

    async def arun(self, offload: Offload) -> OrchestratedResult:
        """run for a caller on an event loop (Orchestrator.achat): the same steps, the blocking ones through
        offload; the answer is awaited on the loop when the provider can (native_async)."""
        try:
            return await self._arun(offload)
        finally:
            self.orch._refresh_stats_if_wanted()

    async def _arun(self, offload: Offload) -> OrchestratedResult:
        chain = self.chain()
        while (begun := await self.abegin(chain, offload)) is not None:
            ref, started = begun.ref, begun.started
            try:
                for turn, key in enumerate(begun.keys):
                    provider = begun.provider.with_key(key.secret if key else None)
                    try:
                        if provider.native_async:
                            result = await provider.achat(ref.name, self.messages, self.params)
                        else:
                            result = await offload(partial(provider.chat, ref.name, self.messages, self.params))
                    except ProviderError as exc:
                        last = turn == len(begun.keys) - 1
                        if await offload(partial(self.next_key, ref, key, exc, started, last=last)):
                            started = time.perf_counter()
                            continue
                        raise
                    break
            except Exception as raised:  # noqa: BLE001 - see run()
                await offload(partial(self.attempt_failed, ref, raised, started, None, local=begun.connection.local))
                continue
            except BaseException as stop:  # the caller left (the task was cancelled: a timeout, a server stopping)
                self.cancelled(ref.id, stop, started, None)
                raise
            return self.answered(ref, key, result, started, None, local=begun.connection.local)
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    def run_stream(self) -> Generator[str | OrchestratedResult, None, None]:
        try:
            yield from self._run_stream()
        finally:
            self.orch._refresh_stats_if_wanted()

    def _run(self) -> OrchestratedResult:
        chain = self.chain()
        while (begun := self.begin(chain)) is not None:
            ref, started = begun.ref, begun.started
            try:
                for turn, key in enumerate(begun.keys):
                    try:
                        result = begun.provider.with_key(key.secret if key else None).chat(
                            ref.name, self.messages, self.params)
                    except ProviderError as exc:
                        if self.next_key(ref, key, exc, started, last=turn == len(begun.keys) - 1):
                            started = time.perf_counter()
                            continue
                        raise
                    break
            except Exception as raised:  # noqa: BLE001 - a bug in a client must still end in a documented error
                self.attempt_failed(ref, raised, started, None, local=begun.connection.local)
                continue
            return self.answered(ref, key, result, started, None, local=begun.connection.local)
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    def _run_stream(self) -> Generator[str | OrchestratedResult, None, None]:
        for ref in self.chain():
            model_id = ref.id
            plan = self.plan(ref)
            if plan is None:
                continue
            connection, keys = plan
            started = time.perf_counter()
            first: float | None = None
            try:
                provider = self.prepare(ref, connection)
                result: ChatResult | None = None
                for turn, key in enumerate(keys):
                    stream = provider.with_key(key.secret if key else None).stream_chat(
                        ref.name, self.messages, self.params)
                    try:
                        for event in stream:
                            if isinstance(event, TextDelta):
                                if first is None:
                                    first = _ms(started)
                                yield event.text
                            else:
                                result = event
                    except ProviderError as key_exc:
                        if first is None and self.next_key(ref, key, key_exc, started, last=turn == len(keys) - 1):
                            started = time.perf_counter()
                            continue
                        raise
                    self.key_used(key)
                    break
                if result is None:
                    raise BadResponseError(f"{model_id} ended its stream without a result.", model=model_id)
            except Exception as raised:  # noqa: BLE001 - see run()
                self.attempt_failed(ref, raised, started, first, local=connection.local)
                continue
            except BaseException as stop:  # the reader stopped early (closed tab, "stop" button, Ctrl-C, SIGTERM)
                self.cancelled(model_id, stop, started, first)
                raise
            self.succeeded(model_id, result, _ms(started), ttft=first)
            yield self.finish(ref, result, ttft=first, local=connection.local)
            return
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    async def arun_stream(self, offload: Offload) -> AsyncGenerator[str | OrchestratedResult, None]:
        """run_stream for a caller on an event loop (Orchestrator.astream_chat): the same steps, the blocking
        ones through offload; the answer is read on the loop when the provider streams natively."""
        try:
            async for item in self._arun_stream(offload):
                yield item
        finally:
            self.orch._refresh_stats_if_wanted()

    async def _arun_stream(self, offload: Offload) -> AsyncGenerator[str | OrchestratedResult, None]:
        chain = self.chain()
        while (begun := await self.abegin(chain, offload)) is not None:
            ref, connection = begun.ref, begun.connection
            started, first = begun.started, None
            try:
                result: ChatResult | None = None
                for turn, key in enumerate(begun.keys):
                    events = self.events(begun.provider.with_key(key.secret if key else None), ref, offload)
                    try:
                        async for event in events:
                            if isinstance(event, TextDelta):
                                if first is None:
                                    first = _ms(started)
                                yield event.text
                            else:
                                result = event
                    except ProviderError as key_exc:
                        last = turn == len(begun.keys) - 1
                        if first is None and await offload(partial(self.next_key, ref, key, key_exc, started,
                                                                   last=last)):
                            started = time.perf_counter()
                            continue
                        raise
                    finally:
                        await _aclose(events)
                    break
                if result is None:
                    raise BadResponseError(f"{ref.id} ended its stream without a result.", model=ref.id)
            except Exception as raised:  # noqa: BLE001 - see run()
                await offload(partial(self.attempt_failed, ref, raised, started, first, local=connection.local))
                continue
            except BaseException as stop:  # the reader left (the task was cancelled) or the loop is closing
                if result is not None:  # it left while the connection was let go after the whole answer
                    self.answered(ref, key, result, started, first, local=connection.local)
                else:
                    self.cancelled(ref.id, stop, started, first)
                raise
            yield self.answered(ref, key, result, started, first, local=connection.local)
            return
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    async def abegin(self, chain: Iterator[ModelRef], offload: Offload) -> _Begun | None:
        """begin() on the loop for the requested model when it is ready by what is known in memory (the common
        case: a worker hop costs a few loop turns, ~4 ms at 64 streams), else on a worker.

        A reader that leaves while a worker prepares (a load can take minutes) does not stop it: the attempt it
        prepared is recorded as cancelled when it is ready, as a stream left before its first token."""
        if not self.tried and self.orch.budgets.checks_from_memory() and self.orch.manager.ready_from_cache(
                self.members[0]):
            first = next(chain)  # the requested model (a group's first member): no ranking, no request
            begun = self.begin_one(first, known_ready=True)
            if begun is not None:
                return begun
        pending = asyncio.ensure_future(offload(partial(self.begin, chain)))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(self._cancelled_before_sending)
            raise

    def _cancelled_before_sending(self, pending: asyncio.Future[_Begun | None]) -> None:
        begun = None if pending.cancelled() or pending.exception() is not None else pending.result()
        if begun is not None:
            self.cancelled(begun.ref.id, asyncio.CancelledError(), begun.started, None)

    def begin(self, chain: Iterator[ModelRef]) -> _Begun | None:
        """The next attempt of the chain, planned and checked-and-loaded; None when the chain is done."""
        for ref in chain:
            begun = self.begin_one(ref)
            if begun is not None:
                return begun
        return None

    def begin_one(self, ref: ModelRef, *, known_ready: bool = False) -> _Begun | None:
        """One model's attempt planned and checked-and-loaded; None when it is skipped or its preparation failed
        (recorded by failed(), as run_stream does; failed() raises when the call ends there). known_ready: the
        caller saw it ready in memory (ready_from_cache) and it is not checked again: no probe, no load."""
        plan = self.plan(ref)
        if plan is None:
            return None
        connection, keys = plan
        started = time.perf_counter()
        try:
            return _Begun(ref, connection, keys, self.prepare(ref, connection, known_ready=known_ready), started)
        except Exception as raised:  # noqa: BLE001 - see run()
            self.attempt_failed(ref, raised, started, None, local=connection.local)
        return None

    def events(self, provider: Provider, ref: ModelRef, offload: Offload) -> AsyncIterator[StreamEvent]:
        """The attempt's stream on the loop: read there when the provider can, else on one worker thread."""
        if provider.native_async:
            return provider.astream_chat(ref.name, self.messages, self.params)
        return bridged(partial(provider.stream_chat, ref.name, self.messages, self.params), offload)

    def attempt_failed(self, ref: ModelRef, raised: Exception, started: float, first: float | None, *,
                       local: bool) -> None:
        """Record a failed attempt; raise when the call ends here: no model may be tried, or (a stream) text
        already reached the reader (switching models would garble it: StreamInterruptedError)."""
        exc = raised if isinstance(raised, OrchestratorError) else _unexpected(ref.id, raised)
        try:
            self.failed(ref, exc, started, ttft=first, local=local)
        except OrchestratorError:
            if first is None:
                raise
            # failed() raises when no other model may be tried; after the first token the caller
            # must still learn that the text it has is cut short, whatever the fallback setting.
        if first is not None:
            how = "was cut by a safety stop" if isinstance(exc, ContentFilteredError) else "broke off"
            raise StreamInterruptedError(
                f"The answer from {ref.id} {how} after it started: {exc.message}",
                cause=exc, provider=exc.provider, model=ref.id,
            ) from exc

    def cancelled(self, model_id: str, stop: BaseException, started: float, first: float | None) -> None:
        """The reader stopped early (closed tab, "stop" button, a client that left, Ctrl-C, SIGTERM)."""
        reason = "interrupted" if isinstance(stop, (KeyboardInterrupt, SystemExit)) else "stopped by the reader"
        self.add_attempt(Attempt(model_id, "error", _ms(started), "cancelled", reason, first, self._from()))

    def answered(self, ref: ModelRef, key: PoolKey | None, result: ChatResult, started: float, first: float | None,
                 *, local: bool) -> OrchestratedResult:
        """An attempt answered with this key: record it and its key's use; the call's result. In memory only
        (the metric row is queued, the key's last use written in the background): the loop path runs it there."""
        self.key_used(key)
        self.succeeded(ref.id, result, _ms(started), ttft=first)
        return self.finish(ref, result, ttft=first, local=local)

    # -- steps -----------------------------------------------------------------------------------
    def plan(self, ref: ModelRef) -> tuple[Connection, list[PoolKey | None]] | None:
        """What one attempt needs, each looked up once: its connection and the keys to try; None when the
        model is skipped (cooling down, over budget, no usable key). An unknown connection raises here."""
        if self.skip_if_cooling(ref.id):
            return None
        connection = self.orch.factory.connection(ref.provider)
        if self.skip_if_over_budget(ref, connection):
            return None
        keys = self.keys_or_skip(ref, connection)
        return None if keys is None else (connection, keys)

    def skip_if_cooling(self, model_id: str) -> bool:
        """A model in cooldown costs no network attempt: record it as skipped and move on."""
        try:
            entry = self.orch.failures.get(model_id)
        except Exception:
            log.warning("could not read the failure cache for %s", model_id, exc_info=True)
            return False
        if entry is None:
            return False
        until = entry.until.astimezone().strftime("%H:%M:%S")
        detail = f"in cooldown until {until} after {entry.error_kind}; reset it on the Models page"
        self.add_attempt(Attempt(model_id, "skipped", 0.0, "cooling_down", detail, None, self._from()))
        self.emit("attempt_failed", model_id, detail)
        return True

    def skip_if_over_budget(self, ref: ModelRef, connection: Connection) -> bool:
        """A spent budget refuses the requested model and skips a fallback (or a later group member) to its
        connection; a group whose every member is over budget ends as AllModelsFailedError."""
        model_id = ref.id
        try:
            self.orch.budgets.check(ref.provider, model_id, local=connection.local)
        except BudgetExceededError as exc:
            if model_id == self.requested and self.group is None:
                self.add_attempt(Attempt(model_id, "error", 0.0, exc.kind, exc.message, None, self._from()))
                raise
            self.dead_providers.add(ref.provider)
            self.add_attempt(Attempt(model_id, "skipped", 0.0, exc.kind, exc.message, None, self._from()))
            self.emit("attempt_failed", model_id, exc.message, error=exc)
            return True
        except Exception:
            log.warning("could not check the budgets for %s", model_id, exc_info=True)
        return False

    def over_budget(self) -> set[str]:
        return self.orch.over_budget_connections()

    def cost_of(self) -> Callable[[str], float | None] | None:
        """RANKING=cost: a model's estimated cost for this request's size; None with RANKING=priority."""
        if self.orch.settings.ranking != "cost":
            return None
        size = sum(len(m["content"]) for m in self.messages)
        input_tokens, output_tokens = estimated_tokens(size, self.params.max_tokens)
        prices = self.orch.prices
        return lambda model_id: prices.estimate(model_id, input_tokens, output_tokens)

    def prepare(self, ref: ModelRef, connection: Connection, *, known_ready: bool = False) -> Provider:
        """Check and load: never send a prompt to a local model that is not ready, nor to a disabled connection.

        known_ready: its host's fresh answer says it is ready (ready_from_cache, a moment ago): not asked again."""
        if not connection.enabled:
            raise ConnectionDisabledError(
                f"Connection {connection.name} is disabled; enable it on the Connections page or with "
                f"'python -m orchestrator_core connections edit {connection.name} --enable'.",
                provider=connection.name, model=ref.id,
            )
        if connection.local and not known_ready:
            manager = self.orch.manager
            status = manager.check_status(ref)
            if not status.state.ready:  # a sleeping llama-server model wakes on the prompt itself
                if status.state is not ModelState.HOST_DOWN:  # nothing loads there: ensure_ready says why
                    self.emit("loading", ref.id, f"{ref.id} is {status.state.value}; loading it first")
                manager.ensure_ready(ref, on_progress=self._progress)
                connection = self.orch.factory.connection(ref.provider)  # as it is after the load, which took a while
        if self.on_event is not None:
            self.emit("answering", ref.id, f"sending the prompt to {ref.id}")
        return self.orch.factory.provider_for(connection)

    def keys_or_skip(self, ref: ModelRef, connection: Connection) -> list[PoolKey | None] | None:
        """The keys this call tries on the model's connection, in order ([None]: it has none at all).

        None when it has keys but every one is cooling, exhausted or rejected: like a model in cooldown, that
        costs no network attempt; the attempt is recorded as skipped and the whole connection sits out."""
        pool, problem = self.orch.keys.pool_or_problem(
            connection.name, round_robin=connection.key_mode is KeyMode.ROUND_ROBIN)
        if pool:
            return list(pool)
        if problem is None:
            return [None]
        self.dead_providers.add(connection.name)
        self.add_attempt(Attempt(ref.id, "skipped", 0.0, "no_usable_key", problem, None, self._from()))
        self.emit("attempt_failed", ref.id, problem)
        return None

    def next_key(self, ref: ModelRef, key: PoolKey | None, exc: ProviderError, started: float, *, last: bool) -> bool:
        """Note what a failure says about the key; True when the call should try the connection's next key.

        Only in a pool of two or more keys: a lone key's failure is the model's, as before pools (it cools
        down, the connection sits out this call), so one key never stays out of use once the model is reset."""
        if key is None or exc.key_fault is None or self.orch.keys.pool_size(ref.provider) < 2:
            return False
        try:
            self.orch.keys.record_fault(key.id, exc.key_fault, exc.message, self._key_cooldown(exc))
        except Exception:  # a busy database must not turn a rotation into a failed call
            log.warning("could not record the state of key %s", key.masked, exc_info=True)
        if last:
            return False
        detail = f"key {key.masked}: {exc.message}; trying the next key of {ref.provider}"
        self.add_attempt(Attempt(ref.id, "error", _ms(started), exc.kind, detail, None, self._from()))
        self.emit("attempt_failed", ref.id, detail, error=exc)
        return True

    def _key_cooldown(self, exc: ProviderError) -> float:
        if exc.key_fault == "exhausted":
            return KEY_EXHAUSTED_COOLDOWN_S
        return max(exc.retry_after or self.orch.settings.failure_cooldown_s, 1.0)

    def key_used(self, key: PoolKey | None) -> None:
        if key is None:
            return
        try:
            self.orch.keys.record_used(key.id, background=self.orch._pool)
        except Exception:
            log.warning("could not record when a key was last used", exc_info=True)

    def failed(self, ref: ModelRef, exc: OrchestratorError, started: float, ttft: float | None, *,
               local: bool) -> None:
        model_id = ref.id
        self.add_attempt(Attempt(model_id, "error", _ms(started), exc.kind, exc.message, ttft, self._from()))
        self.emit("attempt_failed", model_id, exc.message, error=exc)
        if isinstance(exc, ContentFilteredError):
            self.refused = (model_id, exc)
        if not should_fall_back(exc, on_content_filter=self.orch.settings.fallback_on_content_filter):
            raise exc  # the caller must fix the request: another model would fail the same way
        try:
            if cools_down(exc):
                self.orch.manager.record_failure(model_id, exc)
        except Exception:
            log.warning("could not record the failure of %s", model_id, exc_info=True)
        if is_connection_wide(exc, local=local):
            self.dead_providers.add(ref.provider)
        members_left = any(m.id not in self.tried and m.provider not in self.dead_providers for m in self.members)
        if isinstance(exc, ProviderError) and not self.fallback and not members_left:
            raise exc

    def succeeded(self, model_id: str, result: ChatResult, latency: float, ttft: float | None) -> None:
        cost, requested = self.costs(model_id, result.usage)
        attempt = Attempt(model_id, "ok", latency, None, None, ttft, self._from(),
                          cost.total_usd if cost is not None else None)
        self.add_attempt(attempt, result, cost, requested)

    def finish(self, ref: ModelRef, result: ChatResult, ttft: float | None, *, local: bool) -> OrchestratedResult:
        notes: list[str] = []
        if local and not _same_model(ref.name, result.model):
            notes.append(f"The host answered with {result.model!r}, not {ref.name!r}.")
        return OrchestratedResult(
            result=result,
            model_id=ref.id,
            requested_model=self.requested,
            attempts=tuple(self.attempts),
            latency_ms=_ms(self.started),
            ttft_ms=ttft,
            request_id=self.request_id,
            notes=tuple(notes),
            group=self.group,
        )

    # -- bookkeeping -------------------------------------------------------------------------------
    def stamp(self, exc: OrchestratorError) -> None:
        """Mark exc as the end of this call: its request id and attempts."""
        exc.request_id = self.request_id
        exc.call_attempts = tuple(self.attempts)

    def _from(self) -> str | None:
        """The model this attempt falls back from (the previous tried model), if any."""
        return self.attempts[-1].model if self.attempts else None

    def add_attempt(self, attempt: Attempt, result: ChatResult | None = None, cost: Cost | None = None,
                    requested: Cost | None = None) -> None:
        """Keep the attempt and write its call_metrics row (with its cost); recording never breaks a call."""
        usage = result.usage if result else None
        self.attempts.append(attempt)
        try:
            self.orch.metrics.record(
                _metric_row().from_attempt(
                    attempt,
                    request_id=self.request_id,
                    requested_model=self.requested,
                    provider=ModelRef.parse(attempt.model).provider,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    streamed=self.streamed,
                    input_cost_usd=cost.input_usd if cost else None,
                    output_cost_usd=cost.output_usd if cost else None,
                    cost_usd=cost.total_usd if cost else None,
                    price_source=cost.source if cost else None,
                    requested_cost_usd=requested.total_usd if requested else None,
                )
            )
        except Exception:
            log.warning("could not record a call metric for %s", attempt.model, exc_info=True)

    def costs(self, model_id: str, usage: Usage) -> tuple[Cost | None, Cost | None]:
        """An answer's cost and, for an answer by a fallback, what the requested model would have charged."""
        try:
            cost = self.orch.prices.cost(model_id, usage)
            fell_back = model_id != self.requested
            requested = self.orch.prices.cost(self.requested, usage) if cost is not None and fell_back else None
        except Exception:
            log.warning("could not price an answer of %s", model_id, exc_info=True)
            return None, None
        return cost, requested

    def emit(self, kind: str, model_id: str, detail: str, *, error: OrchestratorError | None = None) -> None:
        if self.on_event is not None:
            self.on_event(CallEvent(kind, model_id, detail, time.perf_counter() - self.started, error))

    def _progress(self, progress: LoadProgress) -> None:
        self.emit("load_progress", progress.model_id, progress.detail)


async def _aclose(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)  # an async generator's: its response closes now, not at collection
    if aclose is not None:
        await aclose()


def _unexpected(model_id: str, exc: Exception) -> BadResponseError:
    log.error("unexpected error from %s", model_id, exc_info=exc)
    return BadResponseError(
        f"{model_id} failed in an unexpected way ({type(exc).__name__}); see the log for details.",
        model=model_id,
    )


def _metric_row() -> type[MetricRow]:
    """store.metrics.MetricRow, imported on the first recorded call (an import statement per call costs more)."""
    global _METRIC_ROW
    if _METRIC_ROW is None:
        from .store.metrics import MetricRow  # noqa: PLC0415 - the metrics module loads on the first recorded call

        _METRIC_ROW = MetricRow
    return _METRIC_ROW


_METRIC_ROW: type[MetricRow] | None = None
_NO_PARAMS = ChatParams()
MAX_STOP_SEQUENCES = 16  # OpenAI takes 4, Anthropic more; no host needs hundreds
MAX_STOP_CHARS = 1000


def _params(params: dict[str, Any]) -> ChatParams:
    if not params:
        return _NO_PARAMS
    unknown = set(params) - {"temperature", "max_tokens", "top_p", "stop"}
    if unknown:
        raise InputError(f"Unknown chat parameter(s): {', '.join(sorted(unknown))}; use temperature, max_tokens, "
                         "top_p or stop.")
    stop = params.get("stop")
    if stop and (len(stop) > MAX_STOP_SEQUENCES or any(len(s) > MAX_STOP_CHARS for s in stop)):
        # A host refusing a huge list answers 4xx/5xx, and that would cool the model down for every caller.
        raise InvalidParameterError(
            f"stop takes at most {MAX_STOP_SEQUENCES} sequences of at most {MAX_STOP_CHARS} characters each "
            f"(got {len(stop)}, the longest {max(len(s) for s in stop):,} characters); send fewer or shorter ones.",
            param="stop")
    return ChatParams(
        temperature=params.get("temperature"),
        max_tokens=params.get("max_tokens"),
        top_p=params.get("top_p"),
        stop=tuple(stop) if stop else None,
    )


def _check_size(messages: list[Message]) -> None:
    size = sum(len(m["content"]) for m in messages)
    if size > MAX_PROMPT_CHARS:
        raise InputError(
            f"The conversation is {size:,} characters, over the {MAX_PROMPT_CHARS:,} limit; shorten it or clear "
            "earlier turns."
        )


def _same_model(requested: str, answered: str) -> bool:
    """LM Studio may name a second instance "<key>:2" and Ollama adds ":latest": treat those as the same."""
    def base(name: str) -> str:
        name = name.rsplit("/", 1)[-1] if "/" not in requested else name
        head, _, tail = name.rpartition(":")
        return head if head and (tail.isdigit() or tail == "latest") else name

    return base(requested) == base(answered)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class _ConnectionNames(CollectionABC[str]):
    """The names of the connections now: what the key store and the registry accept as a prefix."""

    def __init__(self, store: ConnectionStore) -> None:
        self._store = store

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(c.name == name for c in self._store.list())

    def __iter__(self) -> Iterator[str]:
        return iter([c.name for c in self._store.list()])

    def __len__(self) -> int:
        return len(self._store.list())
