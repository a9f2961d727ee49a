"""ModelManager: live status, load / wait / unload of local models, alternatives and the failure cache.

Status of every model costs ONE request per local host (its model list), served from a short-lived
cache; hosted models are judged by their key without a request. Only hosts whose answer is stale are
asked, on one long-lived thread pool; choosing a fallback during a call asks no host that has answered
before. Loads run on a background thread per model so a caller can show progress while ``wait_for_load``
polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import cast

import httpx

from .clients import ProviderFactory
from .config import Settings
from .errors import (
    ModelLoadError,
    ModelLoadTimeoutError,
    OrchestratorError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from .fallback import cooldown_seconds, rank_alternatives
from .providers.base import LocalHost
from .providers.registry import PROVIDERS, is_local, provider_class
from .store import FailureCache, FailureEntry, ModelRegistry
from .types import HostModel, ModelRef, ModelState, ModelStatus

StatsSource = Callable[[], Mapping[str, tuple[float, float]]]


@dataclass(frozen=True)
class HostStatus:
    """Reachability of one local host, for the sidebar and the overview."""

    provider: str
    display_name: str
    base_url: str
    reachable: bool
    detail: str
    models: int
    loaded: int
    checked_at: datetime


@dataclass(frozen=True)
class LoadProgress:
    model_id: str
    elapsed_s: float
    state: ModelState
    detail: str


@dataclass
class _Snapshot:
    models: list[HostModel] | None
    error: OrchestratorError | None
    checked_at: datetime
    fetched: float
    # Which listed model each requested name is: every fallback hop asks for every active model again.
    found: dict[str, HostModel | None] = field(default_factory=dict)


@dataclass
class _LoadJob:
    model_id: str
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    error: OrchestratorError | None = None


class ModelManager:
    """The seven model operations of the console, over every active model."""

    def __init__(
        self,
        settings: Settings,
        factory: ProviderFactory,
        registry: ModelRegistry,
        failures: FailureCache,
        stats: StatsSource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        pool: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.registry = registry
        self.failures = failures
        self._stats = stats or (lambda: {})
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}
        self._host_locks = {p: threading.Lock() for p in PROVIDERS if is_local(p)}
        self._jobs: dict[str, _LoadJob] = {}
        self._jobs_lock = threading.Lock()
        # Probes of several stale hosts run here; a pool per status check would start threads every time.
        self._pool = pool
        self._own_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the probe threads this manager started (a pool passed in belongs to the caller)."""
        with self._pool_lock:
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # -- status ---------------------------------------------------------------------------------
    def check_status(self, model_id: str, *, force: bool = False) -> ModelStatus:
        """The state of one model: loaded, loading, not loaded, host down, cooling down, key or not."""
        ref = ModelRef.parse(model_id)
        provider_class(ref.provider)
        probed = is_local(ref.provider) and ref.provider in self.settings.local_hosts
        snapshot = self._snapshot(ref.provider, force) if probed else None
        return self._status(ref, snapshot, self.failures.active())

    def list_with_status(self, *, force: bool = False, cached: bool = False) -> list[ModelStatus]:
        """Every active model with its status: one request per stale local host, hosts checked concurrently.

        ``cached``: use every host's last answer however old, asking only a host never asked (for choosing
        a fallback in the middle of a call, where a probe would add its time to the user's wait)."""
        snapshots = self._all_snapshots(force, cached=cached)
        failures = self.failures.active()
        refs = [ModelRef.parse(e.model_id) for e in self.registry.list(active_only=True)]
        return [self._status(r, snapshots.get(r.provider), failures) for r in refs if r.provider in PROVIDERS]

    def hosts(self, *, force: bool = False) -> list[HostStatus]:
        """Reachability and model counts of every local host."""
        result = []
        for provider, snap in self._all_snapshots(force).items():
            models = snap.models or []
            result.append(
                HostStatus(
                    provider=provider,
                    display_name=provider_class(provider).display_name,
                    base_url=self.settings.base_url(provider),
                    reachable=snap.error is None,
                    detail=snap.error.message if snap.error else f"{len(models)} models",
                    models=len(models),
                    loaded=sum(m.state is ModelState.LOADED for m in models),
                    checked_at=snap.checked_at,
                )
            )
        return result

    def _status(
        self, ref: ModelRef, snapshot: _Snapshot | None, failures: Mapping[str, FailureEntry]
    ) -> ModelStatus:
        now = datetime.now(timezone.utc)
        failure = failures.get(ref.id)
        local = is_local(ref.provider)
        if failure is not None:
            until = failure.until.astimezone().strftime("%H:%M:%S")
            return ModelStatus(
                ref.id, ModelState.COOLING_DOWN, f"{failure.error_kind}: {failure.message} (until {until})",
                now, cooldown_until=failure.until, local=local,
            )
        if not local:
            return self._hosted_status(ref, now)
        if snapshot is None:
            detail = f"{ref.provider} is not in LOCAL_HOSTS, so it is not checked; add it to use this model"
            return ModelStatus(ref.id, ModelState.HOST_DOWN, detail, now, local=True)
        job = self._jobs.get(ref.id)
        if job is not None and not job.done.is_set():
            elapsed = self._clock() - job.started
            return ModelStatus(ref.id, ModelState.LOADING, f"loading for {elapsed:.0f}s", now, local=True)
        if snapshot.error is not None:
            return ModelStatus(ref.id, ModelState.HOST_DOWN, snapshot.error.message, snapshot.checked_at, local=True)
        if ref.name in snapshot.found:
            host_model = snapshot.found[ref.name]
        else:
            host_model = snapshot.found[ref.name] = self._find(ref, snapshot.models or [])
        if host_model is None:
            detail = "not on the host's model list; download it on the host or check the name"
            return ModelStatus(ref.id, ModelState.NOT_LOADED, detail, snapshot.checked_at, local=True)
        detail = host_model.detail or host_model.state.value.replace("_", " ")
        return ModelStatus(ref.id, host_model.state, detail, snapshot.checked_at, local=True)

    def _hosted_status(self, ref: ModelRef, now: datetime) -> ModelStatus:
        cls = provider_class(ref.provider)
        if not cls.needs_key:
            return ModelStatus(ref.id, ModelState.EXTERNAL_READY, "no key needed", now)
        if self.factory.key_for(ref.provider):
            return ModelStatus(ref.id, ModelState.EXTERNAL_READY, "key configured", now)
        env = f" or set {cls.key_env_var}" if cls.key_env_var else ""
        return ModelStatus(ref.id, ModelState.EXTERNAL_NO_KEY, f"no key: add one on the API Keys page{env}", now)

    def _find(self, ref: ModelRef, models: Iterable[HostModel]) -> HostModel | None:
        host = cast(type[LocalHost], provider_class(ref.provider))  # no provider object (nor key lookup) per model
        return next((m for m in models if host.same_model(ref.name, m.name)), None)

    # -- host snapshots (the only network traffic of a status check) --------------------------------
    def _all_snapshots(self, force: bool, *, cached: bool = False) -> dict[str, _Snapshot]:
        hosts = self.settings.local_hosts
        found: dict[str, _Snapshot] = {}
        stale: list[str] = []
        for provider in hosts:
            snap = self._snapshots.get(provider)
            if snap is not None and not force and (cached or self._fresh(snap)):
                found[provider] = snap
            else:
                stale.append(provider)
        if stale:
            # The first stale host is asked on this thread, the others at the same time on the pool.
            futures = [(p, self._probe_pool().submit(self._snapshot, p, force)) for p in stale[1:]]
            found[stale[0]] = self._snapshot(stale[0], force)
            found.update((p, future.result()) for p, future in futures)
        return {p: found[p] for p in hosts}

    def _fresh(self, snap: _Snapshot) -> bool:
        return self._clock() - snap.fetched < self.settings.status_cache_ttl_s

    def _probe_pool(self) -> Executor:
        if self._pool is not None:
            return self._pool
        with self._pool_lock:
            if self._own_pool is None:
                workers = max(1, len(self.settings.local_hosts) - 1)
                self._own_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host-status")
            return self._own_pool

    def _snapshot(self, provider: str, force: bool) -> _Snapshot:
        snap = self._snapshots.get(provider)
        if snap is not None and not force and self._fresh(snap):
            return snap
        lock = self._host_locks[provider]
        asked_at = self._clock()
        with lock:
            snap = self._snapshots.get(provider)
            if snap is not None and snap.fetched >= asked_at:
                return snap  # another thread refreshed it while we waited: use its answer
            snap = self._fetch(provider)
            self._snapshots[provider] = snap
        if snap.models is not None:
            self.registry.sync_discovered(provider, [m.name for m in snap.models])
        return snap

    def _fetch(self, provider: str) -> _Snapshot:
        now = datetime.now(timezone.utc)
        try:
            models = self.factory.host(provider, "status").host_models()
        except OrchestratorError as exc:
            return _Snapshot(None, exc, now, self._clock())
        return _Snapshot(models, None, now, self._clock())

    def invalidate(self, provider: str | None = None) -> None:
        """Drop cached host lists so the next status check asks the host again."""
        if provider is None:
            self._snapshots.clear()
        else:
            self._snapshots.pop(provider, None)

    # -- load / wait / unload ------------------------------------------------------------------------
    def load(self, model_id: str) -> ModelStatus:
        """Start loading a local model (returns at once; state is loading while it runs)."""
        ref = self._local_ref(model_id, "load")
        status = self.check_status(model_id, force=True)
        if status.state is ModelState.LOADED:
            return status
        if status.state is ModelState.HOST_DOWN:
            raise ProviderUnavailableError(status.detail, provider=ref.provider, model=model_id)
        self._start_job(ref)
        return self.check_status(model_id)

    def _start_job(self, ref: ModelRef) -> _LoadJob:
        with self._jobs_lock:
            job = self._jobs.get(ref.id)
            if job is not None and not job.done.is_set():
                return job  # never a second load of the same model (LM Studio would stack ":2")
            job = _LoadJob(ref.id, self._clock())
            self._jobs[ref.id] = job
        threading.Thread(target=self._run_job, args=(job, ref), name=f"load-{ref.id}", daemon=True).start()
        return job

    def _run_job(self, job: _LoadJob, ref: ModelRef) -> None:
        try:
            self.factory.host(ref.provider).load_model(ref.name)
        except ProviderTimeoutError as exc:
            job.error = self._load_timed_out(ref, exc)
        except ProviderError as exc:
            job.error = exc
        except Exception as exc:  # a bug must not leave the job "loading" forever
            job.error = ModelLoadError(f"Loading {ref.id} failed unexpectedly: {type(exc).__name__}", model=ref.id)
        finally:
            self.invalidate(ref.provider)
            job.done.set()

    def _load_timed_out(self, ref: ModelRef, exc: ProviderTimeoutError) -> ProviderError:
        """A blocking load request (LM Studio, Ollama) whose read timeout is the load timeout ran out: that is
        the same failure wait_for_load reports, so the class must not depend on which of the two noticed first."""
        if isinstance(exc.__cause__, httpx.ConnectTimeout):
            return exc  # the host was not reached at all
        return ModelLoadTimeoutError(
            f"{ref.id} did not finish loading within {self.settings.load_timeout_s:g}s; raise LOAD_TIMEOUT_S, "
            "or pick a smaller model.",
            provider=ref.provider, model=ref.id,
        )

    def wait_for_load(
        self,
        model_id: str,
        timeout_s: float | None = None,
        poll_s: float | None = None,
        on_progress: Callable[[LoadProgress], None] | None = None,
    ) -> ModelStatus:
        """Poll until the model is loaded; ModelLoadError if the load failed, ModelLoadTimeoutError on time-out."""
        ref = self._local_ref(model_id, "wait for")
        timeout = self.settings.load_timeout_s if timeout_s is None else timeout_s
        poll = self.settings.poll_interval_s if poll_s is None else poll_s
        started = self._clock()
        not_loaded_after_job = 0
        while True:
            job = self._jobs.get(ref.id)
            if job is not None and job.done.is_set() and job.error is not None:
                raise job.error
            status = self.check_status(model_id, force=True)
            elapsed = self._clock() - started
            if on_progress is not None:
                on_progress(LoadProgress(model_id, elapsed, status.state, status.detail))
            if status.state is ModelState.LOADED:
                return status
            if status.state is ModelState.HOST_DOWN:
                raise ProviderUnavailableError(status.detail, provider=ref.provider, model=model_id)
            if status.state is ModelState.NOT_LOADED and (job is None or job.done.is_set()):
                not_loaded_after_job += 1
                if not_loaded_after_job >= 3:
                    raise ModelLoadError(
                        f"{model_id} is still not loaded after the load request ({status.detail}); "
                        "check the host's log for why it failed (memory, a broken file).",
                        provider=ref.provider, model=model_id,
                    )
            if elapsed >= timeout:
                raise ModelLoadTimeoutError(
                    f"{model_id} did not finish loading within {timeout:.0f}s; raise LOAD_TIMEOUT_S, "
                    "or pick a smaller model.",
                    provider=ref.provider, model=model_id,
                )
            wait = min(poll, max(0.0, timeout - elapsed))
            if job is not None and not job.done.is_set():
                job.done.wait(wait)  # wake as soon as a blocking load returns
            else:
                time.sleep(wait)

    def ensure_ready(
        self, model_id: str, on_progress: Callable[[LoadProgress], None] | None = None
    ) -> ModelStatus:
        """Check and load: return once the model can take a prompt, or raise why it cannot."""
        status = self.check_status(model_id)
        if status.state.ready or not status.local:
            return status
        if status.state is ModelState.HOST_DOWN:
            raise ProviderUnavailableError(status.detail, provider=ModelRef.parse(model_id).provider, model=model_id)
        if status.state is not ModelState.LOADING:
            self._start_job(ModelRef.parse(model_id))
        return self.wait_for_load(model_id, on_progress=on_progress)

    def unload(self, model_id: str) -> ModelStatus:
        """Unload a local model through the host's unload endpoint."""
        ref = self._local_ref(model_id, "unload")
        host = self.factory.host(ref.provider)
        try:
            host.unload_model(ref.name)
        finally:
            self.invalidate(ref.provider)
        return self.check_status(model_id, force=True)

    def _local_ref(self, model_id: str, action: str) -> ModelRef:
        ref = ModelRef.parse(model_id)
        provider_class(ref.provider)
        if not is_local(ref.provider):
            raise UnsupportedOperationError(
                f"{model_id} is a hosted model; there is nothing to {action}.", provider=ref.provider, model=model_id
            )
        return ref

    # -- alternatives and the failure cache ---------------------------------------------------------
    def alternatives(
        self, model_id: str, *, exclude: Iterable[str] = (), exclude_providers: Iterable[str] = ()
    ) -> list[str]:
        """Every model worth trying instead of model_id, best first (see fallback.rank_alternatives).

        Judged from the hosts' last answers: the model picked is checked (and loaded) before its prompt."""
        priorities = {e.model_id: e.priority for e in self.registry.list(active_only=True)}
        priorities.update(self.settings.priorities)
        return rank_alternatives(
            model_id,
            self.list_with_status(cached=True),
            priorities=priorities,
            stats=self._stats(),
            exclude=exclude,
            exclude_providers=exclude_providers,
        )

    def suggest_alternative(
        self, model_id: str, *, exclude: Iterable[str] = (), exclude_providers: Iterable[str] = ()
    ) -> str | None:
        """The best model to use instead of model_id, or None when nothing is usable."""
        ranked = self.alternatives(model_id, exclude=exclude, exclude_providers=exclude_providers)
        return ranked[0] if ranked else None

    def record_failure(self, model_id: str, exc: OrchestratorError) -> FailureEntry:
        """Put a model in cooldown for a failure another model could fix."""
        cooldown = cooldown_seconds(exc, self.settings.failure_cooldown_s)
        return self.failures.record(model_id, exc.kind, exc.message, cooldown)

    def reset_failed(self, model_id: str | None = None) -> int:
        """Clear the failure cache for one model or all; returns how many entries were cleared."""
        return self.failures.reset(model_id)

    def failure_list(self) -> list[FailureEntry]:
        return self.failures.all()
