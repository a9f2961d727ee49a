"""The console's session cookie, without Streamlit: a reload keeps a signed-in operator in for SESSION_LIFETIME_S.

Under `make run` (api/asgi.py puts api.console_session.SessionCookieMiddleware on the st.App):

1. The password form passes (under the sign-in limiter, as before); the script takes a single-use grant from
   ``GRANTS`` and renders a small script that POSTs it, in the body, to ``PATH``.
2. The middleware redeems the grant and answers with ``Set-Cookie: console_session=<token>`` (HttpOnly,
   SameSite=Strict, Path=/, Max-Age, Secure over https). No password or token ever appears in a URL.
3. A reload opens a new websocket; its handshake carries the cookie, and the gate checks it with ``valid()``.

The token is a Fernet token (the key store's secret: ORCHESTRATOR_SECRET_KEY or secret.key) of a fingerprint of
the configured password check. Fernet's timestamp gives the lifetime; a new password makes a new fingerprint, so
every earlier cookie is refused. A websocket served without the middleware (``streamlit run``) carries
no ``MARKER`` header, and the console keeps its sign-in for the browser tab only, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from cryptography.fernet import Fernet, InvalidToken

from orchestrator_core.config import Settings
from orchestrator_core.store.secret import load_fernet

from . import shared
from .auth import PasswordCheck

COOKIE = "console_session"
PATH = "/_console/session"
# Set by the middleware on every request it passes on (a client's own copy is dropped): the script may then
# hand out a grant, because someone will redeem it.
MARKER = "x-console-session-cookies"
GRANT_TTL_S = 60.0
_PURPOSE = b"orchestrator console session v1\0"


def fingerprint(check: PasswordCheck) -> bytes:
    """What a cookie proves: the password check it was issued under (changes with the password)."""
    material = b"\0".join((check.scheme.encode(), check.digest, check.salt, str(check.iterations).encode()))
    return hashlib.sha256(_PURPOSE + material).digest()


def _fernet(settings: Settings) -> Fernet:
    # secret.key lives beside the database; the limiter's connection knows where that is.
    return load_fernet(settings.secret_key, None if settings.secret_key else shared.limiter().db.dir)


def issue(check: PasswordCheck, settings: Settings, *, now: float | None = None) -> str:
    """A session token for a cookie, issued now (or at ``now``)."""
    issued = int(time.time() if now is None else now)
    return _fernet(settings).encrypt_at_time(fingerprint(check), issued).decode("ascii")


def valid(token: str, check: PasswordCheck, settings: Settings) -> bool:
    """True when token was issued by this console, under this password, less than SESSION_LIFETIME_S ago."""
    try:
        payload = _fernet(settings).decrypt(token.encode("ascii"), ttl=int(settings.session_lifetime_s))
    except (InvalidToken, UnicodeEncodeError):
        return False
    return hmac.compare_digest(payload, fingerprint(check))


class Grants:
    """Single-use, short-lived tickets from a signed-in script to the middleware that sets the cookie."""

    def __init__(self, ttl_s: float = GRANT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._open: dict[str, float] = {}

    def new(self) -> str:
        """A fresh grant; only a session that just passed the password asks for one."""
        grant = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._open = {g: until for g, until in self._open.items() if until > now}
            self._open[grant] = now + self.ttl_s
        return grant

    def redeem(self, grant: str) -> bool:
        """True once for a grant that new() made less than ttl_s ago."""
        with self._lock:
            until = self._open.pop(grant, None)
        return until is not None and until > time.monotonic()


GRANTS = Grants()  # one process: the script and the middleware of `make run` share it
