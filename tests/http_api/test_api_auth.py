"""Who may call the API: tokens of two scopes, stored only as a hash, refused when missing, wrong or revoked,
failed checks rate-limited per address; the CLI creates, lists and revokes them."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from sqlalchemy import select

from api.auth import FailureLimiter
from orchestrator_core.cli import main
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.tables import GatewayToken
from tests.http_api.conftest import LiveServer

ADMIN_ONLY = [("post", "/api/models/lmstudio:qwen/load"), ("post", "/api/models/lmstudio:qwen/unload"),
              ("post", "/api/failures/reset"), ("get", "/metrics")]
CHAT_ROUTES = [("get", "/v1/models"), ("get", "/api/models"), ("get", "/api/failures"), ("get", "/api/hosts"),
               ("get", "/api/models/custom:healthy/status"), ("get", "/api/models/custom:healthy/alternative")]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY + CHAT_ROUTES + [("post", "/v1/chat/completions")])
def test_every_route_but_health_needs_a_token_and_says_how_to_make_one(live: LiveServer, method: str,
                                                                      path: str) -> None:
    answer = httpx.request(method, f"{live.url}{path}")
    assert answer.status_code == 401
    assert "tokens create NAME" in json.dumps(answer.json())


def test_a_wrong_and_a_revoked_token_are_401(live: LiveServer, orch: Orchestrator) -> None:
    new = orch.tokens.create("laptop", "chat")
    assert httpx.get(f"{live.url}/v1/models", headers=bearer(new.token)).status_code == 200
    assert httpx.get(f"{live.url}/v1/models", headers=bearer(new.token[:-1] + "x")).status_code == 401
    orch.tokens.revoke("laptop")
    revoked = httpx.get(f"{live.url}/v1/models", headers=bearer(new.token))
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_a_chat_token_may_not_load_unload_reset_or_read_metrics(live: LiveServer, chat_token: str, method: str,
                                                                 path: str) -> None:
    answer = httpx.request(method, f"{live.url}{path}", headers=bearer(chat_token))
    assert answer.status_code == 403
    assert "admin" in answer.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path"), CHAT_ROUTES)
def test_a_chat_token_may_read_and_chat(live: LiveServer, chat_token: str, method: str, path: str) -> None:
    assert httpx.request(method, f"{live.url}{path}", headers=bearer(chat_token)).status_code == 200


def test_an_admin_token_may_do_everything(live: LiveServer, admin_token: str) -> None:
    assert httpx.post(f"{live.url}/api/failures/reset", headers=bearer(admin_token)).status_code == 200
    assert httpx.get(f"{live.url}/metrics", headers=bearer(admin_token)).status_code == 200


def test_failed_token_checks_are_rate_limited_per_address(live: LiveServer, chat_token: str) -> None:
    for _ in range(10):
        assert httpx.get(f"{live.url}/v1/models", headers=bearer("orch_guess")).status_code == 401
    locked = httpx.get(f"{live.url}/v1/models", headers=bearer(chat_token))  # even the right one, for a while
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert locked.json()["error"]["code"] == "too_many_token_failures"


def test_the_limiter_forgets_failures_after_its_window() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.locked_for("10.0.0.1") == 60 and limiter.locked_for("10.0.0.2") == 0
    now[0] = 61
    assert limiter.locked_for("10.0.0.1") == 0


def test_only_a_hash_is_stored_and_the_token_never_reaches_the_log(live: LiveServer, orch: Orchestrator,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    new = orch.tokens.create("ci", "admin")
    httpx.get(f"{live.url}/v1/models", headers=bearer(new.token))
    httpx.get(f"{live.url}/v1/models", headers=bearer(new.token + "wrong"))
    with orch.db.session() as s:
        row = s.scalars(select(GatewayToken)).one()
        stored = " ".join(str(v) for v in row.__dict__.values())
    secret_part = new.token.split("_", 2)[2]  # token_urlsafe may itself contain "_": split on the first two only
    assert new.token not in stored and secret_part not in stored
    assert new.token not in caplog.text


def test_last_used_is_recorded(live: LiveServer, orch: Orchestrator) -> None:
    new = orch.tokens.create("ci", "chat")
    assert orch.tokens.list_tokens()[0].last_used_at is None
    httpx.get(f"{live.url}/v1/models", headers=bearer(new.token))
    assert orch.tokens.list_tokens()[0].last_used_at is not None


def test_the_cli_creates_lists_and_revokes_tokens(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["--json", "tokens", "create", "ci", "--scope", "admin"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"name", "scope", "token"} and created["scope"] == "admin"
    assert main(["--json", "tokens", "list"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["scope"], listed["active"]) == ("ci", "admin", True)
    assert created["token"] not in json.dumps(listed)
    assert main(["tokens", "revoke", "ci"]) == 0
    assert "Revoked" in capsys.readouterr().out
    with Orchestrator.from_settings() as orch:
        assert orch.tokens.verify(created["token"]) is None


def test_the_cli_refuses_an_unknown_scope_and_a_duplicate_name(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["tokens", "create", "ci"]) == 0
    capsys.readouterr()
    assert main(["tokens", "create", "ci"]) == 1
    assert "already exists" in capsys.readouterr().err
