"""Spend: what the calls cost over time per model and connection, fallbacks' cost, unpriced models, prices, budgets."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from console import charts, costs, state, views
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.store.prices import ALL_CONNECTIONS, PERIODS
from orchestrator_core.store.spend import Period, period_start

SPEND_RANGES = {"Last 24 hours": 86400.0, "Last 7 days": 7 * 86400.0, "Last 30 days": 30 * 86400.0}

orch = state.orchestrator()
st.title("💰 Spend")
state.show_flash()


def budget_banner() -> None:
    for line in costs.budget_warnings(orch.budget_statuses()):
        st.warning(views.plain(line))


def totals() -> None:
    now = state.minute_now()
    cols = st.columns(3)
    periods: tuple[tuple[str, Period], ...] = (("today", "day"), ("this week", "week"), ("this month", "month"))
    for column, (label, period) in zip(cols, periods, strict=True):
        since = period_start(period, now)
        column.metric(f"Spent {label}", costs.usd(state.spend(orch, "spend_total", since)))
    st.caption("UTC days, ISO weeks and calendar months; calls of unpriced models are not in these sums.")


@st.fragment
def spend_charts() -> None:
    """Spend over time per model and per connection, the table per model, the cost of fallbacks."""
    choice = st.radio("Time range", list(SPEND_RANGES), horizontal=True, key="spend_range")
    until = state.minute_now()
    since = until - SPEND_RANGES[choice]
    bucket = views.bucket_seconds(until - since, target_points=40)
    bucket = max(3600, bucket // 3600 * 3600)  # whole hours: the hour rollup answers
    st.caption(f"Time buckets of {timedelta(seconds=bucket)}; summed in the database.")
    row = st.columns(2)
    with row[0]:
        _chart(state.spend(orch, "spend_series", since, until, bucket, "model"),
               lambda r: charts.spend_over_time(r, "model", "Spend per model"), "spend_by_model")
    with row[1]:
        _chart(state.spend(orch, "spend_series", since, until, bucket, "provider"),
               lambda r: charts.spend_over_time(r, "provider", "Spend per connection"), "spend_by_connection")
    st.subheader("Per model")
    rows = costs.spend_rows(state.spend(orch, "spend_by_model", since, until))
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="spend_models_table")
    else:
        st.info("No calls in this range.")
    st.subheader("Cost of fallbacks")
    flows = state.spend(orch, "fallback_costs", since, until)
    if flows:
        st.plotly_chart(charts.fallback_cost_bars(flows), key="spend_fallbacks", width="stretch")
        st.dataframe(pd.DataFrame(costs.fallback_rows(flows)), hide_index=True, width="stretch")
    else:
        st.info("No answer by a fallback priced on both sides in this range.")


def _chart(rows: list[dict[str, object]], build: object, key: str) -> None:
    if rows:
        st.plotly_chart(build(rows), key=key, width="stretch")  # type: ignore[operator]
    else:
        st.info("No priced calls in this range.")


def unpriced() -> None:
    st.subheader("Unpriced models")
    seen = [r["model"] for r in state.spend(orch, "spend_by_model", state.minute_now() - 30 * 86400, None)]
    models = orch.unpriced_models([e.model_id for e in orch.models()] + seen)
    if models:
        st.warning("Calls of these models are recorded at an unknown cost (never $0): "
                   + ", ".join(f"`{views.plain(m)}`" for m in models) + ". Set a price for them below.")
    else:
        st.success("Every registered or recently called model has a price (table, override or local).")


def save_override() -> None:
    s = st.session_state
    try:
        cached = s["price_cached"] if s.get("price_cached_set") else None
        entry = orch.set_price_override(s["price_target"], s["price_input"], s["price_output"], cached)
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"Price of {entry.target} saved; calls from now on use it (recorded costs stay).")


def remove_override(target: str) -> None:
    orch.remove_price_override(target)
    state.flash("success", f"Override of {target} removed; the table price applies again.")


def overrides() -> None:
    st.subheader("Price overrides")
    st.caption("USD per million tokens, for a model id (openai:gpt-4o-mini) or a whole connection (custom:*). "
               "An override wins over the genai-prices table; local models cost 0 unless overridden.")
    entries = orch.price_overrides()
    if entries:
        st.dataframe(pd.DataFrame(costs.override_rows(entries)), hide_index=True, width="stretch")
        pick = st.selectbox("Override", [e.target for e in entries], key="price_remove_pick")
        st.button("Remove override", key="price_remove", on_click=remove_override, args=(pick,))
    with st.form("price_form", border=True):
        names = ", ".join(f"{c.name}:*" for c in orch.connections() if not c.local)
        st.text_input("Model id or connection:*", key="price_target", placeholder="custom:my-model",
                      help=f"A model id, or every model of a connection: {names}")
        cols = st.columns(3)
        cols[0].number_input("Input $/M tokens", min_value=0.0, step=0.05, format="%.4f", key="price_input")
        cols[1].number_input("Output $/M tokens", min_value=0.0, step=0.05, format="%.4f", key="price_output")
        cols[2].number_input("Cached input $/M tokens", min_value=0.0, step=0.01, format="%.4f", key="price_cached")
        st.checkbox("Cached input has its own price", key="price_cached_set")
        st.form_submit_button("Save price", on_click=save_override, key="price_save")


def save_budget() -> None:
    s = st.session_state
    try:
        entry = orch.set_budget(s["budget_scope"], s["budget_period"], s["budget_limit"])
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"Budget saved: {entry.period} ${entry.limit_usd:,.2f} for {entry.scope}.")


def remove_budget(scope: str, period: str) -> None:
    orch.remove_budget(scope, period)
    state.flash("success", f"The {period} budget of {scope} was removed.")


def budgets() -> None:
    st.subheader("Budgets")
    st.caption("Per connection (the part of a model id before ':') or * for all. Past 80 % the console warns; "
               "once spent, that connection's models are refused and fallback skips them, in every process.")
    statuses = orch.budget_statuses()
    if statuses:
        st.dataframe(pd.DataFrame(costs.budget_rows(statuses)), hide_index=True, width="stretch")
        labels = {f"{s.scope} / {s.period}": (s.scope, s.period) for s in statuses}
        pick = st.selectbox("Budget", list(labels), key="budget_remove_pick")
        st.button("Remove budget", key="budget_remove", on_click=remove_budget, args=labels[pick])
    with st.form("budget_form", border=True):
        cols = st.columns(3)
        # Hosted connections only: a local model costs 0, so a budget on it would never be spent.
        hosted = [c.name for c in orch.connections() if not c.local]
        cols[0].selectbox("Connection or *", [ALL_CONNECTIONS, *hosted], key="budget_scope",
                          help="* is every connection together")
        cols[1].selectbox("Period", PERIODS, key="budget_period")
        cols[2].number_input("Budget USD", min_value=0.0, step=1.0, format="%.2f", key="budget_limit")
        st.form_submit_button("Save budget", on_click=save_budget, key="budget_save")


budget_banner()
totals()
spend_charts()
unpriced()
left, right = st.columns(2)
with left:
    overrides()
with right:
    budgets()
