"""API fixtures: a fault server playing the upstreams, an orchestrator on a database copy, the API served by a
real uvicorn on a free 127.0.0.1 port (a thread of the test process), tokens of each scope."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_api
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, ModelRegistry
from tests.faults.fault_server import FaultServer, Reply, Seen
from tests.faults.wire import FAKE_KEYS, lmstudio_models, openai_answer, openai_stream, sse
from tests.helpers import settings

MODELS = {"custom:healthy": 10, "custom:dead": 20, "custom:limited": 30, "lmstudio:qwen": 40}
LMSTUDIO_STATUS = "/lmstudio/api/v1/models"
LMSTUDIO_LOAD = "/lmstudio/api/v1/models/load"
LMSTUDIO_UNLOAD = "/lmstudio/api/v1/models/unload"
CUSTOM_CHAT = "/custom/v1/chat/completions"
LMSTUDIO_CHAT = "/lmstudio/v1/chat/completions"


@dataclass
class Upstream:
    """The loopback stand-ins: custom:<name> answers by name, LM Studio loads qwen in load_s seconds."""

    server: FaultServer
    loaded: bool = False
    load_s: float = 0.0
    load_reply: Reply | None = None
    pieces: list[str] = field(default_factory=lambda: ["fi", "ne"])
    piece_delay_s: float = 0.0

    def install(self) -> None:
        self.server.script(CUSTOM_CHAT, self.custom)
        self.server.script(LMSTUDIO_CHAT, self.lmstudio_chat)
        self.server.script(LMSTUDIO_STATUS, lambda _: Reply.json(200, lmstudio_models(loaded=self.loaded)))
        self.server.script(LMSTUDIO_LOAD, self.load)
        self.server.script(LMSTUDIO_UNLOAD, self.unload)

    def custom(self, seen: Seen) -> Reply:
        body = seen.json() or {}
        model = body.get("model")
        if model == "dead":
            return Reply.json(503, {"error": {"message": "upstream is down for maintenance"}})
        if model == "limited":
            return Reply.json(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"retry-after": "7"})
        if model == "breaks" and body.get("stream"):
            return Reply.stream(openai_stream(["half"], "breaks", done=False)[:1], then="cut")
        if model in ("refuses", "filtered"):
            return _refusing(str(model), stream=bool(body.get("stream")))
        return self._answer(body, str(model))

    def lmstudio_chat(self, seen: Seen) -> Reply:
        if not self.loaded:
            return Reply.json(400, {"error": "No models loaded. Please load a model first."})
        return self._answer(seen.json() or {}, "qwen")

    def _answer(self, body: dict[str, Any], model: str) -> Reply:
        if body.get("stream"):
            return dataclasses.replace(Reply.stream(openai_stream(self.pieces, model)), piece_delay_s=self.piece_delay_s)
        return Reply.json(200, openai_answer("".join(self.pieces), model))

    def load(self, _: Seen) -> Reply:
        if self.load_reply is not None:
            return self.load_reply
        deadline = time.monotonic() + self.load_s
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            time.sleep(0.01)
        self.loaded = True
        return Reply.json(200, {"type": "llm", "instance_id": "qwen", "status": "loaded"})

    def unload(self, _: Seen) -> Reply:
        self.loaded = False
        return Reply.json(200, {"instance_id": "qwen"})


REFUSAL = "I can't help with that."


def _refusing(model: str, *, stream: bool) -> Reply:
    """custom:refuses declines outright (message.refusal); custom:filtered stops after "half" (content_filter)."""
    refuses = model == "refuses"
    if not stream:
        message = {"role": "assistant", "content": None, "refusal": REFUSAL} if refuses else {
            "role": "assistant", "content": "half"}
        return Reply.json(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [
            {"index": 0, "message": message, "finish_reason": "stop" if refuses else "content_filter"}]})
    delta = {"refusal": REFUSAL} if refuses else {"content": "half"}
    return Reply.stream(sse({"model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                            {"model": model, "choices": [{"index": 0, "delta": {},
                                                          "finish_reason": "stop" if refuses else "content_filter"}]},
                            "[DONE]"))


@pytest.fixture(scope="session")
def api_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with only the test models active (the seeds would be fallback candidates)."""
    path = tmp_path_factory.mktemp("api-template") / "api.db"
    db = Database.open(f"sqlite:///{path}")
    registry = ModelRegistry(db)
    for entry in registry.list():
        registry.set_active(entry.model_id, False)
    for model_id, priority in MODELS.items():
        registry.add(model_id, priority=priority)
    db.dispose()
    return path


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    srv = FaultServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def upstream(fault_server: FaultServer) -> Upstream:
    up = Upstream(fault_server)
    up.install()
    return up


def api_settings(db_url: str, server_url: str, **overrides: Any) -> Any:
    urls = {"custom": f"{server_url}/custom/v1", "lmstudio": f"{server_url}/lmstudio",
            "openai": f"{server_url}/openai/v1"}
    options: dict[str, Any] = {"base_urls": urls, "env_keys": dict(FAKE_KEYS), "local_hosts": ("lmstudio",),
                               "stream_keepalive_s": 30.0, "load_timeout_s": 5.0, "poll_interval_s": 0.02,
                               "status_cache_ttl_s": 0.0, "max_fallback_hops": 3}
    options.update(overrides)
    return settings(db_url, **options)


@pytest.fixture
def make_orch(api_template: Path, tmp_path: Path, fault_server: FaultServer) -> Iterator[Callable[..., Orchestrator]]:
    built: list[Orchestrator] = []

    def make(**overrides: Any) -> Orchestrator:
        path = tmp_path / f"api-{len(built)}.db"
        shutil.copyfile(api_template, path)
        orch = Orchestrator.from_settings(api_settings(f"sqlite:///{path}", fault_server.url, **overrides))
        built.append(orch)
        return orch

    yield make
    for orch in built:
        orch.close()


@pytest.fixture
def orch(make_orch: Callable[..., Orchestrator], upstream: Upstream) -> Orchestrator:
    return make_orch()


class LiveServer:
    """uvicorn serving an app on a free 127.0.0.1 port, in a thread; real sockets, real HTTP."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)
        self.url = ""

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def live(orch: Orchestrator) -> Iterator[LiveServer]:
    server = LiveServer(create_api(lambda: orch, close=None)).start()
    yield server
    server.stop()


Served = tuple[LiveServer, Orchestrator, str]


@pytest.fixture
def serve(make_orch: Callable[..., Orchestrator], upstream: Upstream) -> Iterator[Callable[..., Served]]:
    """Another orchestrator (settings overridden) behind its own live server, with a chat token."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> Served:
        orch = make_orch(**overrides)
        server = LiveServer(create_api(lambda: orch, close=None)).start()
        servers.append(server)
        return server, orch, orch.tokens.create("served", "chat").token

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def chat_token(orch: Orchestrator) -> str:
    return orch.tokens.create("chat-client", "chat").token


@pytest.fixture
def admin_token(orch: Orchestrator) -> str:
    return orch.tokens.create("admin-client", "admin").token


@pytest.fixture
def admin(live: LiveServer, admin_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=10) as client:
        yield client


@pytest.fixture
def chat_client(live: LiveServer, chat_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {chat_token}"}, timeout=10) as client:
        yield client
