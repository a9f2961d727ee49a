"""Access control: the optional password (plain or hashed) with a lockout, and Streamlit's OIDC login."""

from __future__ import annotations

from pathlib import Path

import pytest
import respx
from streamlit.testing.v1 import AppTest

from console.auth import make_pbkdf2_hash
from tests.console.apptools import APP, lmstudio_down

UNLOCK = "FormSubmitter:console_sign_in-Unlock"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "not-a-real-secret",
        "client_id": "console", "client_secret": "not-a-real-secret",
        "server_metadata_url": "https://login.example.com/.well-known/openid-configuration"}


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=10).run()


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def try_password(at: AppTest, password: str) -> AppTest:
    at.text_input(key="console_password").set_value(password)
    return at.button(key=UNLOCK).click().run()


def test_password_hides_every_page_until_it_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "letmein")
    at = app()
    assert not at.exception
    assert titles(at) == ["🔒 Operator console"] and not at.sidebar.markdown
    with pytest.raises(ValueError):
        at.switch_page("app_pages/keys.py")  # not even registered while locked
    try_password(at, "wrong")
    assert at.error[0].value == "Wrong password; 4 more attempts before a 60 s lock."
    try_password(at, "letmein")
    assert not at.exception and titles(at) == ["🏠 Overview"]
    at.switch_page("app_pages/keys.py").run()
    assert titles(at) == ["🔑 API keys"]
    at.button(key="lock_console").click().run()
    assert titles(at) == ["🔒 Operator console"]


def test_a_password_set_only_in_dotenv_locks_the_first_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "")  # registers an undo, so what .env loads is removed afterwards
    monkeypatch.delenv("CONSOLE_PASSWORD")
    (tmp_path / ".env").write_text("CONSOLE_PASSWORD=from-dotenv\n")  # tests run in tmp_path
    at = app()
    assert not at.exception
    assert titles(at) == ["🔒 Operator console"]
    try_password(at, "from-dotenv")
    assert titles(at) == ["🏠 Overview"]


def test_five_wrong_passwords_lock_sign_in_for_every_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "letmein")
    at = app()
    for _ in range(5):
        try_password(at, "guess")
    assert at.error[0].value == "Wrong password; sign-in is locked for 60 s."
    try_password(at, "letmein")
    assert at.error[0].value.startswith("Too many wrong passwords; try again in ")
    assert titles(at) == ["🔒 Operator console"]
    other = try_password(app(), "letmein")  # a new browser session does not reset the count
    assert other.error[0].value.startswith("Too many wrong passwords") and titles(other) == ["🔒 Operator console"]


def test_a_pbkdf2_hash_unlocks_with_the_password_it_was_made_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD_HASH", make_pbkdf2_hash("s3cret", iterations=1000))
    at = try_password(app(), "not it")
    assert titles(at) == ["🔒 Operator console"]
    try_password(at, "s3cret")
    assert not at.exception and titles(at) == ["🏠 Overview"]


def test_a_malformed_hash_fails_closed_and_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD_HASH", "md5:0123")
    at = app()
    assert not at.exception
    assert titles(at) == ["🔒 Operator console"] and not at.text_input
    assert "python -m console.auth" in at.error[0].value


def test_no_password_means_the_console_opens_directly() -> None:
    at = app()
    assert not at.exception and titles(at) == ["🏠 Overview"]
    assert "lock_console" not in [b.key for b in at.button]


def test_no_pages_folder_beside_the_router() -> None:
    # Streamlit runs files in a pages/ folder without the router (so without this gate) until
    # st.navigation first runs in the process; the screens live in app_pages/ for that reason.
    assert not (APP.parent / "pages").exists()
    assert (APP.parent / "app_pages" / "keys.py").is_file()


def test_oidc_shows_the_login_prompt_when_auth_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "ignored-when-oidc-is-on")
    at = AppTest.from_file(APP, default_timeout=10)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert titles(at) == ["🔒 Operator console"]
    assert at.button(key="oidc_login").label == "Log in"
    assert not at.text_input  # OIDC replaces the password form


def test_oidc_user_who_is_logged_in_sees_the_console() -> None:
    at = AppTest.from_file(APP, default_timeout=10)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "ops@example.com"}
    at.run()
    assert not at.exception and titles(at) == ["🏠 Overview"]
    assert "Signed in as ops@example.com" in [c.value for c in at.sidebar.caption]
    assert at.button(key="oidc_logout").label == "Log out"
