"""Confirmation dialogs for destructive actions: a button asks (``ask``), the page opens the dialog while the
action is pending, and the dialog's two buttons act or cancel (``buttons``). One pattern for every delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from orchestrator_core.errors import OrchestratorError

from . import state


def ask(slot: str, value: Any) -> None:
    """Mark value as waiting for confirmation in this slot (a button's on_click)."""
    st.session_state[slot] = value


def cancel(slot: str) -> None:
    st.session_state.pop(slot, None)


def pending(slot: str) -> Any:
    return st.session_state.get(slot)


def buttons(action: str, act: Callable[[], object], done: str, on_close: Callable[[], None], *,
            key: str | None = None) -> None:
    """The two buttons of a confirmation dialog: `action` runs act() and flashes done (or the error), Cancel closes.
    The buttons' keys are confirm_<key> and cancel_<key> (key defaults to the action in lower case)."""
    key = key or action.lower()
    cols = st.columns(2)
    if cols[0].button(action, type="primary", key=f"confirm_{key}"):
        on_close()
        try:
            act()
        except OrchestratorError as exc:
            state.flash("error", exc.message)
        else:
            state.flash("success", done)
        st.rerun()
    if cols[1].button("Cancel", key=f"cancel_{key}"):
        on_close()
        st.rerun()
