"""The one Orchestrator of a process, shared by the console's pages and the HTTP API.

    from orchestrator_core import shared
    orch = shared.orchestrator()      # built on first use from Settings.from_env() (and .env)
    shared.close()                    # at process exit (the ASGI lifespan, tests)

It lives in a module, not in a Streamlit cache: nothing a browser client sends can close or rebuild it.
A configuration error is raised and not remembered, so the next call after a fix builds it.
"""

from __future__ import annotations

import threading

from .config import Settings
from .orchestrator import Orchestrator

_lock = threading.Lock()
_instance: Orchestrator | None = None


def orchestrator() -> Orchestrator:
    """The orchestrator of this process, built once (thread-safe)."""
    instance = _instance
    if instance is not None:
        return instance
    return _build()


def _build() -> Orchestrator:
    global _instance
    with _lock:
        if _instance is None:
            _instance = Orchestrator.from_settings(Settings.from_env())
        return _instance


def install(orch: Orchestrator) -> None:
    """Use orch as the process's orchestrator (tests, an embedding program); the previous one is closed."""
    global _instance
    with _lock:
        previous, _instance = _instance, orch
    if previous is not None and previous is not orch:
        previous.close()


def close() -> None:
    """Flush metrics and release connections of the shared orchestrator, if one was built."""
    global _instance
    with _lock:
        instance, _instance = _instance, None
    if instance is not None:
        instance.close()
