"""The management routes under /api on a real socket: every operation, a load that times out, a host that is down,
model ids with '/' and ':' (plain and percent-encoded), errors in the /api shape with a status from the class."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from api.app import create_api
from orchestrator_core.errors import DatabaseError
from orchestrator_core.orchestrator import Orchestrator
from tests.faults.fault_server import FaultServer, Reply
from tests.http_api.conftest import LMSTUDIO_LOAD, LMSTUDIO_UNLOAD, LiveServer, Upstream

GGUF = "llamacpp:org/model-GGUF:Q4_K_M"


def test_health_needs_no_token_and_lists_only_reachability(live: LiveServer, upstream: Upstream) -> None:
    answer = httpx.get(f"{live.url}/api/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "hosts": [{"provider": "lmstudio", "reachable": True}]}


def test_health_is_503_when_the_database_cannot_be_reached() -> None:
    def broken() -> Orchestrator:
        raise DatabaseError("Could not connect to the database")

    server = LiveServer(create_api(broken, close=None)).start()
    try:
        answer = httpx.get(f"{server.url}/api/health")
    finally:
        server.stop()
    assert answer.status_code == 503 and answer.json()["database"] == "unreachable"


def test_models_lists_every_active_model_with_status(chat_client: httpx.Client, upstream: Upstream) -> None:
    upstream.loaded = True
    models = {m["model_id"]: m for m in chat_client.get("/api/models", params={"refresh": "true"}).json()["models"]}
    assert set(models) == {"custom:healthy", "custom:dead", "custom:limited", "lmstudio:qwen"}
    assert (models["lmstudio:qwen"]["state"], models["lmstudio:qwen"]["ready"]) == ("loaded", True)


@pytest.mark.parametrize("path", [GGUF, quote(GGUF, safe=""), "llamacpp:org%2Fmodel-GGUF%3AQ4_K_M"])
def test_model_ids_with_slashes_and_colons_route_to_the_model(chat_client: httpx.Client, path: str) -> None:
    answer = chat_client.get(f"/api/models/{path}/status")
    assert answer.status_code == 200
    assert answer.json()["model_id"] == GGUF
    assert answer.json()["state"] == "host_down"  # llamacpp is not in LOCAL_HOSTS here


def test_load_then_wait_answers_once_the_model_is_loaded(admin: httpx.Client, upstream: Upstream) -> None:
    upstream.load_s = 0.3
    started = admin.post("/api/models/lmstudio:qwen/load")
    assert started.status_code == 200 and started.json()["state"] in ("loading", "loaded")
    waited = admin.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 5})
    assert waited.status_code == 200 and waited.json()["state"] == "loaded"


def test_a_wait_that_times_out_is_504_with_the_reason(admin: httpx.Client, upstream: Upstream,
                                                       fault_server: FaultServer) -> None:
    fault_server.script(LMSTUDIO_LOAD, Reply.stall())
    admin.post("/api/models/lmstudio:qwen/load")
    answer = admin.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 0.3})
    assert answer.status_code == 504
    error = answer.json()["error"]
    assert error["type"] == "load_timeout" and error["model"] == "lmstudio:qwen"
    assert "did not finish loading" in error["message"]


def test_a_load_the_host_refuses_is_409_on_wait(admin: httpx.Client, upstream: Upstream) -> None:
    upstream.load_reply = Reply.json(400, {"error": {"message": "Error loading model: insufficient system resources",
                                                     "type": "model_load_failed"}})
    admin.post("/api/models/lmstudio:qwen/load")
    answer = admin.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 5})
    assert answer.status_code == 409, answer.text
    assert "insufficient system resources" in answer.json()["error"]["message"]


def test_load_on_a_host_that_is_down_is_503(make_orch: Callable[..., Orchestrator], upstream: Upstream) -> None:
    orch = make_orch(base_urls={"lmstudio": "http://127.0.0.1:9"})  # discard port: connection refused
    token = orch.tokens.create("a", "admin").token
    server = LiveServer(create_api(lambda: orch, close=None)).start()
    try:
        answer = httpx.post(f"{server.url}/api/models/lmstudio:qwen/load",
                            headers={"authorization": f"Bearer {token}"})
        hosts = httpx.get(f"{server.url}/api/hosts", headers={"authorization": f"Bearer {token}"}).json()["hosts"]
    finally:
        server.stop()
    assert answer.status_code == 503 and answer.json()["error"]["type"] == "unavailable"
    assert "Cannot reach lmstudio" in answer.json()["error"]["message"]
    assert [(h["provider"], h["reachable"]) for h in hosts] == [("lmstudio", False)]


def test_unload_unloads_through_the_host(admin: httpx.Client, upstream: Upstream, fault_server: FaultServer) -> None:
    upstream.loaded = True
    answer = admin.post("/api/models/lmstudio:qwen/unload")
    assert answer.status_code == 200 and answer.json()["state"] == "not_loaded"
    assert fault_server.requests_to(LMSTUDIO_UNLOAD)


def test_loading_a_hosted_model_is_a_400_saying_there_is_nothing_to_load(admin: httpx.Client) -> None:
    answer = admin.post("/api/models/custom:healthy/load")
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "unsupported"


def test_an_unknown_provider_is_404_and_a_bad_id_400(chat_client: httpx.Client) -> None:
    assert chat_client.get("/api/models/nosuch:model/status").status_code == 404
    bad = chat_client.get("/api/models/no-colon/status")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_model_id"


def test_alternative_names_the_fallback_and_the_ranking(chat_client: httpx.Client, upstream: Upstream) -> None:
    answer = chat_client.get("/api/models/custom:dead/alternative").json()
    assert answer["alternative"] == "custom:healthy"
    assert answer["ranked"][0] == "custom:healthy" and "custom:dead" not in answer["ranked"]


def test_failures_are_listed_and_reset_one_or_all(admin: httpx.Client, orch: Orchestrator) -> None:
    orch.failures.record("custom:dead", "unavailable", "down", 60)
    orch.failures.record("custom:limited", "rate_limit", "slow", 60)
    listed = admin.get("/api/failures").json()["failures"]
    assert {f["model_id"] for f in listed} == {"custom:dead", "custom:limited"} and all(f["active"] for f in listed)
    assert admin.post("/api/failures/reset", json={"model_id": "custom:dead"}).json() == {"cleared": 1}
    assert [f["model_id"] for f in admin.get("/api/failures").json()["failures"]] == ["custom:limited"]
    assert admin.post("/api/failures/reset").json() == {"cleared": 1}
    assert admin.get("/api/failures").json() == {"failures": []}


def test_hosts_lists_each_local_host(chat_client: httpx.Client, upstream: Upstream) -> None:
    [host] = chat_client.get("/api/hosts").json()["hosts"]
    assert (host["provider"], host["reachable"], host["models"]) == ("lmstudio", True, 1)


def test_a_body_that_does_not_fit_is_a_400_naming_the_field(admin: httpx.Client) -> None:
    answer = admin.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": -1})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_parameter" and "timeout_s" in answer.json()["error"]["message"]


def test_load_waits_beyond_a_quarter_of_the_threads_are_429_so_chat_calls_keep_theirs(
        serve: Callable[..., tuple[LiveServer, Orchestrator, str]], fault_server: FaultServer) -> None:
    server, orch, _ = serve(gateway_threads=4)  # one wait at a time
    admin_token = orch.tokens.create("waits", "admin").token
    fault_server.script(LMSTUDIO_LOAD, Reply.stall())
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=10) as api:
        api.post("/api/models/lmstudio:qwen/load")
        first: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: first.append(
            api.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 1.5})))
        waiting.start()
        time.sleep(0.5)  # the first wait holds its thread now

        refused = api.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 1.5})
        health = api.get("/api/models/lmstudio:qwen/status")
        waiting.join(10)

        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        error = refused.json()["error"]
        assert error["type"] == "too_many_waits" and "GET /api/models/{id}/status" in error["message"]
        assert health.status_code == 200  # the other routes keep their threads
        assert first[0].status_code == 504  # the first wait ran its course
        assert api.post("/api/models/lmstudio:qwen/wait", json={"timeout_s": 0.2}).status_code == 504  # slot free
