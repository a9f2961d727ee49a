"""API keys: pools grouped by connection (mode, per-key state), add / edit / delete (with confirmation), test one,
a pool or all; environment keys read-only."""

from __future__ import annotations

import streamlit as st

from console import confirm, keys_view, state, views
from orchestrator_core.connections import KeyMode
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.store import KeyInfo, TokenInfo
from orchestrator_core.types import KeyCheck, KeyTestResult

FLASH_KIND = {KeyCheck.OK: "success", KeyCheck.REJECTED: "error", KeyCheck.UNVERIFIED: "warning"}

orch = state.orchestrator()
st.title("🔑 API keys")
state.show_flash()
# Connections that take a key: hosted ones, and local hosts whose kind has a key variable (LM Studio's token).
KEY_CONNECTIONS = {c.name: c for c in orch.connections()
                   if not c.local or c.provider_class.key_env_vars}


def provider_name(name: str) -> str:
    connection = KEY_CONNECTIONS.get(name)
    if connection is None:
        return name
    # "OpenAI (openai)" for a seeded one; "groq (Custom OpenAI-compatible)" names itself already.
    return f"{connection.display_name} ({name})" if connection.seeded else connection.display_name


# -- callbacks: they run before the page, so the table below already shows their effect ------------------
def add_key() -> None:
    ss = st.session_state
    try:
        info = orch.add_key(ss.get("new_key_provider", ""), ss.get("new_key_label") or None,
                             ss.get("new_key_value", ""))
    except OrchestratorError as exc:
        state.flash("error", exc.message)  # the form keeps everything that was typed
        return
    ss["new_key_value"] = ""
    ss["new_key_label"] = ""
    state.flash("success", f"Saved the {info.provider} key “{info.label}” ({info.masked}). Test it with “Test”.")


def update_key(key_id: int | str) -> None:
    ss = st.session_state
    new_key = ss.get(f"edit_key_value_{key_id}") or None
    try:
        info = orch.edit_key(key_id, label=state.changed(f"edit_key_label_{key_id}"), key=new_key)
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    ss[f"edit_key_value_{key_id}"] = ""
    what = "label and key" if new_key else "label"
    state.flash("success", f"Updated the {what} of the {info.provider} key “{info.label}” ({info.masked}).")


def ask_delete(key_id: int | str) -> None:
    st.session_state["pending_delete"] = key_id


def cancel_delete() -> None:
    st.session_state.pop("pending_delete", None)


@st.dialog("Delete this key?", on_dismiss=cancel_delete)
def confirm_delete(key: KeyInfo) -> None:
    st.markdown(f"The {key.provider} key **{views.plain(key.label)}** ({views.plain(key.masked)}) is removed for good.")
    confirm.buttons("Delete", lambda: orch.delete_key(key.id), f"Deleted the {key.provider} key “{key.label}”.",
            cancel_delete)


def report(key: KeyInfo, result: KeyTestResult) -> None:
    state.flash(FLASH_KIND[result.status], views.key_test_message(key, result.status, result.detail,
                                                                   result.latency_ms))


# -- the list ------------------------------------------------------------------------------------------
def set_mode(name: str) -> None:
    mode = st.session_state.get(f"pool_mode_{name}")
    try:
        orch.edit_connection(name, key_mode=mode)
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"{name} now uses its keys {'in turn' if mode == KeyMode.ROUND_ROBIN else 'in order'}.")


def test_all(connection: str | None) -> None:
    """Test every key (of one connection) and say how many passed."""
    with st.spinner("Testing keys…"):
        try:
            results = orch.test_all_keys(connection)
        except OrchestratorError as exc:  # e.g. the database is busy: the results could not be saved
            state.flash("error", exc.message)
            return
    counts = {check: sum(r.status is check for r in results.values()) for check in KeyCheck}
    state.flash("info", f"Tested {len(results)} keys: {counts[KeyCheck.OK]} OK, {counts[KeyCheck.REJECTED]} "
                        f"rejected, {counts[KeyCheck.UNVERIFIED]} could not be verified.")


def pool_section(name: str, pool: list[KeyInfo]) -> None:
    """One connection's pool: its mode, its keys with their state, Test all of it."""
    connection = KEY_CONNECTIONS.get(name)
    mode = connection.key_mode.value if connection else KeyMode.ORDERED.value
    cols = st.columns([3, 1, 1], vertical_alignment="bottom")
    cols[0].markdown(f"**{views.plain(keys_view.pool_title(provider_name(name), len(pool), mode))}**")
    if connection is not None:
        modes = [m.value for m in KeyMode]
        cols[1].selectbox("Pool mode", modes, index=modes.index(mode), key=f"pool_mode_{name}", on_change=set_mode,
                          args=(name,), help="ordered: the first healthy key; round-robin: the healthy keys in turn")
    if cols[2].button("Test all", key=f"key_test_pool_{name}", help=f"Test every key of {name}"):
        test_all(name)
        st.rerun()
    st.dataframe(keys_view.pool_rows(pool), hide_index=True, width="stretch", key=f"keys_table_{name}")


