"""Access control for every page: Streamlit's OIDC login when [auth] is configured, else an optional password.

The router asks ``allowed()`` before it registers the real pages; until it is True the only page is
``sign_in`` (registered under every page's URL, so a deep link such as /models opens that page once the gate is
passed), and no page script runs for a visitor who has not passed the gate. Under `make run` a session cookie
(console/session.py) keeps the operator signed in across reloads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import streamlit as st
from streamlit.errors import StreamlitAPIException

from orchestrator_core.config import Settings
from orchestrator_core.errors import ConfigurationError

from . import session, shared, views
from .auth import PasswordCheck, password_check_from_env, try_password

UNLOCKED = "console_unlocked"
LOCKED = "console_locked"  # Lock was pressed: the cookie this tab's websocket still carries no longer counts
_GRANT = "console_session_grant"  # set on sign-in, rendered once as the request that sets the cookie
_FORGET = "console_forget_session"  # set on Lock, rendered once as the request that clears the cookie
_UNAVAILABLE = "Sign-in is unavailable right now: the sign-in count cannot be kept. The server log says why."
log = logging.getLogger(__name__)


def auth_section() -> Mapping[str, object] | None:
    """The [auth] secrets section, or None; st.secrets raises when there is no secrets.toml at all."""
    try:
        section = st.secrets.get("auth")
    except (FileNotFoundError, StreamlitAPIException):
        return None
    return section if isinstance(section, Mapping) and section else None


def allowed() -> bool:
    """True when this session may see the console."""
    if auth_section() is not None:
        return bool(st.user.get("is_logged_in", False))
    try:
        check = password_check_from_env(os.environ)
    except ConfigurationError:
        return False  # fail closed: sign_in shows what to fix
    if check is None or st.session_state.get(UNLOCKED):
        return True
    if not st.session_state.get(LOCKED) and _cookie_valid(check):
        st.session_state[UNLOCKED] = True
        return True
    return False


def _cookie_valid(check: PasswordCheck) -> bool:
    token = st.context.cookies.get(session.COOKIE)
    if not token or not _cookies_served():
        return False
    try:
        return session.valid(token, check, Settings.from_env())
    except ConfigurationError as exc:
        log.error("The console's session cookie cannot be checked: %s", exc.message)
        return False


def _cookies_served() -> bool:
    """True when the session-cookie middleware is in front of this session (make run, not streamlit run)."""
    return st.context.headers.get(session.MARKER) == "1"


def sign_in_pages(pages: list[st.Page]) -> list[st.Page]:
    """The sign-in page, under the default URL and under every other page's URL (deep links survive the gate)."""
    return [st.Page(sign_in, title="Sign in", icon="🔒", default=True)] + [
        st.Page(sign_in, title="Sign in", icon="🔒", url_path=page.url_path) for page in pages if page.url_path
    ]


def sign_in() -> None:
    """The only page before the gate is passed: OIDC login, or the password form."""
    st.title("🔒 Operator console")
    section = auth_section()
    if section is not None:
        _oidc_login(section)
        return
    try:
        check = password_check_from_env(os.environ)
    except ConfigurationError as exc:
        st.error(views.plain(exc.message))
        return
    if check is not None:
        _password_form(check)


def _oidc_login(section: Mapping[str, object]) -> None:
    st.info("Sign in to use the console.")
    # [auth] with its own client_id is one provider; [auth.<name>] sections are named providers.
    named = [name for name, value in section.items() if isinstance(value, Mapping)]
    if "client_id" in section or not named:
        st.button("Log in", key="oidc_login", type="primary", on_click=st.login)
        return
    for name in named:
        st.button(f"Log in with {name}", key=f"oidc_login_{name}", on_click=st.login, args=(name,))


def _password_form(check: PasswordCheck) -> None:
    with st.form("console_sign_in", clear_on_submit=True):
        password = st.text_input("Password", type="password", key="console_password")
        submitted = st.form_submit_button("Unlock", type="primary")
    if not submitted:
        return
    try:
        problem = try_password(check, password, shared.limiter())
    except ConfigurationError as exc:
        # Fail closed: no count, no check. The reason (paths, a database URL) is for the operator's log only.
        log.error("The console's sign-in limiter is unavailable: %s (%s)", exc.message, exc.__cause__ or "")
        st.error(_UNAVAILABLE)
        return
    if problem is not None:
        st.error(problem)
        return
    st.session_state[UNLOCKED] = True
    st.session_state[LOCKED] = False
    if _cookies_served():
        st.session_state[_GRANT] = session.GRANTS.new()
    st.rerun()  # the same URL: the page this tab asked for, now the real one


def session_cookie() -> None:
    """Once after sign-in or Lock: the browser asks the middleware to set or clear the session cookie."""
    grant = st.session_state.pop(_GRANT, None)
    forget = st.session_state.pop(_FORGET, False)
    if grant is None and not forget:
        return
    # The grant goes in a POST body (never a URL) and is good for one use within a minute.
    request = (f'{{method: "POST", body: JSON.stringify({{grant: "{grant}"}}), '
               'headers: {"content-type": "application/json"}, credentials: "same-origin"}'
               if grant else '{method: "DELETE", credentials: "same-origin"}')
    st.html(f'<script>fetch("{session.PATH}", {request});</script>', unsafe_allow_javascript=True)


def account_controls() -> None:
    """Sidebar: who is signed in and how to leave."""
    if auth_section() is not None:
        name = st.user.get("email") or st.user.get("name") or "signed in"
        st.sidebar.caption(f"Signed in as {views.plain(str(name))}")  # the identity provider's text
        st.sidebar.button("Log out", key="oidc_logout", on_click=st.logout)
    elif st.session_state.get(UNLOCKED):
        st.sidebar.button("🔒 Lock console", key="lock_console", on_click=_lock)


def _lock() -> None:
    st.session_state[UNLOCKED] = False
    st.session_state[LOCKED] = True
    st.session_state[_FORGET] = _cookies_served()
