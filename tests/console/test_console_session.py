"""The session cookie's token, grants and middleware, without a browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.console_session import SessionCookieMiddleware
from console import session
from console.auth import PasswordCheck, password_check_from_env
from orchestrator_core.config import Settings

PASSWORD = "the operator's password"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    values = {"CONSOLE_PASSWORD": PASSWORD, "ORCHESTRATOR_SECRET_KEY": "a test passphrase, not a real one",
              "DATABASE_URL": f"sqlite:///{tmp_path / 'console.db'}"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _check(env: dict[str, str]) -> PasswordCheck:
    check = password_check_from_env(env)
    assert check is not None
    return check


def test_a_token_is_valid_for_its_lifetime_and_password_only(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    check = _check(env)
    assert session.valid(session.issue(check, settings), check, settings)
    old = time.time() - settings.session_lifetime_s - 120
    assert not session.valid(session.issue(check, settings, now=old), check, settings)
    other = _check({"CONSOLE_PASSWORD": "another password"})
    assert not session.valid(session.issue(other, settings), check, settings)
    assert not session.valid("ünicode", check, settings)


def test_a_grant_is_redeemed_once() -> None:
    grants = session.Grants()
    grant = grants.new()
    assert grants.redeem(grant)
    assert not grants.redeem(grant)
    assert not grants.redeem("guessed")


def test_an_expired_grant_is_refused() -> None:
    grants = session.Grants(ttl_s=0.0)
    assert not grants.redeem(grants.new())


async def _echo_marker(request: Request) -> PlainTextResponse:
    return PlainTextResponse(",".join(request.headers.getlist(session.MARKER)))


def _client(scheme: str = "http") -> TestClient:
    app = SessionCookieMiddleware(Starlette(routes=[Route("/", _echo_marker)]))
    return TestClient(app, base_url=f"{scheme}://console.test")


def test_the_middleware_sets_a_strict_http_only_cookie_for_a_grant(env: dict[str, str]) -> None:
    with _client() as client:
        answer = client.post(session.PATH, json={"grant": session.GRANTS.new()})
    assert answer.status_code == 204
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert session.valid(token, _check(env), Settings.from_env(env))


def test_the_cookie_is_secure_over_https(env: dict[str, str]) -> None:
    with _client("https") as client:
        answer = client.post(session.PATH, json={"grant": session.GRANTS.new()})
    assert "Secure" in answer.headers["set-cookie"]


def test_the_middleware_refuses_an_unknown_or_used_grant(env: dict[str, str]) -> None:
    grant = session.GRANTS.new()
    with _client() as client:
        first = client.post(session.PATH, json={"grant": grant})
        again = client.post(session.PATH, json={"grant": grant})
        guessed = client.post(session.PATH, json={"grant": "guessed"})
        junk = client.post(session.PATH, content=b"not json")
    assert first.status_code == 204
    assert [again.status_code, guessed.status_code, junk.status_code] == [403, 403, 403]
    assert "set-cookie" not in again.headers


def test_delete_clears_the_cookie(env: dict[str, str]) -> None:
    with _client() as client:
        answer = client.delete(session.PATH)
    assert answer.status_code == 204
    assert 'console_session=""' in answer.headers["set-cookie"] or "Max-Age=0" in answer.headers["set-cookie"]


def test_a_client_cannot_forge_the_marker(env: dict[str, str]) -> None:
    with _client() as client:
        answer = client.get("/", headers={session.MARKER: "forged"})
    assert answer.text == "1"
