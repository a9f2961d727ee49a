"""Connections: every host and endpoint the console calls; add (kind picker), edit, enable/disable, remove, test."""

from __future__ import annotations

import streamlit as st

from console import confirm, state, views
from console import connections_view as cv
from orchestrator_core.connections import Connection, KeyMode, KindInfo
from orchestrator_core.errors import OrchestratorError

orch = state.orchestrator()
st.title("🔌 Connections")
st.caption("A connection is one host or endpoint: its name is the prefix of its model ids (`desk:qwen2.5-7b`). "
           "Changes take effect at once, in every process on this database.")
state.show_flash()

KINDS = {k.kind: k for k in orch.kinds()}


def _options(prefix: str, kind: KindInfo) -> dict[str, str]:
    ss = st.session_state
    return {name: str(ss.get(f"{prefix}_{name}", "")) for name in kind.options}


# -- callbacks: they run before the page, so the table below already shows their effect ------------------
def prefill_url() -> None:
    """The kind picker changed: its default URL goes into the Base URL box (empty when it has none)."""
    kind = KINDS.get(st.session_state.get("new_conn_kind", ""))
    st.session_state["new_conn_url"] = (kind.default_base_url or "") if kind else ""


def add_connection() -> None:
    ss = st.session_state
    kind = KINDS[ss.get("new_conn_kind", "")]
    key = ss.get("new_conn_key") or None
    try:
        added = orch.add_connection(ss.get("new_conn_name", ""), kind.kind, base_url=ss.get("new_conn_url") or None,
                                    options=_options("new_conn_opt", kind), key_mode=ss.get("new_conn_mode", "ordered"),
                                    key=key)
    except OrchestratorError as exc:
        state.flash("error", exc.message)  # the form keeps everything that was typed (the key too)
        return
    for field in ("new_conn_name", "new_conn_key"):
        ss[field] = ""
    prefill_url()  # ready for the next one of this kind
    ss["conn_pick"] = added.name
    with_key = " with its key" if key else ""
    state.flash("success", f"Added {added.name} ({kind.display_name}) at {added.shown_url}{with_key}. "
                           "Press Test to check it.")


def save_connection(name: str) -> None:
    current = orch.connection(name)
    options = {o: str(v) for o in KINDS[current.kind].options
               if (v := state.changed(f"edit_conn_opt_{name}_{o}")) is not None}
    url = state.changed(f"edit_conn_url_{name}")
    try:
        orch.edit_connection(name, base_url=url or None,
                             options={**current.options, **options} if options else None,
                             key_mode=state.changed(f"edit_conn_mode_{name}"))
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"Saved {name}.")


def toggle(name: str, enabled: bool) -> None:
    try:
        orch.edit_connection(name, enabled=enabled)
    except OrchestratorError as exc:
        state.flash("error", exc.message)
        return
    state.flash("success", f"{'Enabled' if enabled else 'Disabled'} {name}."
                + ("" if enabled else " Its models are skipped, by chat and by fallback, until you enable it."))


def ask_remove(name: str) -> None:
    st.session_state["pending_remove"] = name


def cancel_remove() -> None:
    st.session_state.pop("pending_remove", None)


@st.dialog("Remove this connection?", on_dismiss=cancel_remove)
def confirm_remove(connection: Connection) -> None:
    models = sum(m.model_id.startswith(f"{connection.name}:") for m in orch.models())
    keys = sum(not k.read_only for k in orch.keys_of(connection.name))
    st.markdown(views.plain(cv.removal_text(connection, models, keys)))

    def remove() -> None:
        orch.remove_connection(connection.name)
        st.session_state.pop("conn_pick", None)
        st.session_state.pop("conn_test", None)  # its test result must not outlive it

    confirm.buttons("Disable" if connection.seeded else "Remove", remove,
                    f"{'Disabled' if connection.seeded else 'Removed'} {connection.name}.", cancel_remove, key="remove")


