"""Models: a live status table with actions and a detail panel, and the registry. The charts are on Usage."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from console import confirm, groups_view, state, views
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.types import ModelState, ModelStatus

INTERVALS: dict[str, float | None] = {"Off": None, "2 s": 2.0, "5 s": 5.0, "10 s": 10.0, "30 s": 30.0}
STATS_WINDOW_S = 86400.0
WAIT_FOR = "models_wait_for"  # the model whose load the next full run waits for
NOTICES = "models_notices"  # the last action's messages: shown through the panel's auto-refreshes

orch = state.orchestrator()
st.title("🧠 Models")
state.show_flash()
st.session_state.pop(NOTICES, None)  # a full run (a page visit, a registry change) ends the last action's messages


# -- live status and actions ---------------------------------------------------------------------------
# Widths in pixels: the nine columns fit beside the sidebar of a 1400 px window (~900 px); the long texts are in
# the detail panel.
TABLE_COLUMNS = {
    "Model": st.column_config.TextColumn(width=190, pinned=True),
    "State": st.column_config.TextColumn(width=130),
    "Calls": st.column_config.NumberColumn(width=64, format="%d"),
    "Success": st.column_config.TextColumn(width=66),
    "p50 ms": st.column_config.TextColumn(width=64),
    "p95 ms": st.column_config.TextColumn(width=64),
    "Last error": st.column_config.TextColumn(width=160),
    "Cooldown until": st.column_config.TextColumn("Cooling until", width=84),
    "Priority": st.column_config.NumberColumn(width=60),
}

controls = st.columns([1, 1, 3], vertical_alignment="bottom")
interval = controls[0].selectbox("Auto-refresh", list(INTERVALS), index=2, key="models_interval")
if controls[1].button("Refresh now", key="models_refresh_now", help="Ask every local host again now"):
    orch.statuses(force=True)
    state.clear_metric_cache()
controls[2].page_link("app_pages/usage.py", label="Latency, errors and fallbacks over time: Usage", icon="📈")


def run_action(action: str, model_id: str | None) -> None:
    """Quick actions run as callbacks, so the table rendered next already shows their effect."""
    try:
        if action == "load" and model_id:
            orch.load(model_id)
            state.flash("success", f"Loading {model_id} started; the table shows 🔄 until it is loaded.")
        elif action == "unload" and model_id:
            status = orch.unload(model_id)
            if status.state is ModelState.UNLOADING:
                state.flash("warning", f"{model_id}: unload requested; {status.detail}. "
                            "The table shows ⏏️ until it is gone.")
            else:
                state.flash("success", f"{model_id} unloaded.")
        elif action == "reset":
            cleared = orch.reset_cooldowns(model_id)
            state.flash("success", f"{model_id}: failure cleared." if cleared else f"{model_id} had no failure.")
        elif action == "reset_all":
            state.flash("success", f"Cleared {orch.reset_cooldowns()} failure(s); every model may be tried again.")
    except OrchestratorError as exc:
        state.flash("error", exc.message)


def cancel_wait(model_id: str) -> None:
    """Cancel: this click's rerun ends the wait; the host was already told to load and finishes on its own."""
    state.flash("info", f"Stopped waiting for {model_id}. The host keeps loading it; unload it to free the memory.")


def load_and_wait(model_id: str) -> None:
    st.button("Cancel the wait", key="action_cancel_wait", on_click=cancel_wait, args=(model_id,))
    with st.status(views.load_label(model_id, 0.0), expanded=True) as box:
        started = time.monotonic()
        try:
            orch.load(model_id)
            orch.wait_for_load(
                model_id, on_progress=lambda p: box.update(label=views.load_label(model_id, p.elapsed_s, p.detail))
            )
        except OrchestratorError as exc:
            box.update(label=views.plain(f"Loading {model_id} failed"), state="error")
            st.error(views.plain(exc.message))
            return
        box.update(label=views.plain(f"{model_id} is loaded ({time.monotonic() - started:.1f} s)"), state="complete")


def detail_panel(chosen: str, status: ModelStatus | None, stats: dict[str, Any]) -> None:
    """What the compact table leaves out, for the picked model."""
    entry = next((e for e in orch.models() if e.model_id == chosen), None)
    if entry is None:
        return
    with st.expander(f"Detail: {views.plain(chosen)}"):
        for label, text in views.model_detail(status, entry, stats.get(chosen)):
            st.markdown(f"**{label}:** {views.plain(text)}")


def actions(statuses: dict[str, ModelStatus], stats: dict[str, Any]) -> None:
    """The picker with its status, the detail panel and the buttons; in the table's fragment, so they agree."""
    st.subheader("Actions")
    # Plain ids as entries, the status beside them (views.picker_status says why).
    chosen = st.selectbox("Model", views.grouped(statuses), key="action_model")
    st.caption(views.picker_status(statuses.get(chosen)))
    detail_panel(chosen, statuses.get(chosen), stats)
    local = statuses[chosen].local
    buttons = st.columns(5)
    buttons[0].button("Load", key="action_load", disabled=not local, on_click=run_action, args=("load", chosen),
                      help="Start loading in the background")
    buttons[1].button("Unload", key="action_unload", disabled=not local, on_click=run_action,
                      args=("unload", chosen))
    if buttons[2].button("Load and wait", key="action_load_wait", disabled=not local):
        # The wait runs in a full run below the fragment: an auto-refresh of the fragment would cut it short.
        st.session_state[WAIT_FOR] = chosen
        st.rerun(scope="app")
    buttons[3].button("Reset failure", key="action_reset", on_click=run_action, args=("reset", chosen))
    buttons[4].button("Reset all failures", key="action_reset_all", on_click=run_action, args=("reset_all", None))


