"""Benchmark: what the HTTP gateway adds over calling the upstream directly. Prints figures; asserts nothing.

    python bench/gateway.py [--seconds 5] [--soak 30] [--workers 1,2] [--compare] [--paced-seconds 10]

Three processes: a loopback upstream (a minimal asyncio HTTP/1.1 server speaking OpenAI's chat wire), the
gateway (``uvicorn api.asgi:api_app [--workers N]``, as a deployment runs it) and the load generator (asyncio,
raw keep-alive sockets, so the client costs little next to what it measures). For each worker count and
1, 16 and 64 concurrent clients, plain and streamed, it prints median and p99 latency direct and through the
gateway, the difference, the gateway's requests per second, the gateway's CPU time per request (all its
processes and threads: on a busy machine this is the steadier figure) and the load average when the row
ran; then the paced streams (below); then a soak at 64 concurrent streams that checks no request failed and
every call left its metric row. With several worker counts a last table puts their figures side by side.
``--compare`` also runs the gateway with every request through FastAPI's stack (``create_api(lean_chat=False)``,
what the gateway was before api/lean.py), interleaved with the lean one row by row.

Targets (issue 12): added median <= 1 ms at 1 client; p99 at 64 concurrent streams <= 10 ms added;
>= 1,000 requests/s at 16 clients; no error and no lost metric row at 64 concurrent for 30 s.

How to read the 64-stream target. The closed-loop rows use an upstream that answers at once, so at C clients
latency is C / throughput: their 64-client p99 measures queueing, and 10 ms added there would need about
6,400 req/s from one process. The target is about streams that last as long as a model's: the paced rows
stream 20 chunks 10-20 ms apart (a fixed cycle, the same for direct and gateway calls; ~0.3 s a stream) and
print the gateway's added time to first token and added total time, median and p99, against the same paced
upstream called directly, at 1 and 64 concurrent streams. The target is met when the added p99 of both is
<= 10 ms at 64 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}).encode()
PIECES = ["Hel", "lo", " the", "re"]
STREAM = b"".join(
    b"data: " + json.dumps({"model": "bench", "choices": [{"index": 0, "delta": {"content": p},
                                                           "finish_reason": None}]}).encode() + b"\n\n"
    for p in PIECES
) + b'data: {"model": "bench", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n' \
  + b"data: [DONE]\n\n"


STAGGER_S = 0.3  # clients start spread over about one paced stream's length (PACED_CHUNKS x the mean gap)
PACED_CHUNKS = 20
PACED_GAPS_MS = (10, 15, 20, 12, 18, 11, 17, 14, 19, 13)  # 10-20 ms, mean 14.9: ~0.3 s a stream
PACED_PIECE = b"data: " + json.dumps({"model": "paced", "choices": [
    {"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}).encode() + b"\n\n"
PACED_END = (b'data: {"model": "paced", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], '
             b'"usage": {"prompt_tokens": 3, "completion_tokens": 20}}\n\ndata: [DONE]\n\n')


# -- the upstream (own process) ----------------------------------------------------------------------------
class Upstream(asyncio.Protocol):
    """Answers every POST with a chat completion (or an SSE stream when the body asks for one), keep-alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            compact = body.replace(b" ", b"")
            if b'"model":"paced"' in compact:
                self.paced()
            else:
                self.reply(b'"stream":true' in compact)

    def paced(self) -> None:
        """A stream like a model's: PACED_CHUNKS chunks PACED_GAPS_MS apart, then usage and [DONE]."""
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
        loop = asyncio.get_running_loop()
        at = 0.0
        for i in range(PACED_CHUNKS):
            at += PACED_GAPS_MS[i % len(PACED_GAPS_MS)] / 1000
            loop.call_later(at, self._chunk, PACED_PIECE)
        loop.call_later(at + 0.001, self._chunk, PACED_END, b"0\r\n\r\n")  # after the last piece, not a tie

    def _chunk(self, event: bytes, then: bytes = b"") -> None:
        if not self.transport.is_closing():
            self.transport.write(b"%x\r\n%s\r\n%s" % (len(event), event, then))

    def reply(self, stream: bool) -> None:
        if stream:
            chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(STREAM), STREAM)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n" + chunk)
        else:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(ANSWER), ANSWER))


