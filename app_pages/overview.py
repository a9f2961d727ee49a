"""Overview: hosts, models, keys and the last hour at a glance, and what to do next."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from console import costs, state, views
from orchestrator_core.store import spend

SPEND_PERIODS: tuple[tuple[str, spend.Period], ...] = (("today", "day"), ("this week", "week"), ("this month", "month"))

orch = state.orchestrator()
st.title("🏠 Overview")

hosts = orch.hosts()
statuses = orch.statuses()
keys = orch.keys_of()
last_hour = state.metric(orch, "summary", state.minute_now() - 3600)

steps = views.next_steps(hosts, keys, statuses)
if steps:
    with st.container(border=True):
        st.subheader("Getting started")
        for number, (step, link) in enumerate(steps, 1):
            st.markdown(f"{number}. {step}")
            if link is not None:
                page, label = views.STEP_LINKS[link]
                st.page_link(page, label=label, icon="➡️")

counts = views.state_counts(statuses)
cols = st.columns(4)
cols[0].metric("Models ready", f"{counts['ready']} / {counts['total']}")
cols[1].metric("Local models loaded", counts["loaded"])
cols[2].metric("In cooldown", counts["cooling"])
cols[3].metric("Unavailable", counts["unavailable"], help="host down, no key, or a key rejected at its last test")

cols = st.columns(3)
cols[0].metric("Calls, last hour", last_hour["calls"])
cols[1].metric("Errors, last hour", last_hour["errors"])
cols[2].metric("Answered by a fallback", last_hour["fallbacks"])



def spend_section() -> None:
    """Spend today, this week and this month, the models that spent most this month, budget warnings (issue 11)."""
    now = state.minute_now()
    cols = st.columns(3)
    for column, (label, period) in zip(cols, SPEND_PERIODS, strict=True):
        column.metric(f"Spent {label}", costs.usd(state.spend(orch, "spend_total", spend.period_start(period, now))))
    for line in costs.budget_warnings(orch.budget_statuses()):
        st.warning(views.plain(line))
    top = costs.spend_rows(state.spend(orch, "spend_by_model", spend.period_start("month", now), None), limit=5)
    if top:
        st.caption("Top models by spend this month")
        st.dataframe(pd.DataFrame(top), hide_index=True, width="stretch", key="overview_top_spend")


spend_section()

left, right = st.columns(2)
with left:
    st.subheader("Local hosts")
    if not hosts:
        st.info("No local host is checked: LOCAL_HOSTS is empty.")
    seen = views.seen_up(orch.models())
    for host in hosts:
        st.markdown(f"{views.host_line(host, host.provider in seen)}  \n`{host.base_url}`")
        if not host.reachable:
            st.caption(views.plain(host.detail))
    hint = views.probe_hint(hosts, seen)
    if hint:
        st.info(hint, icon="💡")
with right:
    st.subheader("API keys")
    st.dataframe(pd.DataFrame(views.provider_key_rows(keys)), hide_index=True, width="stretch")

st.subheader("Go to")
links = st.columns(5)
links[0].page_link("app_pages/chat.py", label="Chat with a model", icon="💬")
links[1].page_link("app_pages/models.py", label="Model status and actions", icon="🧠")
links[2].page_link("app_pages/usage.py", label="Latency, errors and fallbacks", icon="📈")
links[3].page_link("app_pages/spend.py", label="Spend, prices and budgets", icon="💰")
links[4].page_link("app_pages/keys.py", label="Manage API keys", icon="🔑")
