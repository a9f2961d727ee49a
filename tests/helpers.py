"""Wire fixtures shared by the orchestrator, manager, CLI and console tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import respx

from orchestrator_core.config import Settings

LMSTUDIO = "http://127.0.0.1:1234"
OLLAMA = "http://127.0.0.1:11434"
LLAMACPP = "http://127.0.0.1:8080"
OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com"
GOOGLE = "https://generativelanguage.googleapis.com"
MISTRAL = "https://api.mistral.ai/v1"

FAKE_OPENAI_KEY = "sk-test-PLANTED-openai-0123456789abcdef"


def settings(db_url: str, **overrides: Any) -> Settings:
    """Fast, deterministic settings for tests: tiny poll interval, short load timeout."""
    base = Settings(
        database_url=db_url,
        env_keys={},
        poll_interval_s=0.01,
        load_timeout_s=2.0,
        status_cache_ttl_s=5.0,
        failure_cooldown_s=60.0,
        connect_timeout_s=0.5,
        status_timeout_s=0.5,
        read_timeout_s=5.0,
    )
    return base.with_overrides(**overrides)


def lmstudio_models(loaded: dict[str, bool]) -> dict[str, Any]:
    """GET /api/v1/models body for LM Studio 0.4+."""
    return {
        "models": [
            {
                "type": "llm",
                "key": name,
                "display_name": name,
                "loaded_instances": [{"id": name, "config": {"context_length": 4096}}] if is_loaded else [],
                "max_context_length": 32768,
            }
            for name, is_loaded in loaded.items()
        ]
    }


def openai_answer(text: str = "Hello", model: str = "gpt-4.1-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }


def openai_sse(pieces: list[str], model: str = "gpt-4.1-mini", *, done: bool = True) -> bytes:
    chunks = [
        {"model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    chunks.append({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"model": model, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces)}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    if done:
        body += "data: [DONE]\n\n"
    return body.encode()


def sse_response(*payloads: object, newline: str = "\n") -> httpx.Response:
    """An event-stream response: dicts become JSON data events, strings are sent verbatim as data."""
    lines = [f"data: {p if isinstance(p, str) else json.dumps(p)}{newline}{newline}" for p in payloads]
    return httpx.Response(200, text="".join(lines), headers={"content-type": "text/event-stream"})


def other_hosts_down(router: respx.MockRouter) -> None:
    """Ollama and llama-server are not running (connection refused)."""
    router.route(host="127.0.0.1", port=11434).mock(side_effect=httpx.ConnectError("refused"))
    router.route(host="127.0.0.1", port=8080).mock(side_effect=httpx.ConnectError("refused"))


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """End a server the test started: SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