async def serve_upstream(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the load generator (own process) ------------------------------------------------------------------------
async def one_client(host: str, port: int, request: bytes, start_s: float, measure_from: float, until: float,
                     latencies: list[float], errors: list[str], ttfts: list[float], warm: list[int]) -> None:
    """One client: connects after start_s, then sends a request as soon as the last is answered, until ``until``;
    only requests sent from ``measure_from`` on are counted (the warm-up's are not)."""
    await asyncio.sleep(start_s)
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status, first_token = await read_response(reader)
            if started < measure_from:
                warm.append(status)
                continue
            latencies.append(time.perf_counter() - started)
            if first_token is not None:
                ttfts.append(first_token - started)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    """The status, and when the first chunk carrying text arrived (None for an answer in one piece)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
        return status, None
    first_token = None
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if first_token is None and b'"content"' in chunk:
            first_token = time.perf_counter()
        if size == 0:
            return status, first_token


async def load(url: str, concurrency: int, seconds: float, stream: bool, token: str, model: str) -> dict[str, object]:
    hostport, _, prefix = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "stream": stream}).encode()
    path = f"/{prefix}/chat/completions" if prefix else "/v1/chat/completions"
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
               f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    warm: list[int] = []
    # The clients start spread over STAGGER_S and are warmed up before anything is counted, each on one
    # connection throughout: concurrent clients, not a herd of them arriving in the same millisecond (which
    # would put the cost of 64 simultaneous starts into the p99 of the whole run, direct and gateway alike).
    warm_s = max(min(1.0, seconds / 5), STAGGER_S)
    started = time.perf_counter() + warm_s
    await asyncio.gather(*(one_client(host, int(port), request, i * STAGGER_S / concurrency, started,
                                      started + seconds, latencies, errors, ttfts, warm) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    figures: dict[str, object] = {"n": len(latencies), "warm": len(warm), "errors": len(errors),
                                  "rps": len(latencies) / elapsed,
               "p50_ms": _p(latencies, 0.5), "p99_ms": _p(latencies, 0.99)}
    if ttfts:
        figures.update(ttft_p50_ms=_p(ttfts, 0.5), ttft_p99_ms=_p(ttfts, 0.99))
    return figures


def _p(values: list[float], q: float) -> float:
    """The q-quantile in ms (the median interpolated, as statistics.median does)."""
    ordered = sorted(values)
    return (statistics.median(ordered) if q == 0.5 else ordered[int(len(ordered) * q)]) * 1000


def run_load(url: str, concurrency: int, seconds: float, stream: bool, token: str, model: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--load", url, str(concurrency), str(seconds),
                          "stream" if stream else "plain", token, model], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- orchestration -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="per paced-stream measurement (0: none)")
    parser.add_argument("--soak", type=float, default=30.0, help="seconds of 64 concurrent streams (0: none)")
    parser.add_argument("--workers", default="1,2", help="gateway process counts to measure, comma-separated")
    parser.add_argument("--compare", action="store_true",
                        help="also measure every request through FastAPI's stack (the gateway before api/lean.py)")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(serve_upstream(args.upstream))
        return
    if args.load:
        url, conc, secs, mode, token, model = args.load
        print(json.dumps(asyncio.run(load(url, int(conc), float(secs), mode == "stream", token, model))))
        return
    print(f"gateway server: uvicorn --http {_available('httptools', 'h11')} --loop {_available('uvloop', 'asyncio')}; "
          f"{os.cpu_count()} cores; load average at start {_load()}")
    paths = ["lean", "fastapi"] if args.compare else ["lean"]
    by_workers = {int(w): bench(args.seconds, args.paced_seconds, args.soak, int(w), paths)
                  for w in args.workers.split(",")}
    if len(by_workers) > 1:
        side_by_side(by_workers)


def fastapi_stack_app() -> Any:
    """The API with POST /v1/chat/completions through FastAPI's stack too (uvicorn --factory, for --compare)."""
    sys.path.insert(0, str(ROOT))
    from api.app import create_api

    return create_api(lean_chat=False)


def _available(module: str, otherwise: str) -> str:
    return module if importlib.util.find_spec(module) else otherwise


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Gateway:
    """One gateway deployment under test: its own database, token and uvicorn process (tree)."""

    path: str  # "lean" (api.asgi:api_app) or "fastapi" (every request through FastAPI's stack)
    workers: int
    upstream_port: int
    folder: str
    port: int = field(default_factory=free_port)
    calls: int = 0
    token: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        sys.path.insert(0, str(ROOT))
        from orchestrator_core.store import Database, ModelRegistry, TokenStore

        db = Database.open(self.db_url)
        registry = ModelRegistry(db)
        for entry in registry.list():
            registry.set_active(entry.model_id, False)
        registry.add("custom:bench")
        registry.add("custom:paced")
        self.token = TokenStore(db).create("bench", "chat").token
        db.dispose()
        env = {**os.environ, "DATABASE_URL": self.db_url,
               "CUSTOM_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
               "LOCAL_HOSTS": "lmstudio", "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{free_port()}"}
        app = ["api.asgi:api_app"] if self.path == "lean" else [
            "--app-dir", str(ROOT / "bench"), "--factory", "gateway:fastapi_stack_app"]
        self.process = subprocess.Popen([sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1",
                                         "--port", str(self.port), "--log-level", "warning", "--no-access-log",
                                         "--workers", str(self.workers)], cwd=ROOT, env=env)
        wait_http(self.port, "/api/health")
        return self

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.folder}/{self.path}.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, concurrency: int, seconds: float, stream: bool, model: str) -> dict[str, float]:
        """One measurement, with the gateway's CPU per request."""
        assert self.process is not None
        before = process_tree_cpu_s(self.process.pid)
        figures = run_load(self.url, concurrency, seconds, stream, self.token, model)
        calls = int(figures["n"]) + _warm_calls(figures)
        figures["cpu_ms"] = (process_tree_cpu_s(self.process.pid) - before) * 1000 / max(1, calls)
        self.calls += calls
        return figures

    def stop_and_count_rows(self) -> int:
        """Stop gracefully (that flushes the queued metric rows) and count the rows written."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        from sqlalchemy import func, select

        from orchestrator_core.store import Database
        from orchestrator_core.store.tables import CallMetric

        db = Database.open(self.db_url)
        with db.session() as s:
            rows = int(s.scalar(select(func.count()).select_from(CallMetric)) or 0)
        db.dispose()
        return rows


Row = tuple[int, str]  # clients, mode (plain, stream, paced)
Results = dict[Row, tuple[dict[str, float], dict[str, dict[str, float]]]]  # direct, by gateway path


def bench(seconds: float, paced_seconds: float, soak: float, workers: int, paths: list[str]) -> Results:
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port)])
    with tempfile.TemporaryDirectory() as tmp:
        gateways = [Gateway(path, workers, up_port, tmp) for path in paths]
        try:
            wait_http(up_port, "/")
            for gateway in gateways:
                gateway.start()
            print(f"\n== {workers} gateway process{'es' if workers > 1 else ''} (uvicorn --workers {workers})")
            results = measure(up_port, gateways, seconds)
            if paced_seconds > 0:
                results.update(measure_paced(up_port, gateways, paced_seconds))
            soaked = soak_run(gateways[0], soak) if soak > 0 else {}
        finally:
            rows = {g.path: g.stop_and_count_rows() for g in gateways}
            upstream.terminate()
    for gateway in gateways:
        print(f"metric rows ({gateway.path}): {rows[gateway.path]} written for {gateway.calls} gateway calls "
              f"({'none lost' if rows[gateway.path] == gateway.calls else 'SOME MISSING'})")
    summary(results, soaked, rows["lean"] == gateways[0].calls)
    return results


HEADER = (f"{'clients':>7} {'mode':>6} {'path':>7} | {'direct p50':>10} {'p99':>7} | {'gateway p50':>11} {'p99':>7} | "
          f"{'added p50':>9} {'p99':>7} | {'gw req/s':>8} {'gw cpu/req':>10} | errors | load avg")


def measure(up_port: int, gateways: list[Gateway], seconds: float) -> Results:
    """The closed-loop rows: an upstream that answers at once; direct and each gateway path interleaved."""
    direct = f"http://127.0.0.1:{up_port}/v1"
    print(HEADER)
    results: Results = {}
    for concurrency in (1, 16, 64):
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            load = _load()
            d = run_load(direct, concurrency, seconds, stream, "", "bench")
            through = {g.path: g.run(concurrency, seconds, stream, "custom:bench") for g in gateways}
            results[(concurrency, mode)] = (d, through)
            for path, g in through.items():
                print(f"{concurrency:>7} {mode:>6} {path:>7} | {d['p50_ms']:>8.2f}ms {d['p99_ms']:>5.1f}ms"
                      f" | {g['p50_ms']:>9.2f}ms {g['p99_ms']:>5.1f}ms | {g['p50_ms'] - d['p50_ms']:>7.2f}ms "
                      f"{g['p99_ms'] - d['p99_ms']:>5.1f}ms | {g['rps']:>8.0f} {g['cpu_ms']:>8.2f}ms | "
                      f"{int(g['errors']):>6} | {load}")
    return results


def measure_paced(up_port: int, gateways: list[Gateway], seconds: float) -> Results:
    """Streams paced like a model's (PACED_CHUNKS chunks PACED_GAPS_MS apart): added first-token and total time."""
    direct = f"http://127.0.0.1:{up_port}/v1"
    print(f"\npaced streams ({PACED_CHUNKS} chunks {min(PACED_GAPS_MS)}-{max(PACED_GAPS_MS)} ms apart), "
          f"{seconds:.0f} s each:")
    print(f"{'streams':>7} {'path':>7} | {'direct ttft p50':>15} {'p99':>6} | {'added ttft p50':>14} {'p99':>6} | "
          f"{'direct total p50':>16} {'p99':>6} | {'added total p50':>15} {'p99':>6} | {'gw cpu/req':>10} | "
          f"errors | load avg")
    results: Results = {}
    for concurrency in (1, 64):
        load = _load()
        d = run_load(direct, concurrency, seconds, True, "", "paced")
        through = {g.path: g.run(concurrency, seconds, True, "custom:paced") for g in gateways}
        results[(concurrency, "paced")] = (d, through)
        for path, g in through.items():
            print(f"{concurrency:>7} {path:>7} | {d['ttft_p50_ms']:>13.2f}ms {d['ttft_p99_ms']:>4.1f}ms | "
                  f"{g['ttft_p50_ms'] - d['ttft_p50_ms']:>12.2f}ms {g['ttft_p99_ms'] - d['ttft_p99_ms']:>4.1f}ms | "
                  f"{d['p50_ms']:>14.1f}ms {d['p99_ms']:>4.0f}ms | {g['p50_ms'] - d['p50_ms']:>13.2f}ms "
                  f"{g['p99_ms'] - d['p99_ms']:>4.1f}ms | {g['cpu_ms']:>8.2f}ms | {int(g['errors']):>6} | {load}")
    return results


