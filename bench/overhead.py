"""Benchmark: what the orchestrator costs next to the network. Prints figures; asserts nothing.

    python bench/overhead.py [--rounds 2000] [--threads 8]

The loopback server runs in its own process (bench/loopback_server.py): one in this process would share
the GIL with the code being measured. The paths of section 1 and 2 run interleaved in a random order
each round, so drift in a shared machine hits all of them alike.

1. Per-call overhead of Orchestrator.chat over a raw httpx.Client POST of the same request (median and
   p95; metrics recording included). Target: at most 0.2 ms median.
2. A dead primary (connection refused) with a live backup: the first call through it, and the extra per
   call once the primary is in cooldown, over a direct call to the backup. Targets: at most +0.3 ms once in
   cooldown; the first call pays the refused connect and nothing more. The first call happens once per
   process, so it is measured in fresh processes: --first-trials of them per step, each timing one step as
   its first act after the same start and pause (the first call; a call to the backup; the dead primary's
   own request, refused), so that none runs warmer for following another. The same three paths with the
   code warm (--hot-rounds, the primary's cooldown lapsing at once) give the cooldown, ranking and second
   metric row their own figure, held to the cooldown target.
3. 8 threads: calls per second through Orchestrator.chat against raw httpx. Target: at least 80 %.
4. A model in cooldown costs no network attempt; the status of 50 local models costs one host request.
5. ``import orchestrator_core`` pulls in no pandas, plotly or streamlit, and how long it takes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx

from orchestrator_core.config import Settings
from orchestrator_core.errors import AllModelsFailedError, ProviderUnavailableError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import ChatParams, Message

MESSAGES: list[Message] = [{"role": "user", "content": "ping"}]
BACKUP = "custom:bench"
DEAD = "openai:bench"  # its base URL is a port nobody listens on


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "loopback_server.py")],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}"


def refused_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def hits(base: str) -> dict[str, int]:
    return dict(httpx.get(f"{base}/hits").json())


def summary(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in times)
    return statistics.median(ms), ms[int(len(ms) * 0.95)]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(
    paths: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall time and CPU time of the calling thread per call, by path."""
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            cpu_started, started = time.thread_time(), time.perf_counter()
            paths[name]()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.thread_time() - cpu_started)
    return wall, cpu


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds a thread of this process has used so far (Linux)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def throughput(call: Callable[[], object], threads: int, calls: int, errors: list[str]) -> float:
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        for _ in range(calls):
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and printed, the run goes on
                errors.append(type(exc).__name__)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return threads * calls / (time.perf_counter() - began)


FIRST_STEPS = ("first", "backup", "refused")


def first_call_trial(base: str, step: str) -> None:
    """One fresh process measures one step (FIRST_STEPS) as its first act after a pause; prints its wall and CPU ms.

    Each step gets its own process, the same start and the same pause, so no step runs warmer for having come
    after another (a refused connect timed just before the first call warmed that call's exception path)."""
    with tempfile.TemporaryDirectory() as tmp, build(tmp, base) as orch:
        orch.chat(BACKUP, MESSAGES, fallback=False)
        if orch.warming is not None:
            orch.warming.result()  # an app starts well before its first failure: its warm-up has ended
        time.sleep(0.5)
        orch.registry.list()  # build() changed the registry after the warm-up: a running app has listed it since
        time.sleep(0.5)
        orch.factory.client("openai")  # the dead connection's client exists, as in an app that has shown its status
        orch.chat(BACKUP, MESSAGES, fallback=False)  # past the freshness window: the change counters read once
        time.sleep(0.5)  # idle again: the window passes, code and data go cold, as before any call of a quiet app
        wall, cpu = interleaved({step: first_steps(orch)[step]}, 1)
        print(json.dumps({"wall": wall[step][0] * 1000, "cpu": cpu[step][0] * 1000}))


