"""Models: a live status table, load / unload / reset actions, the registry, and charts over the call metrics."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from console import charts, groups_view, state, views
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.types import ModelState, ModelStatus

INTERVALS: dict[str, float | None] = {"Off": None, "2 s": 2.0, "5 s": 5.0, "10 s": 10.0, "30 s": 30.0}
STATS_WINDOW_S = 86400.0

orch = state.orchestrator()
st.title("🧠 Models")
state.show_flash()


# -- live status ---------------------------------------------------------------------------------------
controls = st.columns([1, 1, 3], vertical_alignment="bottom")
interval = controls[0].selectbox("Auto-refresh", list(INTERVALS), index=2, key="models_interval")
if controls[1].button("Refresh now", key="models_refresh_now", help="Ask every local host again now"):
    orch.statuses(force=True)
    state.clear_metric_cache()


@st.fragment(run_every=INTERVALS[interval])
def status_table() -> None:
    """The table of every model; reruns on its own every few seconds without rerunning the page."""
    rows = views.model_rows(
        orch.statuses(),
        orch.models(),
        state.metric(orch, "model_stats", state.minute_now() - STATS_WINDOW_S),
    )
    if not rows:
        st.info("No model registered yet: start a local host, or add a hosted model below.")
        return
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, width="stretch", key="models_table",
        column_config={"p50 ms": st.column_config.NumberColumn(format="%.0f"),
                       "p95 ms": st.column_config.NumberColumn(format="%.0f")},
    )
    st.caption(f"Status checked {views.local_time(time.time())}; calls, success and latency over the last 24 hours.")


status_table()


def metrics_csv(since: float, until: float) -> str:
    columns, rows = orch.export_metrics(since, until)
    return views.csv_text(rows, columns)


# -- actions -----------------------------------------------------------------------------------------
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


statuses: dict[str, ModelStatus] = {s.model_id: s for s in orch.statuses()}
st.subheader("Actions")
if statuses:
    # Plain ids as entries, the status beside them (views.picker_status says why).
    chosen = st.selectbox("Model", list(statuses), key="action_model")
    st.caption(views.picker_status(statuses.get(chosen)))
    local = statuses[chosen].local
    buttons = st.columns(5)
    buttons[0].button("Load", key="action_load", disabled=not local, on_click=run_action, args=("load", chosen),
                      help="Start loading in the background")
    buttons[1].button("Unload", key="action_unload", disabled=not local, on_click=run_action,
                      args=("unload", chosen))
    wait = buttons[2].button("Load and wait", key="action_load_wait", disabled=not local)
    buttons[3].button("Reset failure", key="action_reset", on_click=run_action, args=("reset", chosen))
    buttons[4].button("Reset all failures", key="action_reset_all", on_click=run_action, args=("reset_all", None))
    if wait:
        load_and_wait(chosen)
else:
    st.caption("Actions appear once a model is active.")


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
        orch.edit_model(model_id, active=bool(st.session_state[f"edit_active_{model_id}"]),
                        priority=int(st.session_state[f"edit_priority_{model_id}"]))
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"{model_id} saved.")


def remove_entry(model_id: str) -> None:
    try:
        orch.remove_model(model_id)
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"{model_id} removed from the registry.")


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
            st.toggle("Active", value=entry.active, key=f"edit_active_{picked}",
                      help="Inactive models are not offered and never used as a fallback")
            st.number_input("Priority", value=entry.priority, step=10, key=f"edit_priority_{picked}",
                            help="Breaks ties between alternatives: lower first")
            st.form_submit_button("Save", on_click=save_entry, args=(picked,))
        discovered = entry.source == "discovered"
        st.button("Remove", key="remove_model", on_click=remove_entry, args=(picked,), disabled=discovered,
                  help="Discovered models come back while the host lists them: deactivate them instead"
                  if discovered else None)


# -- charts ------------------------------------------------------------------------------------------
def chart(figure_rows: list[dict[str, Any]], build: Any, key: str, empty: str) -> None:
    if figure_rows:
        st.plotly_chart(build(figure_rows), key=key, width="stretch")
    else:
        st.info(empty)


@st.fragment
def metric_charts() -> None:
    """Charts and the CSV export; changing the range reruns only this part."""
    st.subheader("Charts")
    pick = st.columns([3, 2])
    range_choice = pick[0].radio("Time range", list(views.RANGES), horizontal=True, key="chart_range")
    custom: tuple[date, ...] = ()
    if range_choice == "Custom":
        today = date.today()
        picked: Any = pick[1].date_input("From – to", value=(today - timedelta(days=7), today), key="chart_dates")
        custom = tuple(picked) if isinstance(picked, (tuple, list)) else (picked,)
    window = views.resolve_range(range_choice, state.minute_now(), custom)
    since, until = window.since, window.until
    bucket = views.bucket_seconds(window.span_s)
    outcomes = state.metric(orch, "calls_by_outcome", since, until)
    if not outcomes:
        st.info("No calls in this range yet. Send a prompt on the Chat page, or pick a longer range.")
    else:
        st.caption(f"Time buckets of {timedelta(seconds=bucket)}; aggregated in the database.")
        row = st.columns(2)
        with row[0]:
            chart(state.metric(orch, "latency_series", since, until, bucket),
                  lambda r: charts.percentile_series(r, "Latency over time (p50 / p95)"),
                  "chart_latency", "No successful calls in this range.")
        with row[1]:
            chart(state.metric(orch, "latency_histogram", since, until), charts.latency_distribution,
                  "chart_histogram", "No successful calls in this range.")
        row = st.columns(2)
        with row[0]:
            chart(state.metric(orch, "ttft_series", since, until, bucket),
                  lambda r: charts.percentile_series(r, "Time to first token (p50 / p95)"),
                  "chart_ttft", "No streamed answers in this range, so no time to first token.")
        with row[1]:
            chart(outcomes, charts.calls_by_outcome, "chart_outcomes", "No calls in this range.")
        chart(state.metric(orch, "fallback_flows", since, until), charts.fallback_sankey, "chart_fallbacks",
              "No fallbacks in this range.")
    st.download_button(
        "Download metrics as CSV",
        # Built only when clicked: a week of calls can be a large file.
        data=lambda: metrics_csv(since, until),
        file_name=f"call_metrics_{int(since)}_{int(until)}.csv",
        mime="text/csv",
        on_click="ignore",
        key="metrics_csv",
        disabled=not outcomes,
    )


groups_view.group_editor(orch, [m.model_id for m in orch.models() if m.active])
metric_charts()
