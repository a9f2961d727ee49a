"""Benchmark: what the HTTP gateway adds over calling the upstream directly. Prints figures; asserts nothing.

    python bench/gateway.py [--seconds 5] [--soak 30] [--workers 1,2]

Three processes: a loopback upstream (a minimal asyncio HTTP/1.1 server speaking OpenAI's chat wire), the
gateway (``uvicorn api.asgi:api_app [--workers N]``, as a deployment runs it) and the load generator (asyncio,
raw keep-alive sockets, so the client costs little next to what it measures). For each worker count and
1, 16 and 64 concurrent clients, plain and streamed, it prints median and p99 latency direct and through the
gateway, the difference, the gateway's requests per second, the gateway's CPU time per request (all its
processes and threads: on a busy machine this is the steadier figure) and the load average when the row
ran; then a soak at 64 concurrent streams that checks no request failed and every call left its metric row.

Targets (issue 12): added median <= 1 ms at 1 client; p99 at 64 concurrent streams <= 10 ms added;
>= 1,000 requests/s at 16 clients; no error and no lost metric row at 64 concurrent for 30 s.
The load generator is closed-loop (each client sends its next request when the last answer is in), so at
C clients latency is C / throughput: the 64-stream p99 target needs about 6,400 req/s.
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
from pathlib import Path

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
            self.reply(b'"stream":true' in body.replace(b" ", b""))

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
async def one_client(host: str, port: int, request: bytes, until: float, latencies: list[float],
                     errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
        return status
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status


async def load(url: str, concurrency: int, seconds: float, stream: bool, token: str, model: str) -> dict[str, object]:
    hostport, _, prefix = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "stream": stream}).encode()
    path = f"/{prefix}/chat/completions" if prefix else "/v1/chat/completions"
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
               f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    warm: list[float] = []
    warm_until = time.perf_counter() + min(1.0, seconds / 5)
    await asyncio.gather(*(one_client(host, int(port), request, warm_until, warm, errors) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(one_client(host, int(port), request, started + seconds, latencies, errors)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"n": len(latencies), "warm": len(warm), "errors": len(errors), "rps": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--soak", type=float, default=30.0, help="seconds of 64 concurrent streams (0: none)")
    parser.add_argument("--workers", default="1,2", help="gateway process counts to measure, comma-separated")
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
    for workers in (int(w) for w in args.workers.split(",")):
        bench(args.seconds, args.soak, workers)


def _available(module: str, otherwise: str) -> str:
    return module if importlib.util.find_spec(module) else otherwise


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def bench(seconds: float, soak: float, workers: int) -> None:
    sys.path.insert(0, str(ROOT))
    from orchestrator_core.store import Database, ModelRegistry, TokenStore

    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port)])
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        db = Database.open(db_url)
        registry = ModelRegistry(db)
        for entry in registry.list():
            registry.set_active(entry.model_id, False)
        registry.add("custom:bench")
        token = TokenStore(db).create("bench", "chat").token
        env = {**os.environ, "DATABASE_URL": db_url, "CUSTOM_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
               "LOCAL_HOSTS": "lmstudio", "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{free_port()}"}
        gateway = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.asgi:api_app", "--host", "127.0.0.1",
                                    "--port", str(gw_port), "--log-level", "warning", "--no-access-log",
                                    "--workers", str(workers)], cwd=ROOT, env=env)
        try:
            wait_http(up_port, "/")
            wait_http(gw_port, "/api/health")
            print(f"\n== {workers} gateway process{'es' if workers > 1 else ''} (uvicorn --workers {workers})")
            served, results = measure(up_port, gw_port, token, seconds, gateway.pid)
            soaked = soak_run(gw_port, token, soak) if soak > 0 else {"n": 0.0, "warm": 0.0, "errors": 0.0}
        finally:
            gateway.send_signal(signal.SIGTERM)  # a graceful stop flushes the queued metric rows
            gateway.wait(30)
            upstream.terminate()
        from sqlalchemy import func, select

        from orchestrator_core.store.tables import CallMetric

        with db.session() as s:
            rows = s.scalar(select(func.count()).select_from(CallMetric))
        db.dispose()
    expected = served + int(soaked["n"]) + int(soaked["warm"])
    print(f"metric rows: {rows} written for {expected} gateway calls "
          f"({'none lost' if rows == expected else f'{expected - (rows or 0)} MISSING'})")
    summary(results, soaked, rows, expected)


Results = dict[tuple[int, bool], tuple[dict[str, float], dict[str, float]]]


def measure(up_port: int, gw_port: int, token: str, seconds: float, gateway_pid: int) -> tuple[int, Results]:
    direct, gateway = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{gw_port}"
    print(f"{'clients':>7} {'mode':>6} | {'direct p50':>10} {'p99':>7} | {'gateway p50':>11} {'p99':>7} | "
          f"{'added p50':>9} {'p99':>7} | {'gw req/s':>8} {'gw cpu/req':>10} | errors | load avg")
    calls = 0
    results: Results = {}
    for concurrency in (1, 16, 64):
        for stream in (False, True):
            load = _load()
            d = run_load(direct, concurrency, seconds, stream, token, "bench")
            cpu_before = process_tree_cpu_s(gateway_pid)
            g = run_load(gateway, concurrency, seconds, stream, token, "custom:bench")
            cpu_ms = (process_tree_cpu_s(gateway_pid) - cpu_before) * 1000 / max(1, int(g["n"]) + _warm_calls(g))
            calls += int(g["n"]) + _warm_calls(g)
            results[(concurrency, stream)] = (d, g)
            print(f"{concurrency:>7} {'stream' if stream else 'plain':>6} | {d['p50_ms']:>8.2f}ms {d['p99_ms']:>5.1f}ms"
                  f" | {g['p50_ms']:>9.2f}ms {g['p99_ms']:>5.1f}ms | {g['p50_ms'] - d['p50_ms']:>7.2f}ms "
                  f"{g['p99_ms'] - d['p99_ms']:>5.1f}ms | {g['rps']:>8.0f} {cpu_ms:>8.2f}ms | {int(g['errors']):>6} | "
                  f"{load}")
    return calls, results


def summary(results: Results, soaked: dict[str, float], rows: int | None, expected: int) -> None:
    """The four targets of issue 12, each with its figure."""
    def added(concurrency: int, stream: bool, key: str) -> float:
        d, g = results[(concurrency, stream)]
        return g[key] - d[key]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    p50 = added(1, False, "p50_ms")
    p99 = added(64, True, "p99_ms")
    rps = results[(16, False)][1]["rps"]
    print(f"target added median <= 1 ms at 1 client (plain): {p50:.2f} ms, {verdict(p50 <= 1)}; streamed "
          f"{added(1, True, 'p50_ms'):.2f} ms")
    print(f"target added p99 <= 10 ms at 64 concurrent streams: {p99:.1f} ms, {verdict(p99 <= 10)}")
    print(f"target >= 1,000 req/s at 16 clients (plain): {rps:.0f}, {verdict(rps >= 1000)}; streamed "
          f"{results[(16, True)][1]['rps']:.0f}")
    if soaked.get("n"):
        clean = int(soaked["errors"]) == 0 and rows == expected
        print(f"target no error and no lost metric row at 64 concurrent for the soak: {verdict(clean)}")


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


def soak_run(gw_port: int, token: str, seconds: float) -> dict[str, float]:
    result = run_load(f"http://127.0.0.1:{gw_port}", 64, seconds, True, token, "custom:bench")
    print(f"soak: 64 concurrent streams for {seconds:.0f} s: {int(result['n'])} calls, {result['rps']:.0f}/s, "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {int(result['errors'])}")
    return result


if __name__ == "__main__":
    main()