@st.fragment(run_every=INTERVALS[interval])
def status_panel() -> None:
    """The table of every model and the actions: reruns on its own, and on every action, without the page."""
    # An action reran only this fragment, so its messages are shown here, and kept until the next action or
    # full run: the auto-refresh a few seconds later must not wipe them.
    fresh = state.take_flash()
    if fresh:
        st.session_state[NOTICES] = fresh
    state.show_messages(st.session_state.get(NOTICES, []))
    listed = orch.statuses()
    stats = state.metric(orch, "table_stats", state.minute_now() - STATS_WINDOW_S)
    rows = views.model_rows(listed, orch.models(), stats)
    if not rows:
        st.info("No model registered yet: start a local host, or add a hosted model below.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="models_table",
                 column_config=TABLE_COLUMNS)
    st.caption(f"Status checked {views.local_time(time.time())}; calls, success and latency over the last 24 hours.")
    statuses = {s.model_id: s for s in listed}
    if statuses:
        actions(statuses, stats)
    else:
        st.caption("Actions appear once a model is active.")


status_panel()
waiting = st.session_state.pop(WAIT_FOR, None)
if waiting:
    load_and_wait(waiting)


# -- registry ----------------------------------------------------------------------------------------
def add_model() -> None:
    model_id = st.session_state.get("new_model_id", "").strip()
    try:
        orch.add_model(model_id, display_name=st.session_state.get("new_model_name") or None,
                       priority=int(st.session_state.get("new_model_priority", 100)))
    except OrchestratorError as exc:
        state.flash("error", exc.message)  # the form keeps what was typed
        return
    st.session_state["new_model_id"] = ""
    st.session_state["new_model_name"] = ""
    state.flash("success", f"{model_id} added; pick it in the chat or give it a priority below.")


def save_entry(model_id: str) -> None:
    try:
        active, priority = state.changed(f"edit_active_{model_id}"), state.changed(f"edit_priority_{model_id}")
        orch.edit_model(model_id, active=None if active is None else bool(active),
                        priority=None if priority is None else int(priority))
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"{model_id} saved.")


REMOVE_MODEL = "pending_remove_model"


@st.dialog("Remove this model from the registry?", on_dismiss=lambda: confirm.cancel(REMOVE_MODEL))
def confirm_remove_entry(model_id: str) -> None:
    st.markdown(views.plain(f"{model_id} is no longer listed, offered in the pickers or used as a fallback (a call "
                            "that names it is still tried). Its call metrics stay; add it again at any time."))
    confirm.buttons("Remove", lambda: orch.remove_model(model_id), f"{model_id} removed from the registry.",
                    lambda: confirm.cancel(REMOVE_MODEL), key="remove_model")


st.subheader("Registry")
left, right = st.columns(2)
with left, st.form("add_model_form", clear_on_submit=False):
    st.markdown("**Add a hosted model**")
    st.text_input("Model id", key="new_model_id", placeholder="openai:gpt-4o-mini",
                  help="provider:model — local models are discovered from the hosts by themselves")
    st.text_input("Display name (optional)", key="new_model_name")
    st.number_input("Priority (lower is tried first)", value=100, step=10, key="new_model_priority")
    st.form_submit_button("Add model", on_click=add_model)

entries = {e.model_id: e for e in orch.models()}
with right:
    st.markdown("**Activate, deactivate, prioritise**")
    if entries:
        picked = st.selectbox("Registered model", list(entries), key="edit_model")
        entry = entries[picked]
        with st.form(f"edit_form_{picked}"):
            state.follow(f"edit_active_{picked}", entry.active)  # saved only when changed here
            st.toggle("Active", key=f"edit_active_{picked}",
                      help="Inactive models are not offered and never used as a fallback")
            state.follow(f"edit_priority_{picked}", entry.priority)
            st.number_input("Priority", step=10, key=f"edit_priority_{picked}",
                            help="Breaks ties between alternatives: lower first")
            st.form_submit_button("Save", on_click=save_entry, args=(picked,))
        discovered = entry.source == "discovered"
        st.button("Remove", key="remove_model_ask", on_click=confirm.ask, args=(REMOVE_MODEL, picked),
                  disabled=discovered,
                  help="Discovered models come back while the host lists them: deactivate them instead"
                  if discovered else None)

    if confirm.pending(REMOVE_MODEL) in entries:
        confirm_remove_entry(confirm.pending(REMOVE_MODEL))

groups_view.group_editor(orch, [m.model_id for m in orch.models() if m.active])
