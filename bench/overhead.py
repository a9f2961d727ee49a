"""Benchmark: what the orchestrator costs next to the network. Prints figures; asserts nothing.

    python bench/overhead.py [--calls 2000]

1. Per-call overhead of Orchestrator.chat over a raw httpx.Client POST to the same loopback server
   (medians of interleaved runs; metrics recording included). Target: at most 0.5 ms.
2. A model in cooldown costs no network attempt (server hits counted).
3. Status of many models costs one request per host.
4. ``import orchestrator_core`` pulls in no pandas, plotly or streamlit, and how long it takes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from orchestrator_core.config import Settings  # noqa: E402
from orchestrator_core.orchestrator import Orchestrator  # noqa: E402

ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}).encode()
MODELS = json.dumps({"models": [
    {"type": "llm", "key": f"m{i}", "loaded_instances": [{"id": f"m{i}"}] if i % 2 else []} for i in range(50)
]}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real servers do; else delayed ACKs add 40 ms to every call
    hits: dict[str, int] = {}

    def _send(self, body: bytes) -> None:
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._send(ANSWER)

    def do_GET(self) -> None:  # noqa: N802
        self._send(MODELS)

    def log_message(self, *args: object) -> None:
        pass


def serve() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def overhead(orch: Orchestrator, base: str, calls: int) -> tuple[float, float, float]:
    messages = [{"role": "user", "content": "ping"}]
    body = {"model": "bench", "messages": messages, "stream": False}
    raw = httpx.Client(base_url=f"{base}/v1", timeout=5.0)
    raw_times: list[float] = []
    orch_times: list[float] = []
    for _ in range(50):  # warm both connection pools
        raw.post("/chat/completions", json=body).json()
        orch.chat("custom:bench", messages, fallback=False)
    for _ in range(calls):  # interleave so drift in the machine hits both equally
        t = time.perf_counter()
        raw.post("/chat/completions", json=body).json()
        raw_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        orch.chat("custom:bench", messages, fallback=False)
        orch_times.append(time.perf_counter() - t)
    raw.close()
    raw_ms = statistics.median(raw_times) * 1000
    orch_ms = statistics.median(orch_times) * 1000
    return raw_ms, orch_ms, orch_ms - raw_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    server, base = serve()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/bench.db",
            base_urls={"custom": f"{base}/v1", "lmstudio": base},
            local_hosts=("lmstudio",),
        )
        with Orchestrator.from_settings(settings) as orch:
            raw_ms, orch_ms, extra = overhead(orch, base, args.calls)
            orch.metrics.flush()
            from sqlalchemy import func, select

            from orchestrator_core.store.tables import CallMetric

            with orch.db.session() as s:
                rows = s.scalar(select(func.count()).select_from(CallMetric))
            print(f"1. per-call overhead ({args.calls} calls, loopback, metrics on SQLite WAL)")
            print(f"   raw httpx median      {raw_ms:7.3f} ms")
            print(f"   Orchestrator.chat     {orch_ms:7.3f} ms")
            print(f"   overhead              {extra:7.3f} ms   (target <= 0.5 ms)  "
                  f"{'OK' if extra <= 0.5 else 'OVER TARGET'}")
            print(f"   metric rows written   {rows} (expected {args.calls + 50})")

            hits_before = dict(Handler.hits)
            orch.failures.record("custom:bench", "rate_limit", "bench", 60)
            try:
                orch.chat("custom:bench", [{"role": "user", "content": "x"}], fallback=False)
            except Exception:  # noqa: BLE001 - AllModelsFailedError is the expected outcome
                pass
            orch.manager.reset_failed()
            new_hits = sum(Handler.hits.values()) - sum(hits_before.values())
            print(f"2. model in cooldown: network requests made = {new_hits} (target 0)")

            hits_before = Handler.hits.get("/api/v1/models", 0)
            statuses = orch.manager.list_with_status(force=True)
            local = sum(1 for s in statuses if s.local)
            print(f"3. status of {len(statuses)} models ({local} local): "
                  f"{Handler.hits.get('/api/v1/models', 0) - hits_before} request(s) to the host (target 1)")
    server.shutdown()

    probe = ("import sys,time;t=time.perf_counter();import orchestrator_core.orchestrator;"
             "d=time.perf_counter()-t;heavy=[m for m in ('pandas','plotly','streamlit') if m in sys.modules];"
             "print(f'{d*1000:.0f} ms, heavy modules loaded: {heavy or \"none\"}')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=False)
    print(f"4. import orchestrator_core (with the facade): {out.stdout.strip() or out.stderr.strip()}")


if __name__ == "__main__":
    main()
