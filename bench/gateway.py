"""Benchmark: what the HTTP gateway adds over calling the upstream directly. Prints figures; asserts nothing.

    python bench/gateway.py [--seconds 5] [--soak 30]

Three processes: a loopback upstream (a minimal asyncio HTTP/1.1 server speaking OpenAI's chat wire), the
gateway (``uvicorn api.asgi:api_app``, as a deployment runs it) and the load generator (asyncio, raw
keep-alive sockets, so the client costs little next to what it measures). For 1, 16 and 64 concurrent
clients, plain and streamed, it prints median and p99 latency direct and through the gateway, and the
difference; then requests per second at 16 clients, and a soak at 64 concurrent streams that checks no
request failed and every call left its metric row.

Targets (issue 12): added median <= 1 ms at 1 client; p99 at 64 concurrent streams <= 10 ms added;
>= 1,000 requests/s at 16 clients; no error and no lost metric row at 64 concurrent for 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
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
    parser.add_argument("--soak", type=float, default=30.0, help="seconds of 64 concurrent streams")
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
    bench(args.seconds, args.soak)


def bench(seconds: float, soak: float) -> None:
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
                                    "--port", str(gw_port), "--log-level", "warning", "--no-access-log"],
                                   cwd=ROOT, env=env)
        try:
            wait_http(up_port, "/")
            wait_http(gw_port, "/api/health")
            served = measure(up_port, gw_port, token, seconds)
            soaked = soak_run(gw_port, token, soak)
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


def measure(up_port: int, gw_port: int, token: str, seconds: float) -> int:
    direct, gateway = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{gw_port}"
    print(f"{'clients':>7} {'mode':>7} | {'direct p50':>10} {'p99':>7} | {'gateway p50':>11} {'p99':>7} | "
          f"{'added p50':>9} {'p99':>7} | {'gw req/s':>8} errors")
    calls = 0
    for concurrency in (1, 16, 64):
        for stream in (False, True):
            d = run_load(direct, concurrency, seconds, stream, token, "bench")
            g = run_load(gateway, concurrency, seconds, stream, token, "custom:bench")
            calls += int(g["n"]) + _warm_calls(g)
            print(f"{concurrency:>7} {'stream' if stream else 'plain':>7} | {d['p50_ms']:>8.2f}ms {d['p99_ms']:>5.1f}ms"
                  f" | {g['p50_ms']:>9.2f}ms {g['p99_ms']:>5.1f}ms | {g['p50_ms'] - d['p50_ms']:>7.2f}ms "
                  f"{g['p99_ms'] - d['p99_ms']:>5.1f}ms | {g['rps']:>8.0f} {int(g['errors'])}")
    return calls


def _warm_calls(result: dict[str, float]) -> int:
    return int(result.get("warm", 0))


def soak_run(gw_port: int, token: str, seconds: float) -> dict[str, float]:
    result = run_load(f"http://127.0.0.1:{gw_port}", 64, seconds, True, token, "custom:bench")
    print(f"soak: 64 concurrent streams for {seconds:.0f} s: {int(result['n'])} calls, {result['rps']:.0f}/s, "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {int(result['errors'])}")
    return result


if __name__ == "__main__":
    main()
