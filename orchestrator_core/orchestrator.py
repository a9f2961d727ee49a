"""Orchestrator: the facade the console, the CLI and scripts use to run prompts with check-and-load and fallback.

A call walks a chain of models. Before a local model is called it is checked and, if needed, loaded
and waited for. A failure another model could fix is recorded, the model cools down and the call
moves to ``ModelManager.suggest_alternative``, up to ``max_fallback_hops`` times; a caller error
(bad request, empty prompt) is raised at once. Every attempt is written to ``call_metrics``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from . import exits
from .budgets import BudgetGuard
from .clients import ProviderFactory
from .config import Settings
from .errors import (
    AllModelsFailedError,
    BadResponseError,
    BudgetExceededError,
    ContentFilteredError,
    InputError,
    InvalidKeyInputError,
    OrchestratorError,
    ProviderError,
    StreamInterruptedError,
    should_fall_back,
)
from .fallback import cools_down, is_provider_wide
from .loader import LoadProgress, ModelManager
from .pricing import Cost, PriceBook, estimated_tokens
from .providers.registry import LOCAL_PROVIDERS, PROVIDERS, is_local, provider_class
from .store.db import Database
from .store.failures import FailureCache
from .store.keys import KeyStore
from .store.prices import ALL_CONNECTIONS, PricingStore
from .store.registry import ModelRegistry
from .store.secret import load_fernet
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
    OrchestratedResult,
    TextDelta,
    Usage,
    validate_messages,
)

if TYPE_CHECKING:
    from .store.metrics import MetricsRecorder

log = logging.getLogger("orchestrator_core")

MAX_PROMPT_CHARS = 2_000_000  # a guard against pasting a file by mistake, far above any context window
# Request ids: a random per-process prefix and a counter; os.urandom per call costs more than the
# rest of the facade on some machines.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)
STATS_MAX_AGE_S = 30.0  # ranking statistics older than this are refreshed in the background


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
        self.keys = KeyStore(database, fernet, env_keys=settings.env_keys, known_providers=tuple(PROVIDERS))
        self.keys.verify_secret()
        self.registry = ModelRegistry(database, known_providers=tuple(PROVIDERS))
        self.failures = FailureCache(database)
        self._metrics: MetricsRecorder | None = None
        self._metrics_lock = threading.Lock()
        spool = Spool.for_database(database)
        if spool is not None and spool.pending():
            _ = self.metrics  # rows an earlier process spooled are written at this start, not at the first call
        self.tokens = TokenStore(database)  # gateway tokens of the HTTP API (api/)
        self.pricing = PricingStore(database)  # price overrides and budgets (issue 11)
        self.prices = PriceBook(self.pricing.override_prices)
        self.budgets = BudgetGuard(database, self.pricing)
        self.factory = ProviderFactory(settings, self.keys.secret_for)
        # Long-lived: host probes and statistics refreshes must not start threads during a call.
        self._pool = ThreadPoolExecutor(max_workers=len(LOCAL_PROVIDERS), thread_name_prefix="orchestrator")
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
        self._pool.shutdown(wait=True)
        self.manager.close()
        self.factory.close()
        self.db.dispose()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat ------------------------------------------------------------------------------------
    def chat(
        self,
        model_id: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        **params: Any,
    ) -> OrchestratedResult:
        """Send messages to model_id, loading it first if needed and falling back on failures."""
        call = _Call(self, model_id, messages, params, fallback, on_event, streamed=False)
        try:
            return call.run()
        except OrchestratorError as exc:
            call.stamp(exc)
            raise

    def stream_chat(
        self,
        model_id: str,
        messages: list[Message],
        *,
        fallback: bool | None = None,
        on_event: EventSink | None = None,
        **params: Any,
    ) -> ChatStream:
        """Like chat, but iterate the returned ChatStream for text; ``.result`` is set when it ends."""
        call = _Call(self, model_id, messages, params, fallback, on_event, streamed=True)
        return ChatStream(call)

    # -- keys --------------------------------------------------------------------------------------
    def test_key(self, key_id: int | str) -> KeyTestResult:
        """Test one stored or environment key against its provider and persist the result."""
        info = next((k for k in self.keys.list() if k.id == key_id), None)
        if info is None:
            raise InvalidKeyInputError(f"No key with id {key_id!r}; it may have been deleted.")
        provider = self.factory.get(info.provider, "status", api_key=self.keys.secret_by_id(key_id))
        result = provider.test_key()
        self.keys.record_test(key_id, result)
        return result

    def test_all_keys(self) -> dict[int | str, KeyTestResult]:
        """Test every key; keys of different providers are tested concurrently."""
        ids = [k.id for k in self.keys.list()]
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(ids)), thread_name_prefix="key-test") as pool:
            return dict(zip(ids, pool.map(self.test_key, ids), strict=True))

    # -- cost -------------------------------------------------------------------------------------
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
        ref = ModelRef.parse(model_id)
        self.requested = ref.id
        provider_class(ref.provider)
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
    def chain(self) -> Iterator[str]:
        """Models to try in order: the requested one, then suggested alternatives."""
        current: str | None = self.requested
        previous: str | None = None
        hops = 0
        while current is not None:
            self.tried.add(current)
            yield current
            if not self.fallback or hops >= self.orch.settings.max_fallback_hops:
                return
            previous = current
            current = self.orch.manager.suggest_alternative(
                previous, exclude=self.tried, exclude_providers=self.dead_providers | self.over_budget(),
                cost_of=self.cost_of(),
            )
            hops += 1
            if current is not None:
                self.emit("fallback", current, f"falling back from {previous} to {current}")

    def run(self) -> OrchestratedResult:
        try:
            return self._run()
        finally:
            self.orch._refresh_stats_if_wanted()

    def run_stream(self) -> Generator[str | OrchestratedResult, None, None]:
        try:
            yield from self._run_stream()
        finally:
            self.orch._refresh_stats_if_wanted()

    def _run(self) -> OrchestratedResult:
        for model_id in self.chain():
            if self.skip_if_cooling(model_id) or self.skip_if_over_budget(model_id):
                continue
            started = time.perf_counter()
            try:
                provider, name = self.prepare(model_id)
                result = provider.chat(name, self.messages, self.params)
            except OrchestratorError as exc:
                self.failed(model_id, exc, started, ttft=None)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug in a client must still end in a documented error
                self.failed(model_id, _unexpected(model_id, exc), started, ttft=None)
                continue
            latency = _ms(started)
            self.succeeded(model_id, result, latency, ttft=None)
            return self.finish(model_id, result, ttft=None)
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    def _run_stream(self) -> Generator[str | OrchestratedResult, None, None]:
        for model_id in self.chain():
            if self.skip_if_cooling(model_id) or self.skip_if_over_budget(model_id):
                continue
            started = time.perf_counter()
            first: float | None = None
            try:
                provider, name = self.prepare(model_id)
                stream = provider.stream_chat(name, self.messages, self.params)
                result: ChatResult | None = None
                for event in stream:
                    if isinstance(event, TextDelta):
                        if first is None:
                            first = _ms(started)
                        yield event.text
                    else:
                        result = event
                if result is None:
                    raise BadResponseError(f"{model_id} ended its stream without a result.", model=model_id)
            except Exception as raised:  # noqa: BLE001 - see run()
                exc = raised if isinstance(raised, OrchestratorError) else _unexpected(model_id, raised)
                try:
                    self.failed(model_id, exc, started, ttft=first)
                except OrchestratorError:
                    if first is None:
                        raise
                    # failed() raises when no other model may be tried; after the first token the caller
                    # must still learn that the text it has is cut short, whatever the fallback setting.
                if first is not None:  # text already reached the reader: switching models would garble it
                    how = "was cut by a safety stop" if isinstance(exc, ContentFilteredError) else "broke off"
                    raise StreamInterruptedError(
                        f"The answer from {model_id} {how} after it started: {exc.message}",
                        cause=exc, provider=exc.provider, model=model_id,
                    ) from exc
                continue
            except BaseException as stop:  # the reader stopped early (closed tab, "stop" button, Ctrl-C, SIGTERM)
                reason = "interrupted" if isinstance(stop, (KeyboardInterrupt, SystemExit)) else "stopped by the reader"
                self.add_attempt(Attempt(model_id, "error", _ms(started), "cancelled", reason, first, self._from()))
                raise
            self.succeeded(model_id, result, _ms(started), ttft=first)
            yield self.finish(model_id, result, ttft=first)
            return
        raise AllModelsFailedError(self.attempts, model=self.requested, refused=self.refused)

    # -- steps -----------------------------------------------------------------------------------
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

    def skip_if_over_budget(self, model_id: str) -> bool:
        """A spent budget refuses the requested model and skips a fallback to one of its connection."""
        provider = ModelRef.parse(model_id).provider
        try:
            self.orch.budgets.check(provider, model_id, local=is_local(provider))
        except BudgetExceededError as exc:
            if model_id == self.requested:
                self.add_attempt(Attempt(model_id, "error", 0.0, exc.kind, exc.message, None, self._from()))
                raise
            self.dead_providers.add(provider)
            self.add_attempt(Attempt(model_id, "skipped", 0.0, exc.kind, exc.message, None, self._from()))
            self.emit("attempt_failed", model_id, exc.message, error=exc)
            return True
        except Exception:
            log.warning("could not check the budgets for %s", model_id, exc_info=True)
        return False

    def over_budget(self) -> set[str]:
        """Connections fallback must not pick: their budget, or the overall one, is spent."""
        try:
            blocked = self.orch.budgets.blocked_connections()
        except Exception:
            log.warning("could not read the budgets", exc_info=True)
            return set()
        if ALL_CONNECTIONS in blocked:
            return {name for name in PROVIDERS if not is_local(name)}
        return set(blocked)

    def cost_of(self) -> Callable[[str], float | None] | None:
        """RANKING=cost: a model's estimated cost for this request's size; None with RANKING=priority."""
        if self.orch.settings.ranking != "cost":
            return None
        size = sum(len(m["content"]) for m in self.messages)
        input_tokens, output_tokens = estimated_tokens(size, self.params.max_tokens)
        prices = self.orch.prices
        return lambda model_id: prices.estimate(model_id, input_tokens, output_tokens)

    def prepare(self, model_id: str) -> tuple[Any, str]:
        """Check and load: never send a prompt to a local model that is not ready."""
        ref = ModelRef.parse(model_id)
        if is_local(ref.provider):
            manager = self.orch.manager
            status = manager.check_status(model_id)
            if not status.state.ready:  # a sleeping llama-server model wakes on the prompt itself
                if status.state is not ModelState.HOST_DOWN:  # nothing loads there: ensure_ready says why
                    self.emit("loading", model_id, f"{model_id} is {status.state.value}; loading it first")
                manager.ensure_ready(model_id, on_progress=self._progress)
        self.emit("answering", model_id, f"sending the prompt to {model_id}")
        return self.orch.factory.get(ref.provider), ref.name

    def failed(self, model_id: str, exc: OrchestratorError, started: float, ttft: float | None) -> None:
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
        if is_provider_wide(exc, model_id):
            self.dead_providers.add(ModelRef.parse(model_id).provider)
        if isinstance(exc, ProviderError) and not self.fallback:
            raise exc

    def succeeded(self, model_id: str, result: ChatResult, latency: float, ttft: float | None) -> None:
        cost, requested = self.costs(model_id, result.usage)
        attempt = Attempt(model_id, "ok", latency, None, None, ttft, self._from(),
                          cost.total_usd if cost is not None else None)
        self.add_attempt(attempt, result, cost, requested)

    def finish(self, model_id: str, result: ChatResult, ttft: float | None) -> OrchestratedResult:
        notes: list[str] = []
        name = ModelRef.parse(model_id).name
        if is_local(ModelRef.parse(model_id).provider) and not _same_model(name, result.model):
            notes.append(f"The host answered with {result.model!r}, not {name!r}.")
        return OrchestratedResult(
            result=result,
            model_id=model_id,
            requested_model=self.requested,
            attempts=tuple(self.attempts),
            latency_ms=_ms(self.started),
            ttft_ms=ttft,
            request_id=self.request_id,
            notes=tuple(notes),
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
            from .store.metrics import MetricRow  # noqa: PLC0415 - the metrics module loads on the first recorded call

            self.orch.metrics.record(
                MetricRow.from_attempt(
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


def _unexpected(model_id: str, exc: Exception) -> BadResponseError:
    log.error("unexpected error from %s", model_id, exc_info=exc)
    return BadResponseError(
        f"{model_id} failed in an unexpected way ({type(exc).__name__}); see the log for details.",
        model=model_id,
    )


def _params(params: dict[str, Any]) -> ChatParams:
    unknown = set(params) - {"temperature", "max_tokens", "top_p", "stop"}
    if unknown:
        raise InputError(f"Unknown chat parameter(s): {', '.join(sorted(unknown))}; use temperature, max_tokens, "
                         "top_p or stop.")
    stop = params.get("stop")
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

