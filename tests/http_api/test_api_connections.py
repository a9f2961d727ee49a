"""/api/connections, /api/kinds, /api/groups on a real socket, and groups through the official openai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from orchestrator_core.orchestrator import Orchestrator
from tests.faults.fault_server import FaultServer, Reply
from tests.http_api.conftest import LiveServer, Upstream

KEY = "sk-second-PLAINTEXT-0123456789-wxyz"


@pytest.fixture
def second(fault_server: FaultServer, upstream: Upstream) -> str:
    """The base URL of a second OpenAI-compatible endpoint (the fault server's custom stand-in, with /models)."""
    fault_server.script("/custom/v1/models", lambda _: Reply.json(200, {"object": "list", "data": [
        {"id": "healthy", "object": "model"}, {"id": "dead", "object": "model"}]}))
    return f"{fault_server.url}/custom/v1"


@pytest.fixture
def sdk(live: LiveServer, chat_token: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=chat_token, max_retries=0, timeout=10)
    yield client
    client.close()


def _add(admin: httpx.Client, name: str, base_url: str, **extra: object) -> httpx.Response:
    return admin.post("/api/connections", json={"name": name, "kind": "openai-compatible", "base_url": base_url,
                                                **extra})


def test_connection_routes_need_an_admin_token(chat_client: httpx.Client) -> None:
    for method, path in (("GET", "/api/connections"), ("POST", "/api/connections"), ("GET", "/api/kinds"),
                         ("POST", "/api/connections/custom/test"), ("GET", "/api/connections/custom/keys"),
                         ("PUT", "/api/groups/default"), ("DELETE", "/api/groups/default")):
        answer = chat_client.request(method, path, json={})
        assert answer.status_code == 403, (method, path)


def test_kinds_carry_the_default_urls(admin: httpx.Client) -> None:
    kinds = {k["kind"]: k for k in admin.get("/api/kinds").json()}
    assert kinds["lmstudio"]["local"] is True and kinds["lmstudio"]["default_base_url"]
    assert kinds["openai-compatible"]["default_base_url"] is None
    assert kinds["openai"]["needs_key"] is True


def test_add_list_edit_and_remove_a_connection(admin: httpx.Client, second: str, orch: Orchestrator) -> None:
    added = _add(admin, "second", second, key=KEY)
    assert added.status_code == 201
    assert added.json() | {"options": {}} == {"name": "second", "kind": "openai-compatible", "base_url": second,
                                              "options": {}, "enabled": True, "key_mode": "ordered",
                                              "seeded": False, "key_count": 1}
    assert KEY not in added.text
    listed = {c["name"]: c for c in admin.get("/api/connections").json()["connections"]}
    assert listed["custom"]["seeded"] is True and "second" in listed
    edited = admin.patch("/api/connections/second", json={"enabled": False, "key_mode": "round-robin"})
    assert (edited.json()["enabled"], edited.json()["key_mode"], edited.json()["base_url"]) == \
        (False, "round-robin", second)
    assert orch.connection("second").enabled is False
    assert admin.delete("/api/connections/second").status_code == 204
    gone = admin.get("/api/connections/second")
    assert gone.status_code == 404
    assert "second" in gone.json()["error"]["message"]


def test_a_connection_that_does_not_fit_is_422_with_what_to_fix(admin: httpx.Client, second: str) -> None:
    answer = _add(admin, "Not A Slug", second, key=KEY)
    assert answer.status_code == 422
    assert "lower-case" in answer.json()["error"]["message"]
    assert KEY not in answer.text
    no_url = admin.post("/api/connections", json={"name": "nourl", "kind": "openai-compatible"})
    assert no_url.status_code == 422 and "base URL" in no_url.json()["error"]["message"]


def test_test_reports_reachability_models_and_the_key(admin: httpx.Client, second: str) -> None:
    _add(admin, "second", second, key=KEY)
    answer = admin.post("/api/connections/second/test")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["reachable"], body["model_count"], body["key"]) == (True, 2, "ok")
    assert KEY not in answer.text
    assert admin.post("/api/connections/nowhere/test").status_code == 404


def test_keys_per_connection_are_masked_with_their_pool_state(admin: httpx.Client, second: str) -> None:
    _add(admin, "second", second)
    added = admin.post("/api/connections/second/keys", json={"key": KEY, "label": "team"})
    assert added.status_code == 201 and added.json()["masked"].endswith("wxyz")
    keys = admin.get("/api/connections/second/keys").json()["keys"]
    assert [(k["label"], k["connection"], k["state"]) for k in keys] == [("team", "second", "untested")]
    tested = admin.post("/api/connections/second/keys/test").json()["results"]
    assert [r["status"] for r in tested] == ["ok"]
    for answer in (added, admin.get("/api/connections/second/keys")):
        assert KEY not in answer.text and "PLAINTEXT" not in answer.text
    assert admin.get("/api/connections/nowhere/keys").status_code == 404


def test_groups_are_set_listed_and_removed(admin: httpx.Client, chat_client: httpx.Client) -> None:
    put = admin.put("/api/groups/default", json={"members": ["custom:dead", "custom:healthy"]})
    assert put.status_code == 200 and put.json() == {"name": "default", "members": ["custom:dead", "custom:healthy"]}
    assert chat_client.get("/api/groups").json() == {"groups": [put.json()]}
    bad = admin.put("/api/groups/default", json={"members": ["nowhere:model"]})
    assert bad.status_code == 404 and "nowhere" in bad.json()["error"]["message"]
    assert admin.delete("/api/groups/default").status_code == 204
    assert chat_client.get("/api/groups").json() == {"groups": []}
    assert admin.delete("/api/groups/default").status_code == 404


def test_the_sdk_lists_a_group_and_chats_through_it(admin: httpx.Client, sdk: openai.OpenAI) -> None:
    admin.put("/api/groups/default", json={"members": ["custom:healthy", "custom:dead"]})
    listed = {m.id: m for m in sdk.models.list()}
    assert "default" in listed and listed["default"].owned_by == "group"
    answer = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "fine"
    assert answer.model == "custom:healthy"


def test_an_answer_through_a_group_names_the_member_and_the_group(admin: httpx.Client, sdk: openai.OpenAI) -> None:
    admin.put("/api/groups/default", json={"members": ["custom:dead", "custom:healthy"]})
    raw = sdk.chat.completions.with_raw_response.create(model="default", messages=[{"role": "user", "content": "hi"}])
    answer = raw.parse()
    assert answer.model == "custom:healthy"
    assert raw.headers["x-orchestrator-model"] == "custom:healthy" and raw.headers["x-orchestrator-group"] == "default"
    assert raw.headers["x-orchestrator-fallback-from"] == "custom:dead" and raw.headers["x-orchestrator-attempts"] == "2"


def test_url_credentials_are_masked_in_answers_and_a_patch_sending_them_back_keeps_them(
        admin: httpx.Client, orch: Orchestrator) -> None:
    url = "https://bob:hunter2-secret@vllm.example/v1"
    added = _add(admin, "vllm", url)
    listed = admin.get("/api/connections").text
    patched = admin.patch("/api/connections/vllm", json={"base_url": added.json()["base_url"]})

    assert added.status_code == 201 and patched.status_code == 200
    assert added.json()["base_url"] == patched.json()["base_url"] == "https://***@vllm.example/v1"
    assert not [t for t in (added.text, listed, patched.text) if "hunter2-secret" in t]
    assert orch.connection("vllm").base_url == url
