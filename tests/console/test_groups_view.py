"""Model groups on the Models page (console/groups_view.py) and in the chat picker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import lmstudio_down, start

SAVE = "FormSubmitter:group_form-Save group"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


@pytest.fixture
def models(core: Callable[[], Orchestrator]) -> list[str]:
    orch = core()
    ids = ["openai:gpt-4.1-mini", "mistral:mistral-small-latest", "lmstudio:qwen2.5-7b-instruct"]
    registered = {m.model_id for m in orch.models()}
    for model_id in ids:
        if model_id not in registered:
            orch.add_model(model_id)
    return ids


def save(at: AppTest, name: str, members: list[str]) -> AppTest:
    if name:
        at.text_input(key="group_name").set_value(name)
    at.multiselect(key="group_members").set_value(members)
    return at.button(key=SAVE).click().run()


def test_a_group_is_saved_with_its_members_in_the_order_picked(core: Callable[[], Orchestrator],
                                                                models: list[str]) -> None:
    order = [models[2], models[0], models[1]]
    at = save(start("app_pages/models.py"), "default", order)
    assert not at.exception
    assert at.success[0].value.startswith("Saved group default")
    assert [(g.name, g.members) for g in core().groups()] == [("default", tuple(order))]
    [table] = [d for d in at.dataframe if "Group" in d.value.columns]
    assert table.value.to_dict("records")[0]["Members, in order"] == " → ".join(order)


def test_picking_a_group_loads_it_and_a_new_order_replaces_the_old(core: Callable[[], Orchestrator],
                                                                    models: list[str]) -> None:
    core().set_group("fast", models[:2])
    at = start("app_pages/models.py")
    at.selectbox(key="group_pick").set_value("fast").run()
    assert at.multiselect(key="group_members").value == models[:2]
    at = save(at, "", [models[1], models[0]])
    assert not at.exception
    assert core().groups()[0].members == (models[1], models[0])


def test_a_bad_group_name_says_what_to_fix_and_keeps_the_members(models: list[str]) -> None:
    at = save(start("app_pages/models.py"), "has:colon", models[:1])
    assert not at.exception
    assert "no ':'" in at.error[0].value
    assert at.multiselect(key="group_members").value == models[:1]
    assert at.text_input(key="group_name").value == "has:colon"


def test_a_group_is_removed(core: Callable[[], Orchestrator], models: list[str]) -> None:
    core().set_group("fast", models[:2])
    at = start("app_pages/models.py")
    at.selectbox(key="group_pick").set_value("fast").run()
    at = at.button(key="group_remove").click().run()
    assert not at.exception
    assert [g.name for g in core().groups()] == ["fast"]  # asked, not yet removed
    at = at.button(key="confirm_group_remove").click().run()
    assert not at.exception
    assert core().groups() == []
    assert at.selectbox(key="group_pick").value == ""
    assert any("Removed group fast" in s.value for s in at.success)


def test_cancelling_a_group_removal_keeps_the_group(core: Callable[[], Orchestrator], models: list[str]) -> None:
    core().set_group("fast", models[:2])
    at = start("app_pages/models.py")
    at.selectbox(key="group_pick").set_value("fast").run()
    at = at.button(key="group_remove").click().run()
    at = at.button(key="cancel_group_remove").click().run()
    assert not at.exception
    assert [g.name for g in core().groups()] == ["fast"]
    assert at.selectbox(key="group_pick").value == "fast"
    assert not any(b.key == "confirm_group_remove" for b in at.button)


def test_the_chat_picker_lists_groups_first(core: Callable[[], Orchestrator], models: list[str]) -> None:
    core().set_group("default", models[:2])
    at = start("app_pages/chat.py")
    assert not at.exception
    assert at.selectbox(key="chat_model").options[0] == "default"