def run_test(name: str) -> None:
    with st.spinner(f"Testing {name}…"):
        try:
            st.session_state["conn_test"] = orch.test_connection(name)
        except OrchestratorError as exc:
            state.flash("error", exc.message)


def show_test(connection: Connection) -> None:
    test = st.session_state.get("conn_test")
    if test is None or test.name != connection.name:
        return
    kind, lines = cv.test_summary(test, KINDS[connection.kind])
    getattr(st, kind)("  \n".join(views.plain(line) for line in lines))


# -- the list ------------------------------------------------------------------------------------------
connections = orch.connections()
by_name = {c.name: c for c in connections}
hosts = {h.provider: h for h in orch.hosts()}
st.dataframe(cv.connection_rows(connections, KINDS, hosts), hide_index=True, width="stretch", key="conn_table")

if by_name:
    top = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    name = top[0].selectbox("Connection", list(by_name), key="conn_pick",
                            format_func=lambda n: f"{n} ({KINDS[by_name[n].kind].display_name})")
    picked = by_name[name]
    if top[1].button("Test", key="conn_test_button", help="Reachability, model count and the key check"):
        run_test(name)
    top[2].button("Disable" if picked.enabled else "Enable", key="conn_toggle", on_click=toggle,
                  args=(name, not picked.enabled))
    top[3].button("Remove", key="conn_remove", on_click=ask_remove, args=(name,))
    show_test(picked)

    with st.expander(f"Edit {name}", expanded=False):
        kind = KINDS[picked.kind]
        with st.form(f"edit_conn_form_{name}", clear_on_submit=False):
            state.follow(f"edit_conn_url_{name}", picked.shown_url)
            st.text_input("Base URL", key=f"edit_conn_url_{name}",
                          help=f"{kind.display_name}'s default: {kind.default_base_url or 'none'}")
            for option in kind.options:
                state.follow(f"edit_conn_opt_{name}_{option}", picked.options.get(option, ""))
                st.text_input(option, key=f"edit_conn_opt_{name}_{option}")
            state.follow(f"edit_conn_mode_{name}", picked.key_mode.value)
            st.selectbox("Key mode", [m.value for m in KeyMode], key=f"edit_conn_mode_{name}",
                         help="ordered: the first healthy key; round-robin: the healthy keys in turn")
            st.form_submit_button("Save changes", on_click=save_connection, args=(name,))
        st.caption("Keys of this connection are managed on the API keys page.")

    pending = st.session_state.get("pending_remove")
    if pending in by_name:
        confirm_remove(by_name[pending])


# -- add ---------------------------------------------------------------------------------------------
st.subheader("Add a connection")
if "new_conn_kind" not in st.session_state:
    st.session_state["new_conn_kind"] = next(iter(KINDS))
    prefill_url()
new_kind = KINDS[st.selectbox("Kind", list(KINDS), key="new_conn_kind", on_change=prefill_url,
                              format_func=lambda k: cv.kind_label(KINDS[k]))]
with st.form("add_conn_form", clear_on_submit=False):
    cols = st.columns([1, 2])
    cols[0].text_input("Name", key="new_conn_name", placeholder="e.g. desk or groq",
                       help="1 to 32 lower-case letters, digits, '-' or '_': the prefix of its model ids")
    cols[1].text_input("Base URL", key="new_conn_url", placeholder="https://host:port/v1")
    for option in new_kind.options:
        st.text_input(option, key=f"new_conn_opt_{option}")
    cols = st.columns([2, 1])
    cols[0].text_input("Key", type="password", key="new_conn_key",
                       placeholder="paste the key" if new_kind.needs_key else "optional for this kind",
                       help="More keys of this connection can be added on the API keys page")
    cols[1].selectbox("Key mode", [m.value for m in KeyMode], key="new_conn_mode")
    st.form_submit_button("Add connection", type="primary", on_click=add_connection)
st.caption("Keys are encrypted at rest and never shown; the table counts them.")
