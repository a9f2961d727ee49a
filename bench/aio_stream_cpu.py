"""Benchmark: CPU time per streamed chunk, stream_chat (httpx, a thread) against astream_chat (aiohttp, the loop).

    python bench/aio_stream_cpu.py [--chunks 2000] [--streams 8] [--every-ms 1]

The upstream is its own process (it must not share the GIL or the CPU clock): an asyncio server that answers
every chat request with --chunks OpenAI chunks, one write each, --every-ms apart, so each chunk arrives as its
own read, as a model's tokens do. The figure is this process's CPU time (time.process_time) over all chunks of
--streams streams run one after another, per chunk. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = b"data: " + json.dumps({"model": "bench", "choices": [{"index": 0, "delta": {"content": "tok "}}]}).encode()


async def serve(chunks: int, every_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()  # the client closed its keep-alive connection

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for piece in [CHUNK + b"\n\n"] * chunks + [b"data: [DONE]\n\n", b""]:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(every_s)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def measure(port: int, streams: int, chunks: int) -> None:
    import uvloop

    from orchestrator_core.clients import ProviderFactory
    from orchestrator_core.config import Settings
    from orchestrator_core.providers import aio
    from orchestrator_core.types import ChatParams

    settings = Settings(database_url="sqlite://", base_urls={"openai": f"http://127.0.0.1:{port}/v1"},
                        env_keys={"openai": "sk-bench-0123456789"})
    provider = ProviderFactory(settings).get("openai")
    hello = [{"role": "user", "content": "hi"}]

    def on_thread() -> None:
        for _ in range(streams):
            for _event in provider.stream_chat("bench", hello, ChatParams()):  # type: ignore[arg-type]
                pass

    async def on_loop() -> None:
        for _ in range(streams):
            async for _event in provider.astream_chat("bench", hello, ChatParams()):  # type: ignore[arg-type]
                pass
        await aio.close_sessions()

    runs = {"stream_chat (httpx)": on_thread,
            "astream_chat asyncio": lambda: asyncio.run(on_loop()),
            "astream_chat uvloop": lambda: uvloop.run(on_loop())}
    for name, run in runs.items():
        run()  # warm: connections, imports
        started, wall = time.process_time(), time.perf_counter()
        run()
        cpu = time.process_time() - started
        print(f"{name:24} {cpu / (streams * chunks) * 1e6:6.1f} us CPU per chunk "
              f"({streams} x {chunks} chunks, {time.perf_counter() - wall:.1f} s wall)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--every-ms", type=float, default=1.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.chunks, args.every_ms / 1000))
        return
    command = [sys.executable, __file__, "--serve", "--chunks", str(args.chunks), "--every-ms", str(args.every_ms)]
    upstream = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        measure(int(upstream.stdout.readline()), args.streams, args.chunks)
    finally:
        upstream.kill()
        upstream.wait()


if __name__ == "__main__":
    main()
