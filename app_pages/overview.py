"""Overview: hosts, models, keys and the last hour at a glance, and what to do next."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from console import state, views

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
        for number, step in enumerate(steps, 1):
            st.markdown(f"{number}. {step}")

counts = views.state_counts(statuses)
cols = st.columns(4)
cols[0].metric("Models ready", f"{counts['ready']} / {counts['total']}")
cols[1].metric("Local models loaded", counts["loaded"])
cols[2].metric("In cooldown", counts["cooling"])
cols[3].metric("Unavailable", counts["unavailable"], help="host down or no key")

cols = st.columns(3)
cols[0].metric("Calls, last hour", last_hour["calls"])
cols[1].metric("Errors, last hour", last_hour["errors"])
cols[2].metric("Answered by a fallback", last_hour["fallbacks"])

left, right = st.columns(2)
with left:
    st.subheader("Local hosts")
    if not hosts:
        st.info("No local host is checked: LOCAL_HOSTS is empty.")
    for host in hosts:
        st.markdown(f"{views.host_line(host)}  \n`{host.base_url}`")
        if not host.reachable:
            st.caption(views.plain(host.detail))
with right:
    st.subheader("API keys")
    st.dataframe(pd.DataFrame(views.provider_key_rows(keys)), hide_index=True, width="stretch")

st.subheader("Go to")
links = st.columns(3)
links[0].page_link("app_pages/chat.py", label="Chat with a model", icon="💬")
links[1].page_link("app_pages/models.py", label="Model status, actions and charts", icon="🧠")
links[2].page_link("app_pages/keys.py", label="Manage API keys", icon="🔑")
