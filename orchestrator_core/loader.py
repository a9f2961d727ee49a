"""ModelManager: live status, load / wait / unload of local models, alternatives and the failure cache.

Status of every model costs ONE request per local host (its model list), served from a short-lived
cache; hosted models are judged by their key without a request. Only hosts whose answer is stale are
asked, on one long-lived thread pool; choosing a fallback during a call asks no host that has answered
before. Loads run on a background thread per model so a caller can show progress while ``wait_for_load``
polls.

Waiting polls quickly first and backs off (50 ms doubling to POLL_INTERVAL_S), and wakes at once on
the host's own signal where it has one: a blocking load call returning (LM Studio, Ollama) or a
status event (llama-server's /models/sse, which also carries load progress). Unloads are
asynchronous on llama-server and Ollama, so ``unload`` waits until the host agrees, and a model the
host still lists after that is UNLOADING, never "loaded".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from . import exits
from .clients import ProviderFactory
from .config import Settings
from .connections import Connection
from .errors import (
    ModelLoadError,
    ModelLoadTimeoutError,
    ModelNotLoadedError,
    OrchestratorError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from .fallback import cooldown_seconds, rank_alternatives
from .providers.base import LocalHost
from .types import HostModel, ModelRef, ModelState, ModelStatus

if TYPE_CHECKING:  # the status command runs the manager on store.readonly, without SQLAlchemy
    from .store.failures import FailureCache, FailureEntry
    from .store.registry import ModelRegistry

StatsSource = Callable[[], Mapping[str, tuple[float, float]]]
ModelLike = str | ModelRef  # a verb takes the parsed reference a call passes down, or an id to parse
Pause = Callable[[threading.Event, float], object]  # wait up to n seconds, or until the event is set

FIRST_POLL_S = 0.05  # a model that loads in 20 ms is seen after ~50 ms, not after a whole POLL_INTERVAL_S
UNLOAD_WAIT_S = 3.0  # how long unload() waits for an asynchronous host (llama-server, Ollama) to agree
UNLOADING_SHOWN_S = 60.0  # past this, a model the host still lists after an unload shows as the host says
_IN_MEMORY = (ModelState.LOADED, ModelState.SLEEPING, ModelState.LOADING)
# A host model's state in words, for its status detail (an enum's .value is a slow descriptor per model and call).
_STATE_WORDS = {state: state.value.replace("_", " ") for state in ModelState}

log = logging.getLogger("orchestrator_core")


def poll_delays(cap_s: float, first_s: float | None = None) -> Iterator[float]:
    """Pauses between status checks: FIRST_POLL_S, doubling up to cap_s (POLL_INTERVAL_S), then cap_s."""
    delay = min(FIRST_POLL_S if first_s is None else first_s, cap_s)
    while True:
        yield delay
        delay = min(delay * 2, cap_s)


def _wait(event: threading.Event, seconds: float) -> object:
    return event.wait(seconds)


@dataclass(frozen=True)
class HostStatus:
    """Reachability of one local host (one connection of a local kind), for the sidebar and the overview."""

    provider: str  # the connection's name
    display_name: str  # "LM Studio" for the seeded connection, "desk (LM Studio)" for another
    base_url: str
    reachable: bool
    detail: str
    models: int
    loaded: int
    checked_at: datetime
    kind: str = ""


@dataclass(frozen=True)
class LoadProgress:
    model_id: str
    elapsed_s: float
    state: ModelState
    detail: str
    percent: float | None = None  # where the host reports it (llama-server load and download progress)


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
    _wakers: list[threading.Event] = field(default_factory=list)

    def wake_on_done(self, event: threading.Event) -> None:
        """Set event when the job ends (at once if it has): a blocking load returning ends a wait."""
        self._wakers.append(event)
        if self.done.is_set():
            event.set()

    def finish(self) -> None:
        self.done.set()  # before the wakers are read, so wake_on_done never misses the end
        for event in list(self._wakers):
            event.set()


class _HostWatch:
    """Listens to a host's own stream of model states (llama-server's /models/sse) while a wait runs.

    Every event about the model wakes the waiter at once, and the latest one carries the load
    progress that GET /models lacks. Best effort: without a stream, the polling alone serves.
    """

    def __init__(self, host: LocalHost, ref: ModelRef, wake: threading.Event) -> None:
        self.host, self.ref, self.wake = host, ref, wake
        self.latest: HostModel | None = None
        self._stop = threading.Event()
        if host.pushes_model_events:
            threading.Thread(target=self._listen, name=f"watch-{ref.id}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()  # the thread ends at its next event or read timeout (it is a daemon)

    def merge(self, status: ModelStatus) -> ModelStatus:
        """The polled status, with the detail and percent of the latest pushed event in the same state."""
        latest = self.latest
        if latest is None or latest.progress is None or latest.state is not status.state:
            return status
        return dataclasses.replace(status, detail=latest.detail, progress=latest.progress)

    def _listen(self) -> None:
        same = type(self.host).same_model
        while not self._stop.is_set():
            try:
                for update in self.host.model_events():
                    if self._stop.is_set():
                        return
                    if same(self.ref.name, update.name):
                        self.latest = update
                        self.wake.set()
            except ProviderTimeoutError:
                continue  # no event within the read timeout: listen again
            except Exception:  # noqa: BLE001 - no stream here (older server, single mode): polling serves
                return
            return  # the host closed the stream


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
        pause: Pause = _wait,
        pool: Executor | None = None,
        key_rejected: Callable[[str], bool] = lambda _provider: False,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.registry = registry
        self.failures = failures
        self._stats = stats or (dict)
        self._key_rejected = key_rejected  # a key whose last test was rejected does not make a model ready
        self._clock = clock
        self._pause = pause
        self._unloading: dict[str, float] = {}  # model id -> when its unload was asked for
        self._snapshots: dict[str, _Snapshot] = {}
        self._host_locks: dict[str, threading.Lock] = {}  # per connection, made on first use
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
            # Bounded: a probe stuck in a read (up to STATUS_TIMEOUT_S) must not hold an exit up.
            left = exits.shutdown_pool(pool, exits.POOL_WAIT_S)
            if left:
                log.warning("Host probe(s) still running at close, left to finish on their own: %s", ", ".join(left))

    # -- status ---------------------------------------------------------------------------------
    def check_status(self, model: ModelLike, *, force: bool = False) -> ModelStatus:
        """The state of one model: loaded, loading, not loaded, host down, cooling down, key or not."""
        ref = _ref(model)
        connection = self.factory.connection(ref.provider)
        snapshot = self._snapshot(ref.provider, force) if self._probed(connection) else None
        return self._status(ref, connection, snapshot, self.failures.active())

    def ready_from_cache(self, model: ModelLike) -> bool:
        """Whether check-and-load needs no host request for the model: hosted, or its host's last answer is fresh
        and says it takes a prompt now (a caller on an event loop checks it there instead of on a worker)."""
        ref = _ref(model)
        connection = self.factory.connection(ref.provider)
        snapshot = None
        if self._probed(connection):
            snapshot = self._snapshots.get(ref.provider)
            if snapshot is None or not self._fresh(snapshot):
                return False
        return self._status(ref, connection, snapshot, self.failures.active()).state.ready

    def _probed(self, connection: Connection) -> bool:
        """Local, enabled, and for a seeded host: named in LOCAL_HOSTS (the operator added the others)."""
        return connection.local and connection.enabled and (
            not connection.seeded or connection.name in self.settings.local_hosts)

    def local_connections(self) -> list[Connection]:
        """The local hosts whose status is probed, one request per connection."""
        return [c for c in self.factory.connections.list() if self._probed(c)]

    def list_with_status(self, *, force: bool = False, cached: bool = False) -> list[ModelStatus]:
        """Every active model with its status: one request per stale local host, hosts checked concurrently.

        ``cached``: use every host's last answer however old, asking only a host never asked (for choosing
        a fallback in the middle of a call, where a probe would add its time to the user's wait)."""
        snapshots = self._all_snapshots(force, cached=cached)  # first: a host's answer may add models to the registry
        refs = [ModelRef.parse(e.model_id) for e in self.registry.list(active_only=True)]
        return self._statuses(refs, snapshots)

    def _statuses(self, refs: Iterable[ModelRef], snapshots: Mapping[str, _Snapshot]) -> list[ModelStatus]:
        """The status of each of refs whose connection exists, in their order (see list_with_status)."""
        failures = self.failures.active()
        connections = {c.name: c for c in self.factory.connections.list()}
        keys: dict[str, tuple[str | None, bool]] = {}  # per connection, asked once for all its models
        now = datetime.now(UTC)  # one clock reading for the whole list (a fallback hop ranks all of it)
        return [self._status(r, connections[r.provider], snapshots.get(r.provider), failures, keys, now)
                for r in refs if r.provider in connections]

    def hosts(self, *, force: bool = False) -> list[HostStatus]:
        """Reachability and model counts of every probed local host (one request per connection)."""
        connections = {c.name: c for c in self.local_connections()}
        result = []
        for name, snap in self._all_snapshots(force).items():
            models = snap.models or []
            connection = connections[name]
            result.append(
                HostStatus(
                    provider=name,
                    display_name=connection.display_name,
                    base_url=connection.shown_url,  # shown on pages, by the CLI and /api/hosts
                    reachable=snap.error is None,
                    detail=snap.error.message if snap.error else f"{len(models)} models",
                    models=len(models),
                    loaded=sum(m.state is ModelState.LOADED for m in models),
                    checked_at=snap.checked_at,
                    kind=connection.kind,
                )
            )
        return result

    def _status(
        self, ref: ModelRef, connection: Connection, snapshot: _Snapshot | None,
        failures: Mapping[str, FailureEntry], keys: dict[str, tuple[str | None, bool]] | None = None,
        now: datetime | None = None,
    ) -> ModelStatus:
        now = datetime.now(UTC) if now is None else now
        failure = failures.get(ref.id)
        local = connection.local
        if not connection.enabled:
            detail = f"connection {connection.name} is disabled; enable it on the Connections page"
            return ModelStatus(ref.id, ModelState.HOST_DOWN, detail, now, local=local)
        if failure is not None and local and snapshot is not None and snapshot.error is not None:
            # One cause, one state: the host is down (most likely why the model cools down at all).
            return ModelStatus(ref.id, ModelState.HOST_DOWN, snapshot.error.message, snapshot.checked_at,
                               cooldown_until=failure.until, local=True)
        if failure is not None:
            until = failure.until.astimezone().strftime("%H:%M:%S")
            return ModelStatus(
                ref.id, ModelState.COOLING_DOWN, f"{failure.error_kind}: {failure.message} (until {until})",
                now, cooldown_until=failure.until, local=local,
            )
        if not local:
            return self._hosted_status(ref, connection, now, {} if keys is None else keys)
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
            host_model = snapshot.found[ref.name] = self._find(ref, connection, snapshot.models or [])
        if host_model is None:
            detail = "not on the host's model list; download it on the host or check the name"
            return ModelStatus(ref.id, ModelState.NOT_LOADED, detail, snapshot.checked_at, local=True)
        unloading = self._unloading_status(ref, host_model, snapshot.checked_at)
        if unloading is not None:
            return unloading
        detail = host_model.detail or _STATE_WORDS[host_model.state]
        return ModelStatus(ref.id, host_model.state, detail, snapshot.checked_at, local=True,
                           progress=host_model.progress, facts=host_model.facts)

    def _unloading_status(self, ref: ModelRef, host_model: HostModel, checked_at: datetime) -> ModelStatus | None:
        """UNLOADING while the host still lists a model whose unload was asked for (llama-server, Ollama)."""
        asked = self._unloading.get(ref.id)
        if asked is None:
            return None
        age = self._clock() - asked
        if host_model.state not in _IN_MEMORY or age >= UNLOADING_SHOWN_S:
            self._unloading.pop(ref.id, None)  # the host agrees (or never will): show what it says
            return None
        detail = f"unload requested {age:.1f}s ago; the host still lists it as {host_model.state.value}"
        return ModelStatus(ref.id, ModelState.UNLOADING, detail, checked_at, local=True)

    def _hosted_status(
        self, ref: ModelRef, connection: Connection, now: datetime, keys: dict[str, tuple[str | None, bool]]
    ) -> ModelStatus:
        cls = connection.provider_class
        if connection.name not in keys:  # (every key cooling or rejected: why, or None; a key at all)
            keys[connection.name] = (self.factory.key_problem(connection.name),
                                     self.factory.has_key(connection.name))
        problem, has_key = keys[connection.name]
        if problem is not None and self._key_rejected(connection.name):
            detail = (f"every key of {connection.name} was rejected at its last test or by a call: replace it on "
                      "the API Keys page, or test it again")
            return ModelStatus(ref.id, ModelState.EXTERNAL_KEY_REJECTED, detail, now)
        if problem is not None:
            return ModelStatus(ref.id, ModelState.EXTERNAL_NO_KEY, problem, now)
        if not cls.needs_key:
            return ModelStatus(ref.id, ModelState.EXTERNAL_READY, "no key needed", now)
        if has_key:
            return ModelStatus(ref.id, ModelState.EXTERNAL_READY, "key configured", now)
        detail = f"no key: add one on the API Keys page{cls.key_env_hint()}"
        return ModelStatus(ref.id, ModelState.EXTERNAL_NO_KEY, detail, now)

    def _find(self, ref: ModelRef, connection: Connection, models: Iterable[HostModel]) -> HostModel | None:
        host = cast(type[LocalHost], connection.provider_class)  # no provider object (nor key lookup) per model
        return next((m for m in models if host.same_model(ref.name, m.name)), None)

    # -- host snapshots (the only network traffic of a status check) --------------------------------
    def _all_snapshots(self, force: bool, *, cached: bool = False) -> dict[str, _Snapshot]:
        hosts = [c.name for c in self.local_connections()]
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
                workers = max(1, min(8, len(self.local_connections()) - 1))
                self._own_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host-status")
            return self._own_pool

    def _snapshot(self, provider: str, force: bool) -> _Snapshot:
        snap = self._snapshots.get(provider)
        if snap is not None and not force and self._fresh(snap):
            return snap
        lock = self._host_locks.get(provider) or self._host_locks.setdefault(provider, threading.Lock())
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
        now = datetime.now(UTC)
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
        status = self._loadable(ref, self.check_status(model_id, force=True))
        if status.state.ready:
            return status
        self._start_job(ref)
        return self.check_status(model_id)

    def _loadable(self, ref: ModelRef, status: ModelStatus) -> ModelStatus:
        """The status a load starts from: an unload in progress is let finish; a host down or a download raises."""
        if status.state is ModelState.UNLOADING:
            status = self._wait_until_unloaded(ref, UNLOAD_WAIT_S)
        if status.state is ModelState.HOST_DOWN:
            raise ProviderUnavailableError(status.detail, provider=ref.provider, model=ref.id)
        if status.state is ModelState.DOWNLOADING:
            raise ModelNotLoadedError(
                f"{ref.id} is still downloading ({status.detail}); wait for the download to finish on the "
                "host, then load it, or pick another model.",
                provider=ref.provider, model=ref.id,
            )
        return status

    def _start_job(self, ref: ModelRef) -> _LoadJob:
        with self._jobs_lock:
            job = self._jobs.get(ref.id)
            if job is not None and not job.done.is_set():
                return job  # never a second load of the same model (LM Studio would stack ":2")
            job = _LoadJob(ref.id, self._clock())
            self._jobs[ref.id] = job
            self._unloading.pop(ref.id, None)
        threading.Thread(target=self._run_job, args=(job, ref), name=f"load-{ref.id}", daemon=True).start()
        return job

    def _run_job(self, job: _LoadJob, ref: ModelRef) -> None:
        try:
            self.factory.host(ref.provider).load_model(ref.name)
        except ProviderTimeoutError as exc:
            job.error = self._load_timed_out(ref, exc)
        except ProviderError as exc:
            job.error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the job "loading" forever
            job.error = ModelLoadError(f"Loading {ref.id} failed unexpectedly: {type(exc).__name__}", model=ref.id)
        finally:
            self.invalidate(ref.provider)
            job.finish()

    def _load_timed_out(self, ref: ModelRef, exc: ProviderTimeoutError) -> ProviderError:
        """A blocking load request (LM Studio, Ollama) whose read timeout is the load timeout ran out: that is
        the same failure wait_for_load reports, so the class must not depend on which of the two noticed first."""
        import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

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
        """Wait until the model is ready; ModelLoadError if the load failed, ModelLoadTimeoutError on time-out.

        Checks back off from FIRST_POLL_S to poll_s (POLL_INTERVAL_S); a blocking load returning or a
        status event pushed by the host ends a pause at once.
        """
        ref = self._local_ref(model_id, "wait for")
        timeout = self.settings.load_timeout_s if timeout_s is None else timeout_s
        cap = self.settings.poll_interval_s if poll_s is None else poll_s
        delays = poll_delays(cap)
        started = self._clock()
        not_loaded: list[float] = []  # when the model was seen not loaded with no load running
        wake = threading.Event()
        watch = _HostWatch(self.factory.host(ref.provider, "status"), ref, wake)
        try:
            while True:
                wake.clear()
                job = self._jobs.get(ref.id)
                if job is not None and job.done.is_set() and job.error is not None:
                    raise job.error
                running = job is not None and not job.done.is_set()
                status = watch.merge(self.check_status(model_id, force=True))
                elapsed = self._clock() - started
                if on_progress is not None:
                    on_progress(LoadProgress(model_id, elapsed, status.state, status.detail, status.progress))
                if status.state.ready:
                    return status
                if not running:
                    self._raise_if_load_ended(ref, status, not_loaded, cap)
                if elapsed >= timeout:
                    raise ModelLoadTimeoutError(
                        f"{model_id} did not finish loading within {timeout:.0f}s; raise LOAD_TIMEOUT_S, "
                        "or pick a smaller model.",
                        provider=ref.provider, model=model_id,
                    )
                if job is not None and running:
                    job.wake_on_done(wake)  # a blocking load returning ends the pause
                self._pause(wake, min(next(delays), max(0.0, timeout - elapsed)))
        finally:
            watch.stop()

    def _raise_if_load_ended(self, ref: ModelRef, status: ModelStatus, not_loaded: list[float], cap: float) -> None:
        """With no load request running, a host down, a failed load or a model that stays unloaded ends the wait."""
        if status.state is ModelState.HOST_DOWN:
            raise ProviderUnavailableError(status.detail, provider=ref.provider, model=ref.id)
        if status.state is ModelState.LOAD_FAILED:
            raise ModelLoadError(
                f"{ref.id} did not load: {status.detail}. Common causes: too little memory, a broken or "
                "unsupported model file.",
                provider=ref.provider, model=ref.id,
            )
        if status.state is not ModelState.NOT_LOADED:
            return
        not_loaded.append(self._clock())
        # Three looks spread over at least one poll interval: a host may take a moment to show a new load.
        if len(not_loaded) >= 3 and not_loaded[-1] - not_loaded[0] >= cap:
            raise ModelLoadError(
                f"{ref.id} is still not loaded after the load request ({status.detail}); "
                "check the host's log for why it failed (memory, a broken file).",
                provider=ref.provider, model=ref.id,
            )

    def ensure_ready(
        self, model: ModelLike, on_progress: Callable[[LoadProgress], None] | None = None
    ) -> ModelStatus:
        """Check and load: return once the model can take a prompt, or raise why it cannot."""
        ref = _ref(model)
        model_id = ref.id
        status = self.check_status(ref)
        if status.state.ready or not status.local:
            return status
        status = self._loadable(ref, status)
        if status.state.ready:
            return status
        if status.state is not ModelState.LOADING:
            self._start_job(ref)  # also after a failed load: the user asked for this model, so try again
        return self.wait_for_load(model_id, on_progress=on_progress)

    def unload(self, model_id: str, *, wait_s: float | None = None) -> ModelStatus:
        """Unload a local model; waits (up to UNLOAD_WAIT_S) for the host to agree, else reports UNLOADING."""
        ref = self._local_ref(model_id, "unload")
        host = self.factory.host(ref.provider)
        try:
            host.unload_model(ref.name)
        finally:
            self.invalidate(ref.provider)
        self._unloading[ref.id] = self._clock()
        return self._wait_until_unloaded(ref, UNLOAD_WAIT_S if wait_s is None else wait_s)

    def _wait_until_unloaded(self, ref: ModelRef, wait_s: float) -> ModelStatus:
        """Poll quickly (and wake on pushed events) until the host no longer lists the model in memory."""
        delays = poll_delays(self.settings.poll_interval_s)
        started = self._clock()
        wake = threading.Event()
        watch = _HostWatch(self.factory.host(ref.provider, "status"), ref, wake)
        try:
            while True:
                wake.clear()
                status = self.check_status(ref.id, force=True)
                left = wait_s - (self._clock() - started)
                if status.state is not ModelState.UNLOADING or left <= 0:
                    return status
                self._pause(wake, min(next(delays), left))
        finally:
            watch.stop()

    def _local_ref(self, model: ModelLike, action: str) -> ModelRef:
        ref = _ref(model)
        model_id = ref.id
        if not self.factory.connection(ref.provider).local:
            raise UnsupportedOperationError(
                f"{model_id} is a hosted model; there is nothing to {action}.", provider=ref.provider, model=model_id
            )
        return ref

    # -- alternatives and the failure cache ---------------------------------------------------------
    def alternatives(
        self, model: ModelLike, *, exclude: Iterable[str] = (), exclude_providers: Iterable[str] = (),
        cost_of: Callable[[str], float | None] | None = None,
    ) -> list[str]:
        """Every model worth trying instead of model_id, best first (see fallback.rank_alternatives).

        Judged from the hosts' last answers: the model picked is checked (and loaded) before its prompt."""
        failed = _ref(model)
        skip = {failed.id, *exclude}
        skip_providers = set(exclude_providers)
        snapshots = self._all_snapshots(False, cached=True)  # before the registry is read, as list_with_status
        entries = self.registry.list(active_only=True)
        priorities = {e.model_id: e.priority for e in entries}
        priorities.update(self.settings.priorities)
        # Only the models that could be picked get a status: on a fallback hop the calling thread waits for
        # this, and the failed model (in cooldown now), those tried and those excluded would be ranked out.
        refs = [ref for ref in map(ModelRef.parse, (e.model_id for e in entries))
                if ref.id not in skip and ref.provider not in skip_providers]
        return rank_alternatives(
            failed,
            self._statuses(refs, snapshots),
            priorities=priorities,
            stats=self._stats(),
            exclude=skip,
            exclude_providers=skip_providers,
            cost_of=cost_of,
        )

    def suggest_alternative(
        self, model: ModelLike, *, exclude: Iterable[str] = (), exclude_providers: Iterable[str] = (),
        cost_of: Callable[[str], float | None] | None = None,
    ) -> str | None:
        """The best model to use instead of model, or None when nothing is usable (cost_of: RANKING=cost)."""
        ranked = self.alternatives(model, exclude=exclude, exclude_providers=exclude_providers, cost_of=cost_of)
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


def _ref(model: ModelLike) -> ModelRef:
    return model if isinstance(model, ModelRef) else ModelRef.parse(model)
