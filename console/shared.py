"""What one process shares between its sessions: the orchestrator, and the sign-in limiter of the gate.

Deliberately not ``st.cache_resource``: any websocket client, signed in or not, can send Streamlit's
clear-cache message (``BackMsg.clear_cache``), and Streamlit 1.67 answers it
(``AppSession._handle_clear_cache_request``) with ``st.cache_data.clear()`` and ``st.cache_resource.clear()``
for every user, which calls each resource's ``on_release``. A cached orchestrator was closed under every
signed-in session (a running stream broke) and a cached limiter forgot its count. Module globals behind a
lock are out of every client's reach; only ``reset()``, which tests call, drops them.
"""

from __future__ import annotations

import threading

from orchestrator_core import shared as core_shared
from orchestrator_core.config import Settings
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, SignInLimiter

_lock = threading.Lock()
_limiter: SignInLimiter | None = None


def orchestrator() -> Orchestrator:
    """The orchestrator of this process (orchestrator_core.shared), the same one the HTTP API uses.

    A configuration error is raised and not kept, so the next call (a reload after a fix) tries again.
    """
    return core_shared.orchestrator()


def limiter() -> SignInLimiter:
    """The failed-sign-in counter, kept in the database so restarts, processes and clients all see one count.

    It opens its own connection to the database rather than the orchestrator's, so the gate works (and
    counts) even when the orchestrator cannot start, e.g. with a wrong ORCHESTRATOR_SECRET_KEY.
    """
    global _limiter
    with _lock:
        if _limiter is None:
            settings = Settings.from_env()
            _limiter = SignInLimiter(Database.open(settings.database_url),
                                     max_failures=settings.sign_in_max_failures,
                                     lockout_s=settings.sign_in_lockout_s)
        return _limiter


def reset() -> None:
    """Close and forget everything shared (tests only: no message from a client leads here)."""
    global _limiter
    with _lock:
        limit, _limiter = _limiter, None
    core_shared.close()
    if limit is not None:
        limit.db.dispose()