def summary(results: Results, soaked: dict[str, float], no_row_lost: bool) -> None:
    """The targets of issue 12, each with its figure (the lean gateway's)."""
    def figure(concurrency: int, mode: str, key: str, added: bool = True) -> float:
        d, through = results[(concurrency, mode)]
        return through["lean"][key] - (d[key] if added else 0.0)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    p50 = figure(1, "plain", "p50_ms")
    rps = figure(16, "plain", "rps", added=False)
    print(f"target added median <= 1 ms at 1 client (plain): {p50:.2f} ms, {verdict(p50 <= 1)}; streamed "
          f"{figure(1, 'stream', 'p50_ms'):.2f} ms")
    print(f"target >= 1,000 req/s at 16 clients (plain): {rps:.0f}, {verdict(rps >= 1000)}; streamed "
          f"{figure(16, 'stream', 'rps', added=False):.0f}")
    closed = figure(64, "stream", "p99_ms")
    if (64, "paced") in results:
        ttft, total = figure(64, "paced", "ttft_p99_ms"), figure(64, "paced", "p99_ms")
        print(f"target added p99 <= 10 ms at 64 concurrent streams (paced like a model): first token {ttft:.1f} ms, "
              f"total {total:.1f} ms, {verdict(ttft <= 10 and total <= 10)}; closed loop against an instant "
              f"upstream (queueing, see the docstring): {closed:.1f} ms")
    else:
        print(f"target added p99 <= 10 ms at 64 concurrent streams: closed loop {closed:.1f} ms (no paced run)")
    if soaked:
        clean = int(soaked["errors"]) == 0 and no_row_lost
        print(f"target no error and no lost metric row at 64 concurrent for the soak: {verdict(clean)}")


