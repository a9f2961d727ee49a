"""Benchmark: how soon a load and an unload are reported, against a stand-in llama-server router. Prints figures.

    python bench/load_speed.py [--runs 10] [--load-ms 20,150,400] [--unload-ms 60]

The stand-in runs in another process (so it does not share the benchmark's GIL) and behaves like a
llama-server router as observed: POST /models/load answers at once and the model turns "loaded"
after --load-ms (a tiny model loads in ~20 ms; spawning the child process adds to that on a real
router); POST /models/unload answers at once and the model stays "loaded" for --unload-ms;
GET /models/sse pushes the status_change events. Three ways of waiting are timed, from load() to
wait_for_load() returning:

  before         the old schedule: a check every POLL_INTERVAL_S (1 s), no event stream
  backoff        checks after 50, 100, 200 ms ... up to 1 s, the router without /models/sse
  backoff + sse  the same, woken at once by the router's status_change event

Then the unload: what a check right after the unload request says (what the CLI used to print),
and how long unload() takes to return the host's answer.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator_core import loader
from orchestrator_core.config import DEFAULT_BASE_URLS, Settings
from orchestrator_core.orchestrator import Orchestrator

MODEL = "tiny"
MODEL_ID = f"llamacpp:{MODEL}"


# -- the stand-in router (runs in its own process) ---------------------------------------------------
class Router:
    """One model's state, changed by timers as llama-server's child processes would change it."""

    def __init__(self, load_s: float, unload_s: float) -> None:
        self.state = "unloaded"
        self.load_s, self.unload_s = load_s, unload_s
        self.lock = threading.Lock()
        self.listeners: list[queue.Queue[bytes]] = []

    def set_state(self, value: str, **extra: object) -> None:
        with self.lock:
            self.state = value
            frame = {"model": MODEL, "event": "status_change", "data": {"status": value, **extra}}
            for listener in self.listeners:
                listener.put(b"data: " + json.dumps(frame).encode() + b"\n\n")

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        threading.Timer(seconds, action).start()


def make_handler(router: Router, sse: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _json(self, body: object, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/models":
                self._json({"data": [{"id": MODEL, "status": {"value": router.state}}], "object": "list"})
            elif self.path == "/models/sse" and sse:
                self._stream()
            else:
                self._json({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, 404)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/models/load":
                router.set_state("loading", progress={"stages": ["text_model"], "current": "text_model", "value": 0})
                router.later(router.load_s, lambda: router.set_state("loaded"))
            elif self.path == "/models/unload":
                if router.state not in ("loaded", "loading"):
                    self._json({"error": {"code": 400, "message": "model is not running",
                                          "type": "invalid_request_error"}}, 400)
                    return
                router.later(router.unload_s, lambda: router.set_state("unloaded", exit_code=0))
            self._json({"success": True})

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            mine: queue.Queue[bytes] = queue.Queue()
            with router.lock:
                router.listeners.append(mine)
            try:
                while True:
                    try:
                        self.wfile.write(mine.get(timeout=0.5))
                    except queue.Empty:
                        self.wfile.write(b": ping\n\n")  # finds out when the client has gone
                    self.wfile.flush()
            except OSError:
                pass
            finally:
                with router.lock:
                    router.listeners.remove(mine)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def serve(load_ms: float, unload_ms: float, sse: bool) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Router(load_ms / 1000, unload_ms / 1000), sse))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# -- the benchmark --------------------------------------------------------------------------------------
def start_router(args: argparse.Namespace, sse: bool) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, __file__, "--serve", "--load-ms", str(args.load_ms), "--unload-ms",
               str(args.unload_ms)] + ([] if sse else ["--no-sse"])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, f"http://127.0.0.1:{process.stdout.readline().strip()}"


def orchestrator(base_url: str, db_dir: str, name: str) -> Orchestrator:
    settings = Settings(
        database_url=f"sqlite:///{db_dir}/{name}.db",
        base_urls={**DEFAULT_BASE_URLS, "llamacpp": base_url},
        local_hosts=("llamacpp",),
        poll_interval_s=1.0,
        status_timeout_s=2.0,
    )
    return Orchestrator.from_settings(settings)


def time_loads(orch: Orchestrator, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        orch.manager.unload(MODEL_ID)
        started = time.perf_counter()
        orch.manager.load(MODEL_ID)
        status = orch.manager.wait_for_load(MODEL_ID, timeout_s=30)
        times.append((time.perf_counter() - started) * 1000)
        assert status.state.value == "loaded", status
    return times


def time_unloads(orch: Orchestrator, runs: int) -> tuple[list[str], list[float], list[str]]:
    right_after, times, states = [], [], []
    host = orch.factory.host("llamacpp")
    for _ in range(runs):
        orch.manager.load(MODEL_ID)
        orch.manager.wait_for_load(MODEL_ID, timeout_s=30)
        host.unload_model(MODEL)  # the old unload: the request, then one check
        right_after.append(orch.manager.check_status(MODEL_ID, force=True).state.value)
        time.sleep(0.3)  # let that unload finish before the next load
        orch.manager.load(MODEL_ID)
        orch.manager.wait_for_load(MODEL_ID, timeout_s=30)
        started = time.perf_counter()
        status = orch.manager.unload(MODEL_ID)
        times.append((time.perf_counter() - started) * 1000)
        states.append(status.state.value)
    return right_after, times, states


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):7.1f} ms   min {min(times):7.1f}   max {max(times):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load-ms", default="20,150,400", help="comma-separated load times to try")
    parser.add_argument("--unload-ms", type=float, default=60.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-sse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(float(args.load_ms), args.unload_ms, not args.no_sse)
        return
    load_times = [float(x) for x in str(args.load_ms).split(",")]
    print(f"stand-in llama-server router in another process; unloads {args.unload_ms:g} ms after the request; "
          f"{args.runs} runs each (the 1 s schedule: {max(3, args.runs // 2)})\n")
    with tempfile.TemporaryDirectory() as tmp:
        for load_ms in load_times:
            bench_load_time(argparse.Namespace(**{**vars(args), "load_ms": load_ms}), tmp)
        bench_unload(args, tmp)


def bench_load_time(args: argparse.Namespace, tmp: str) -> None:
    plain, plain_url = start_router(args, sse=False)
    pushing, pushing_url = start_router(args, sse=True)
    first_poll = loader.FIRST_POLL_S
    tag = f"{args.load_ms:g}"
    try:
        rows = []
        loader.FIRST_POLL_S = 1.0  # the schedule before issue 8: a check every POLL_INTERVAL_S
        with orchestrator(plain_url, tmp, f"before{tag}") as orch:
            rows.append(("before (1 s polling)", time_loads(orch, max(3, args.runs // 2))))
        loader.FIRST_POLL_S = first_poll
        with orchestrator(plain_url, tmp, f"backoff{tag}") as orch:
            rows.append(("backoff (50 ms doubling)", time_loads(orch, args.runs)))
            check = time_checks(orch, 20)
        with orchestrator(pushing_url, tmp, f"sse{tag}") as orch:
            rows.append(("backoff + /models/sse", time_loads(orch, args.runs)))
    finally:
        loader.FIRST_POLL_S = first_poll
        stop(plain, pushing)
    print(f"model loaded {args.load_ms:g} ms after POST /models/load; load() to wait_for_load() returning "
          f"(one status check costs {statistics.median(check):.1f} ms here):")
    for name, times in rows:
        print(f"  {name:<26} {summary(times)}")
    print()


def bench_unload(args: argparse.Namespace, tmp: str) -> None:
    pushing, pushing_url = start_router(argparse.Namespace(**{**vars(args), "load_ms": 20.0}), sse=True)
    try:
        with orchestrator(pushing_url, tmp, "unload") as orch:
            right_after, unload_times, states = time_unloads(orch, args.runs)
    finally:
        stop(pushing)
    print(f"unload (the router stops the model {args.unload_ms:g} ms after the request):")
    print(f"  a check right after the unload request says: {sorted(set(right_after))} "
          f"({right_after.count('loaded')}/{len(right_after)} 'loaded': what the CLI used to print)")
    print(f"  unload() returns {sorted(set(states))} after {summary(unload_times)}")


def time_checks(orch: Orchestrator, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        orch.manager.check_status(MODEL_ID, force=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        process.terminate()
        process.wait(5)


if __name__ == "__main__":
    main()
