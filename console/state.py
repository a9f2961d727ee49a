"""Streamlit glue shared by the pages: the orchestrator behind the gate, metric queries, flash messages, the sidebar.

The one orchestrator per process lives in console/shared.py, out of reach of Streamlit's clear-cache message.
The metric queries are an st.cache_data: a client that clears it only makes the next render query again.
"""

from __future__ import annotations

import math
import time
from typing import Any

import streamlit as st

from orchestrator_core.errors import ConfigurationError, DatabaseError, SecretKeyError
from orchestrator_core.orchestrator import Orchestrator

from . import gate, shared, views

_FLASH = "_flash"
METRICS_TTL_S = 30.0
FLUSH_WAIT_S = 1.0  # at most this long for the newest rows before a chart reads
_STARTUP_FIXES = {
    DatabaseError: "Fix DATABASE_URL (or the folder and file it points at) in the environment or .env, then reload.",
    SecretKeyError: "Set ORCHESTRATOR_SECRET_KEY to the secret the keys were saved with, or restore data/secret.key; "
                    "then reload.",
}


def follow(key: str, stored: Any) -> None:
    """A keyed edit field shows the stored value unless its user typed another: a change made elsewhere (another
    tab, the CLI, the API) reaches the field, instead of staying in it to be saved back over that change."""
    ss = st.session_state
    if key not in ss or ss[key] == ss.get(f"{key}__shown"):
        ss[key] = stored
    ss[f"{key}__shown"] = stored


def changed(key: str) -> Any:
    """The field's value when its user changed it from what it showed (see follow), else None: nothing to save."""
    value = st.session_state.get(key)
    return None if value == st.session_state.get(f"{key}__shown") else value


def startup_error() -> ConfigurationError | None:
    """Build the orchestrator; the configuration error that stops it, if any (not kept, so a fix is seen)."""
    try:
        shared.orchestrator()
    except ConfigurationError as exc:
        return exc
    return None


def render_startup_error(exc: ConfigurationError) -> None:
    """A page that says what is wrong and what to change, instead of a traceback."""
    st.title("The console cannot start")
    st.error(views.plain(exc.message))
    fix = next((text for cls, text in _STARTUP_FIXES.items() if isinstance(exc, cls)), None)
    st.info(fix or "Fix the setting named above in the environment or .env, then reload this page.")
    st.caption("Every setting is listed with its default in .env.example.")


def orchestrator() -> Orchestrator:
    """The process's orchestrator for a page; stops the page if the gate has not been passed (defence in depth)."""
    if not gate.allowed():
        st.stop()
    return shared.orchestrator()


# -- metric queries: cached briefly, so reruns and auto-refresh do not repeat a GROUP BY over every row -----
@st.cache_data(ttl=METRICS_TTL_S, max_entries=128, show_spinner="Aggregating call metrics…")
def _metric(name: str, database: str, args: tuple[Any, ...]) -> Any:
    # database is only part of the cache key: two databases never share an entry.
    return shared.orchestrator().metric_query(name, *args)


def metric(orch: Orchestrator, name: str, *args: Any) -> Any:
    """metrics.<name>(db, *args), shared by every session for METRICS_TTL_S; newest rows flushed first.

    While the database is busy (another process holds the write lock) the writer cannot flush, so the
    page reads what is stored instead of waiting for every chart.
    """
    orch.flush_metrics(FLUSH_WAIT_S)
    return _metric(name, orch.database_name, args)


def clear_metric_cache() -> None:
    _metric.clear()
    _spend.clear()


@st.cache_data(ttl=METRICS_TTL_S, max_entries=128, show_spinner="Summing spend…")
def _spend(name: str, database: str, args: tuple[Any, ...]) -> Any:
    return shared.orchestrator().spend_query(name, *args)


def spend(orch: Orchestrator, name: str, *args: Any) -> Any:
    """store.spend.<name>(db, *args), cached and flushed like metric()."""
    orch.flush_metrics(FLUSH_WAIT_S)
    return _spend(name, orch.database_name, args)


def minute_now() -> float:
    """Now, rounded up to the minute: time windows built on it repeat for a minute, so cached queries hit."""
    return math.ceil(time.time() / 60.0) * 60.0


# -- flash messages: feedback that survives the rerun a callback triggers ------------------------
def flash(kind: str, text: str) -> None:
    """Queue a message ("success" | "error" | "info" | "warning") for the next render of the page."""
    st.session_state.setdefault(_FLASH, []).append((kind, text))


def show_flash() -> None:
    """Render and forget queued messages, once each: a banner, not also a toast; they quote hosts, so plain text."""
    show_messages(take_flash())


def take_flash() -> list[tuple[str, str]]:
    """The queued messages, forgotten here (for a panel that shows them across its own reruns)."""
    messages: list[tuple[str, str]] = st.session_state.pop(_FLASH, [])
    return messages


def show_messages(messages: list[tuple[str, str]]) -> None:
    for kind, text in messages:
        getattr(st, kind)(views.plain(text))


def session_list(name: str) -> list[Any]:
    """A list kept in session state across reruns (the conversation, compare results)."""
    value: list[Any] = st.session_state.setdefault(name, [])
    return value


# -- the frame --------------------------------------------------------------------------------------
def sidebar(orch: Orchestrator) -> None:
    """Host reachability and ready models, from the cached status (one cheap request per host at most)."""
    hosts = orch.hosts()
    statuses = orch.statuses()
    seen = views.seen_up(orch.models())
    # A host never seen up is folded into one grey line: red for a host the operator does not run misleads.
    never = [h for h in hosts if not h.reachable and h.provider not in seen]
    with st.sidebar:
        st.caption("Local hosts")
        for host in hosts:
            if host not in never or len(never) == len(hosts):
                st.markdown(views.host_line(host, host.provider in seen),
                            help=views.plain(f"{host.base_url} — {host.detail}"))
        if never and len(never) < len(hosts):
            st.markdown("⚪ not running: " + ", ".join(h.display_name for h in never),
                        help=views.plain(views.probe_hint(hosts, seen) or ""))
        if not hosts:
            st.markdown("No local host configured (LOCAL_HOSTS is empty).")
        st.caption("Models")
        st.markdown(f"**{views.ready_count(statuses)}** of {len(statuses)} ready")