# -- the pools -----------------------------------------------------------------------------------------
keys = orch.keys_of()
by_id = {k.id: k for k in keys}
for pool_name, pool_keys in keys_view.by_connection(keys).items():
    pool_section(pool_name, pool_keys)
if not keys:
    st.info(f"No key yet. Add one below, or set {views.key_env_names()} in the environment or .env (those are "
            "listed here read-only).")

if keys:
    top = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    key_id = top[0].selectbox("Key", list(by_id), key="key_pick", format_func=lambda i: views.key_option(by_id[i]))
    picked = by_id[key_id]
    test_one = top[1].button("Test", key="key_test", help="Ask the provider whether it accepts this key")
    top[2].button("Delete", key="key_delete", on_click=ask_delete, args=(key_id,), disabled=picked.read_only,
                  help="Environment keys are removed by unsetting their variable" if picked.read_only else None)
    test_all_pressed = top[3].button("Test all", key="key_test_all", help="Test every key of every connection")
    if test_one:
        with st.spinner(f"Testing {views.plain(views.key_option(picked))}…"):
            try:
                report(picked, orch.test_key(key_id))
            except OrchestratorError as exc:
                state.flash("error", exc.message)
        st.rerun()
    if test_all_pressed:
        test_all(None)
        st.rerun()

    with st.expander(f"Edit “{views.plain(picked.label)}”", expanded=False):
        if picked.read_only:
            st.caption(f"This key comes from the environment ({views.plain(picked.label)}); change the variable and "
                       "restart to edit it.")
        else:
            with st.form(f"edit_key_form_{key_id}", clear_on_submit=False):
                state.follow(f"edit_key_label_{key_id}", picked.label)
                st.text_input("Label", key=f"edit_key_label_{key_id}")
                st.text_input("New key (leave empty to keep the current one)", type="password",
                              key=f"edit_key_value_{key_id}")
                st.form_submit_button("Save changes", on_click=update_key, args=(key_id,))

    pending = st.session_state.get("pending_delete")
    if pending in by_id:
        confirm_delete(by_id[pending])


# -- add ---------------------------------------------------------------------------------------------
st.subheader("Add a key")
with st.form("add_key_form", clear_on_submit=False):
    cols = st.columns([1, 1, 2])
    cols[0].selectbox("Connection", tuple(KEY_CONNECTIONS), key="new_key_provider", format_func=provider_name)
    cols[1].text_input("Label", key="new_key_label", placeholder="default")
    cols[2].text_input("Key", type="password", key="new_key_value", placeholder="paste the key")
    st.form_submit_button("Save key", type="primary", on_click=add_key)
st.caption("Keys are encrypted at rest and only ever shown masked (the last 4 characters).")


# -- gateway tokens (the HTTP API) ------------------------------------------------------------------------
st.subheader("Gateway tokens")
st.caption("Programs call the HTTP API (/v1, /api) with `Authorization: Bearer <token>`. Scope **chat** may call "
           "/v1 and read /api; **admin** may also load, unload, reset and read /metrics. Only a hash is stored: "
           "a token is shown once, when it is created.")


def create_token() -> None:
    ss = st.session_state
    try:
        new = orch.tokens.create(ss.get("new_token_name", ""), ss.get("new_token_scope", "chat"))
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    ss["new_token_name"] = ""
    ss["created_token"] = (new.info.name, new.token)  # shown on this render only, then forgotten


def ask_revoke(token_id: int) -> None:
    st.session_state["pending_revoke"] = token_id


def cancel_revoke() -> None:
    st.session_state.pop("pending_revoke", None)


@st.dialog("Revoke this token?", on_dismiss=cancel_revoke)
def confirm_revoke(token: TokenInfo) -> None:
    st.text(f"Programs using the token “{token.name}” ({token.scope}) are refused from their next request on.")
    confirm.buttons("Revoke", lambda: orch.tokens.revoke(token.id), f"Revoked the gateway token “{token.name}”.",
            cancel_revoke)


created = st.session_state.pop("created_token", None)
if created is not None:
    st.success(f"Token “{created[0]}” created. Copy it now: it is not shown again.")
    st.code(created[1], language=None)

tokens = orch.tokens.list_tokens()
if tokens:
    st.dataframe(views.token_rows(tokens), hide_index=True, width="stretch", key="tokens_table")
    active = {t.id: t for t in tokens if t.active}
    if active:
        cols = st.columns([3, 1], vertical_alignment="bottom")
        pick = cols[0].selectbox("Token", list(active), key="token_pick",
                                 format_func=lambda i: f"{active[i].name} ({active[i].scope})")
        cols[1].button("Revoke", key="token_revoke", on_click=ask_revoke, args=(pick,))
    pending_token = st.session_state.get("pending_revoke")
    if pending_token in active:
        confirm_revoke(active[pending_token])
else:
    st.info("No gateway token yet: the API refuses every call but /api/health until you create one.")

with st.form("add_token_form", clear_on_submit=False):
    cols = st.columns([2, 1])
    cols[0].text_input("Name", key="new_token_name", placeholder="who uses it, e.g. ci")
    cols[1].selectbox("Scope", ("chat", "admin"), key="new_token_scope")
    st.form_submit_button("Create token", type="primary", on_click=create_token)