def side_by_side(by_workers: dict[int, Results]) -> None:
    """The lean gateway's added latency, throughput and CPU per request, one column group per worker count."""
    counts = sorted(by_workers)
    print("\n== side by side (lean path): added p50 / p99, req/s, CPU per request")
    print(f"{'clients':>7} {'mode':>6} | " + " | ".join(f"{f'--workers {w}':>34}" for w in counts))
    for row in by_workers[counts[0]]:
        cells = []
        for w in counts:
            d, through = by_workers[w][row]
            g = through["lean"]
            cells.append(f"{g['p50_ms'] - d['p50_ms']:>7.2f} / {g['p99_ms'] - d['p99_ms']:>6.1f} ms "
                         f"{g['rps']:>6.0f}/s {g['cpu_ms']:>5.2f}ms")
        print(f"{row[0]:>7} {row[1]:>6} | " + " | ".join(cells))


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, its threads and its live children (uvicorn's workers)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += process_tree_cpu_s(int(child))
    except (OSError, ValueError):
        pass  # not Linux, or the process ended: the figure is left out rather than wrong
    return total


def _warm_calls(result: dict[str, float]) -> int:
    return int(result.get("warm", 0))


def soak_run(gateway: Gateway, seconds: float) -> dict[str, float]:
    result = gateway.run(64, seconds, True, "custom:bench")
    print(f"soak ({gateway.path}): 64 concurrent streams for {seconds:.0f} s: {int(result['n'])} calls, "
          f"{result['rps']:.0f}/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"errors {int(result['errors'])}")
    return result


if __name__ == "__main__":
    main()