def first_calls(base: str, trials: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU ms of each step, by step: trials fresh processes per step, the steps in a new order each trial."""
    found: dict[str, dict[str, list[float]]] = {step: {"wall": [], "cpu": []} for step in FIRST_STEPS}
    for _ in range(trials):
        for step in random.sample(FIRST_STEPS, len(FIRST_STEPS)):
            done = subprocess.run([sys.executable, __file__, "--first-call-trial", base, step],
                                  capture_output=True, text=True, check=True)
            for name, ms in json.loads(done.stdout.strip().splitlines()[-1]).items():
                found[step][name].append(ms)
    return found


def hot_first_calls(base: str, rounds: int) -> dict[str, dict[str, float]]:
    """The first call through a dead primary with the code warm: its cooldown lapses at once, so every such call
    pays the refused connect, the cooldown, the ranking and the fallback again. Interleaved with a direct call to
    the backup and the dead provider's refused request; median wall and CPU ms by step."""
    with tempfile.TemporaryDirectory() as tmp, build(tmp, base, cooldown_s=0.0001) as orch:
        paths = first_steps(orch)
        interleaved(paths, 50)
        wall, cpu = interleaved(paths, rounds)
        return {p: {"wall": statistics.median(wall[p]) * 1000, "cpu": statistics.median(cpu[p]) * 1000} for p in paths}


def first_steps(orch: Orchestrator) -> dict[str, Callable[[], object]]:
    """The steps of FIRST_STEPS on orch: the first call through the dead primary, a call to the backup, the
    dead primary's own request refused."""
    return {
        "first": lambda: _first_call(orch),
        "backup": lambda: orch.chat(BACKUP, MESSAGES, fallback=False),
        "refused": lambda: _refused(orch),
    }


def _first_call(orch: Orchestrator) -> None:
    """A call to the dead primary that must fail over to the backup: anything else is not the path measured."""
    result = orch.chat(DEAD, MESSAGES)
    kinds = [(a.model, a.outcome, a.error_kind) for a in result.attempts]
    if kinds != [(DEAD, "error", "unavailable"), (BACKUP, "ok", None)]:
        raise RuntimeError(f"the dead primary's call did not refuse and fall back: {kinds}")


def build(tmp: str, base: str, *, cooldown_s: float = 3600.0) -> Orchestrator:
    settings = Settings(
        database_url=f"sqlite:///{tmp}/bench.db",
        base_urls={"custom": f"{base}/v1", "openai": refused_url(), "lmstudio": base},
        env_keys={"openai": "sk-bench-not-a-real-key-000000"},
        local_hosts=(),
        failure_cooldown_s=cooldown_s,  # by default the dead primary stays in cooldown for the whole run
    )
    orch = Orchestrator.from_settings(settings)
    for entry in orch.registry.list():
        orch.registry.set_active(entry.model_id, False)  # only the two bench models take part
    orch.registry.add(DEAD, priority=10)
    orch.registry.add(BACKUP, priority=20)
    return orch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--thread-calls", type=int, default=250)
    parser.add_argument("--first-trials", type=int, default=9)
    parser.add_argument("--hot-rounds", type=int, default=500)
    parser.add_argument("--first-call-trial", nargs=2, metavar=("BASE_URL", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call_trial:
        first_call_trial(*args.first_call_trial)
        return
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores: figures from a busy machine vary run to run")
    server, base = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(build(tmp, base), base, args)
    finally:
        server.kill()
    import_time()


def run(orch: Orchestrator, base: str, args: argparse.Namespace) -> None:
    body = {"model": "bench", "messages": MESSAGES, "stream": False}
    raw = httpx.Client(base_url=f"{base}/v1", timeout=5.0)
    with orch, raw:
        orch.chat(BACKUP, MESSAGES, fallback=False)  # the backup's client and connection exist, as in a running app
        orch.chat(DEAD, MESSAGES)  # refused, cooldown recorded, falls back: the first call (see first_calls)
        paths: dict[str, Callable[[], object]] = {
            "raw": lambda: raw.post("/chat/completions", json=body).json(),
            "chat": lambda: orch.chat(BACKUP, MESSAGES, fallback=False),
            "dead": lambda: orch.chat(DEAD, MESSAGES),
        }
        interleaved(paths, 200)  # warm connection pools and caches
        writer = orch.metrics._thread
        writer_before = thread_cpu_s(writer)
        times, cpu = interleaved(paths, args.rounds)
        assert orch.metrics.flush(30.0)
        writer_us = (thread_cpu_s(writer) - writer_before) / (3 * args.rounds) * 1e6
        (raw_p50, raw_p95), (chat_p50, chat_p95), (dead_p50, dead_p95) = (summary(times[p]) for p in paths)
        raw_cpu, chat_cpu, dead_cpu = (statistics.median(cpu[p]) * 1e6 for p in paths)
        print(f"1. per-call overhead ({args.rounds} interleaved rounds, out-of-process loopback server, "
              "metrics on SQLite WAL)")
        print(f"   raw httpx             median {raw_p50:6.3f} ms   p95 {raw_p95:6.3f} ms")
        print(f"   Orchestrator.chat     median {chat_p50:6.3f} ms   p95 {chat_p95:6.3f} ms")
        print(f"   overhead              median {chat_p50 - raw_p50:6.3f} ms   p95 {chat_p95 - raw_p95:6.3f} ms"
              f"   (target <= 0.2 ms median)")
        print(f"   CPU of the calling thread per call, median: raw {raw_cpu:.0f} us, chat {chat_cpu:.0f} us "
              f"(+{chat_cpu - raw_cpu:.0f} us); the metrics writer thread: {writer_us:.0f} us per row")
        first = first_calls(base, args.first_trials)
        med = {step: {k: statistics.median(v) for k, v in figures.items()} for step, figures in first.items()}
        extra = {k: med["first"][k] - med["backup"][k] for k in ("wall", "cpu")}
        print(f"2. dead primary (connection refused), live backup; load average {os.getloadavg()[0]:.1f}")
        print(f"   first call of a process: {args.first_trials} fresh processes per step, each timing one step as its "
              "first act after the same start and a 0.5 s pause (steps interleaved)")
        for step, label in (("first", "the first call (refused, cooldown, ranking, fallback)"),
                            ("backup", "a call to the backup alone"), ("refused", "the dead primary's refused request")):
            print(f"     {label:54} median {med[step]['wall']:6.3f} ms (min {min(first[step]['wall']):.3f}, "
                  f"max {max(first[step]['wall']):.3f})   CPU {med[step]['cpu']:.3f} ms")
        print(f"     the first call's extra over a call {extra['wall']:.3f} ms (CPU {extra['cpu']:.3f}) against a refused "
              f"connect of {med['refused']['wall']:.3f} ms (CPU {med['refused']['cpu']:.3f})   "
              "(target: the extra is the refused connect, no more)")
        hot = hot_first_calls(base, args.hot_rounds)
        rest = {k: hot["first"][k] - hot["backup"][k] - hot["refused"][k] for k in ("wall", "cpu")}
        print(f"   the same with the code warm ({args.hot_rounds} interleaved rounds, the cooldown lapsing at once): "
              f"first {hot['first']['wall']:.3f} ms = refused {hot['refused']['wall']:.3f} + backup "
              f"{hot['backup']['wall']:.3f} + {rest['wall']:.3f} ms (CPU {rest['cpu']:.3f}) for the cooldown, the "
              "ranking and the second metric row "
              "(target <= 0.3 ms, as once in cooldown)")
        print(f"   once in cooldown      median {dead_p50:6.3f} ms   p95 {dead_p95:6.3f} ms")
        print(f"   extra over the backup median {dead_p50 - chat_p50:6.3f} ms   p95 {dead_p95 - chat_p95:6.3f} ms"
              f"   (target <= 0.3 ms)")
        print(f"   CPU of the calling thread per call, median: {dead_cpu:.0f} us (+{dead_cpu - chat_cpu:.0f} us "
              "over the backup)")

        rates: dict[str, list[float]] = {"raw": [], "chat": []}
        errors: list[str] = []
        for _ in range(3):
            for name in random.sample(list(rates), 2):
                rates[name].append(throughput(paths[name], args.threads, args.thread_calls, errors))
        raw_rate, chat_rate = (statistics.median(rates[n]) for n in ("raw", "chat"))
        print(f"3. {args.threads} threads x {args.thread_calls} calls (median of 3 runs each)")
        print(f"   raw httpx {raw_rate:7.0f} calls/s   Orchestrator.chat {chat_rate:7.0f} calls/s   "
              f"= {chat_rate / raw_rate:4.0%} of raw   (target >= 80 %)")
        if errors:
            print(f"   calls that raised: {len(errors)} ({', '.join(sorted(set(errors)))})")

        assert orch.metrics.flush(30.0), "the metrics writer did not catch up"
        written = _count_rows(orch)
        # the warm-up and the first call: 3 rows; each round: 1 (chat) + 2 (dead: skipped, then the backup); threads: 1 per call
        expected = 3 + 3 * (200 + args.rounds) + 3 * args.threads * args.thread_calls
        print(f"   metric rows written   {written} (expected {expected}: every attempt, skipped ones included)")

        before = hits(base)
        with contextlib.suppress(AllModelsFailedError):  # the expected outcome: nothing may be tried
            orch.chat(DEAD, MESSAGES, fallback=False)
        print(f"4. model in cooldown: network requests made = {_new(before, hits(base))} (target 0)")
    status_requests(base)


def _refused(orch: Orchestrator) -> None:
    """The dead primary's own request, as a call sends it (its provider, key, URL and body), refused and classified:
    what the refused connect of a call costs here."""
    try:
        orch.factory.get("openai").chat("bench", MESSAGES, ChatParams())
    except ProviderUnavailableError:
        return
    raise RuntimeError("the dead primary's address answered: the refused connect was not measured")


def _count_rows(orch: Orchestrator) -> int:
    from sqlalchemy import func, select

    from orchestrator_core.store.tables import CallMetric

    with orch.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(CallMetric)) or 0)


def _new(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


def status_requests(base: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/status.db",
                            base_urls={"lmstudio": base, "custom": f"{base}/v1", "openai": refused_url()},
                            env_keys={"openai": "sk-bench-not-a-real-key-000000"}, local_hosts=("lmstudio",),
                            failure_cooldown_s=3600.0)
        with Orchestrator.from_settings(settings) as orch:
            before = hits(base)
            statuses = orch.manager.list_with_status(force=True)
            local = sum(1 for s in statuses if s.local)
            print(f"   status of {len(statuses)} models ({local} local): {_new(before, hits(base))} request(s) "
                  "to the host (target 1)")
            orch.registry.add(DEAD, priority=10)
            orch.registry.add(BACKUP, priority=20)
            orch.chat(DEAD, MESSAGES)
            paths: dict[str, Callable[[], object]] = {
                "chat": lambda: orch.chat(BACKUP, MESSAGES, fallback=False),
                "dead": lambda: orch.chat(DEAD, MESSAGES),
            }
            interleaved(paths, 50)
            times = interleaved(paths, 300)[0]
            extra = statistics.median(times["dead"]) - statistics.median(times["chat"])
            print(f"   dead primary with {len(statuses) + 2} active models to rank: extra over the backup, median "
                  f"{extra * 1000:.3f} ms")


def import_time() -> None:
    probe = ("import sys,time;t=time.perf_counter();import orchestrator_core.orchestrator;"
             "d=time.perf_counter()-t;heavy=[m for m in ('pandas','plotly','streamlit') if m in sys.modules];"
             "print(f'{d*1000:.0f} ms, heavy modules loaded: {heavy or \"none\"}')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False)
    print(f"5. import orchestrator_core (with the facade): {out.stdout.strip() or out.stderr.strip()}")


if __name__ == "__main__":
    main()
