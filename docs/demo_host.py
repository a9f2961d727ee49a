"""A stand-in LM Studio on 127.0.0.1 plus a day of seeded metrics, to try the console without a GPU.

    .venv/bin/python docs/demo_host.py                 # serves until Ctrl-C
    DATABASE_URL=sqlite:///data/demo.db make run       # in another terminal

It answers LM Studio's native /api/v1 routes (list, load with a few seconds of "loading", unload)
and /v1/chat/completions (plain and streamed), and writes a day of synthetic call metrics into
the database so the charts have something to show. The README screenshots were taken this way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = {"qwen2.5-7b-instruct": True, "llama-3.2-3b-instruct": False, "gemma-3-4b-it": False}
LOAD_SECONDS = 4.0
_lock = threading.Lock()
_loading: dict[str, float] = {}


def _state() -> dict[str, object]:
    now = time.monotonic()
    with _lock:
        for name, since in list(_loading.items()):
            if now - since >= LOAD_SECONDS:
                MODELS[name] = True
                del _loading[name]
        return {"models": [
            {"type": "llm", "key": k, "display_name": k, "max_context_length": 32768,
             "loaded_instances": [{"id": k, "config": {"context_length": 8192}}] if v else []}
            for k, v in MODELS.items()
        ]}


class Host(BaseHTTPRequestHandler):
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
        if self.path == "/api/v1/models":
            self._json(_state())
        elif self.path == "/v1/models":
            self._json({"object": "list", "data": [{"id": k, "object": "model"} for k in MODELS]})
        else:
            self._json({"error": "Unexpected endpoint or method."}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = body.get("model") or body.get("instance_id", "")
        if self.path == "/api/v1/models/load":
            with _lock:
                _loading.setdefault(model, time.monotonic())
            time.sleep(LOAD_SECONDS)
            _state()
            self._json({"type": "llm", "instance_id": model, "status": "loaded", "load_time_seconds": LOAD_SECONDS})
        elif self.path == "/api/v1/models/unload":
            with _lock:
                MODELS[model] = False
            self._json({"instance_id": model})
        elif self.path == "/v1/chat/completions":
            self._chat(model, body)
        else:
            self._json({"error": "Unexpected endpoint or method."}, 404)

    def _chat(self, model: str, body: dict[str, object]) -> None:
        if not MODELS.get(model):
            self._json({"error": {"message": "No models loaded. Please load a model in the developer page.",
                                  "type": "invalid_request_error"}}, 400)
            return
        prompt = str((body.get("messages") or [{}])[-1].get("content", ""))  # type: ignore[index, union-attr]
        words = f"This is {model} on the demo host. You asked: {prompt[:80]}".split(" ")
        if not body.get("stream"):
            time.sleep(0.3)
            self._json({"model": model, "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": " ".join(words)}}],
                        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        time.sleep(0.25)
        for i, word in enumerate(words):
            chunk = {"model": model, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.04)
        final = {"model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def seed_metrics(rows: int) -> None:
    """A day of plausible attempts: mostly fine, some rate limits and host failures with fallbacks."""
    from orchestrator_core.config import Settings
    from orchestrator_core.orchestrator import Orchestrator
    from orchestrator_core.store import MetricRow

    rng = random.Random(7)
    models = {"openai:gpt-4.1-mini": 650, "anthropic:claude-haiku-4-5": 900, "google:gemini-2.5-flash": 500,
              "lmstudio:qwen2.5-7b-instruct": 1400, "lmstudio:llama-3.2-3b-instruct": 1100}
    now = time.time()
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        for i in range(rows):
            ts = now - rng.uniform(0, 86400)
            model = rng.choice(list(models))
            latency = rng.lognormvariate(0, 0.35) * models[model]
            request = f"demo-{i}"
            fails = rng.random() < 0.08
            if fails:
                kind = "unavailable" if model.startswith("lmstudio") else rng.choice(["rate_limit", "timeout"])
                orch.metrics.record(MetricRow(model=model, outcome="error", latency_ms=latency / 4, request_id=request,
                                              requested_model=model, error_kind=kind, error=f"demo {kind}", ts=ts))
                target = "anthropic:claude-haiku-4-5" if model != "anthropic:claude-haiku-4-5" else "openai:gpt-4.1-mini"
                orch.metrics.record(MetricRow(model=target, outcome="ok", latency_ms=models[target], ts=ts + 1,
                                              request_id=request, requested_model=model, fallback_from=model,
                                              streamed=True, ttft_ms=models[target] / 3,
                                              prompt_tokens=40, completion_tokens=180))
            else:
                orch.metrics.record(MetricRow(model=model, outcome="ok", latency_ms=latency, request_id=request,
                                              requested_model=model, streamed=True, ttft_ms=latency / 4,
                                              prompt_tokens=rng.randint(20, 400), completion_tokens=rng.randint(40, 600),
                                              ts=ts))
        orch.metrics.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--seed-rows", type=int, default=3000, help="synthetic metric rows (0 for none)")
    args = parser.parse_args()
    if args.seed_rows:
        seed_metrics(args.seed_rows)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Host)
    print(f"demo LM Studio on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
