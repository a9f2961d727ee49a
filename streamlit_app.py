"""The operator console: router and frame. Run with `streamlit run streamlit_app.py`."""

from __future__ import annotations

import streamlit as st

from console import gate, state
from orchestrator_core.config import load_env_file

load_env_file()  # before the gate: CONSOLE_PASSWORD may live in .env, not only in the environment
st.set_page_config(page_title="LLM orchestrator", page_icon="🛰️", layout="wide")

# The screens live in app_pages/, not pages/: a folder named pages/ next to this file switches Streamlit to its
# legacy multipage mode until st.navigation first runs, and that mode runs a page file without this router,
# so without the access gate.
PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("app_pages/chat.py", title="Chat", icon="💬"),
    st.Page("app_pages/models.py", title="Models", icon="🧠"),
    st.Page("app_pages/usage.py", title="Usage", icon="📈"),
    st.Page("app_pages/spend.py", title="Spend", icon="💰"),
    st.Page("app_pages/connections.py", title="Connections", icon="🔌"),
    st.Page("app_pages/keys.py", title="API keys", icon="🔑"),
]

if not gate.allowed():
    # The gate is the only page, so no other page script can run before it is passed.
    st.navigation(gate.sign_in_pages(PAGES), position="hidden").run()
    gate.session_cookie()  # after Lock: clears the cookie
    st.stop()

problem = state.startup_error()
if problem is not None:

    def startup_page() -> None:
        state.render_startup_error(problem)

    st.navigation([st.Page(startup_page, title="Start-up error", icon="⚠️")], position="hidden").run()
    st.stop()

page = st.navigation(PAGES)
state.sidebar(state.orchestrator())
gate.account_controls()
gate.session_cookie()  # after sign-in: sets the cookie
page.run()
