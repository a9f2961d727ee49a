"""A minimal HTTP/1.1 keep-alive server for the benchmarks, run as its own process (it must not share the GIL).

    python bench/loopback_server.py   # prints the port, then serves until killed

POST .../chat/completions answers one OpenAI chat completion; GET /api/v1/models an LM Studio model list;
GET /hits the number of requests per path so far (JSON).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}).encode()
MODELS = json.dumps({"models": [
    {"type": "llm", "key": f"m{i}", "loaded_instances": [{"id": f"m{i}"}] if i % 2 else []} for i in range(50)
]}).encode()
HITS: Counter[str] = Counter()


def answer(method: str, path: str) -> tuple[int, bytes]:
    if path == "/hits":
        return 200, json.dumps(HITS).encode()
    HITS[path] += 1
    if method == "POST" and path.endswith("/chat/completions"):
        return 200, ANSWER
    if method == "GET" and path == "/api/v1/models":
        return 200, MODELS
    return 404, b'{"error": {"message": "no such route"}}'


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = next((int(line.partition(":")[2]) for line in head[1:]
                           if line.partition(":")[0].strip().lower() == "content-length"), 0)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            self.buffer = self.buffer[end + 4 + length:]
            method, path, _ = head[0].split(" ", 2)
            status, body = answer(method, path)
            self.transport.write(b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                                 % (status, len(body)) + body)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
