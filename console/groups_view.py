"""Model groups on the Models page: one section function the page calls where it wants it (``group_editor``).

A group is a name with an ordered list of model ids; a call through it tries the members in that order. Members
are picked in a multiselect, whose value keeps the order they were picked in; the order is shown as a chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from orchestrator_core.connections import ModelGroup
from orchestrator_core.errors import OrchestratorError
from orchestrator_core.orchestrator import Orchestrator

from . import confirm, state, views

NEW = ""  # the picker's "new group" entry
REMOVE = "pending_remove_group"


def chain(members: Sequence[str]) -> str:
    """'a → b → c': the order a call tries the members in."""
    return " → ".join(members)


def group_rows(groups: Sequence[ModelGroup]) -> list[dict[str, Any]]:
    return [{"Group": g.name, "Members, in order": chain(g.members), "Size": len(g.members)} for g in groups]


def picker_options(groups: Sequence[ModelGroup], model_ids: Sequence[str]) -> list[str]:
    """A model picker's options: the groups first (a name without ':'), then the model ids."""
    return [g.name for g in groups] + [m for m in model_ids if m not in {g.name for g in groups}]


def group_editor(orch: Orchestrator, model_ids: Sequence[str]) -> None:
    """List, create or replace (ordered members) and remove model groups."""
    groups = {g.name: g for g in orch.groups()}
    if st.session_state.pop("_group_removed", False):
        ss = st.session_state
        ss["group_pick"], ss["group_name"], ss["group_members"] = NEW, "", []
    st.subheader("Model groups")
    st.caption("A group can be used wherever a model id can (chat, CLI, API, `model: \"default\"` on /v1): a call "
               "tries its members in order, then, with automatic fallback on, the usual alternatives.")
    if groups:
        st.dataframe(group_rows(list(groups.values())), hide_index=True, width="stretch", key="groups_table")
    picked = st.selectbox("Group", [NEW, *groups], key="group_pick", on_change=_load_group, args=(groups,),
                          format_func=lambda n: n or "➕ New group")
    with st.form("group_form", clear_on_submit=False):
        st.text_input("Name", key="group_name", disabled=bool(picked), placeholder="e.g. default or fast")
        options = list(dict.fromkeys([*st.session_state.get("group_members", []), *model_ids]))
        members = st.multiselect("Members, in the order they are tried", options, key="group_members",
                                 placeholder="pick the first model, then the next…")
        st.caption(views.plain(f"Order: {chain(members)}") if members else "Pick at least one model.")
        st.form_submit_button("Save group", type="primary", on_click=_save, args=(orch,))
    if picked:
        st.button(f"Remove group {picked}", key="group_remove", on_click=confirm.ask, args=(REMOVE, picked))
    if confirm.pending(REMOVE) in groups:
        _confirm_remove(orch, groups[confirm.pending(REMOVE)])


def _load_group(groups: dict[str, ModelGroup]) -> None:
    ss = st.session_state
    group = groups.get(ss.get("group_pick", NEW))
    ss["group_name"] = group.name if group else ""
    ss["group_members"] = list(group.members) if group else []


def _save(orch: Orchestrator) -> None:
    ss = st.session_state
    name = ss.get("group_pick") or ss.get("group_name", "")
    try:
        group = orch.set_group(name, list(ss.get("group_members", [])))
    except OrchestratorError as exc:
        state.flash("error", exc.message)  # the form keeps the name and the members
        return
    ss["group_pick"] = group.name
    state.flash("success", f"Saved group {group.name}: {chain(group.members)}.")


@st.dialog("Remove this group?", on_dismiss=lambda: confirm.cancel(REMOVE))
def _confirm_remove(orch: Orchestrator, group: ModelGroup) -> None:
    st.markdown(views.plain(f"{group.name} ({chain(group.members)}) is removed: calls, programs and /v1 requests "
                            f"naming {group.name} are refused from then on. Its members stay as they are."))

    def remove() -> None:
        orch.remove_group(group.name)
        # The picker's value is a widget's: it can change only before that widget is drawn, on the next run.
        st.session_state["_group_removed"] = True

    confirm.buttons("Remove", remove, f"Removed group {group.name}; calls naming it are refused from now on.",
                    lambda: confirm.cancel(REMOVE), key="group_remove")
