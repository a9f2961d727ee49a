"""API keys page, Gateway tokens section: create shows the token once, the list never shows it, revoke asks first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import all_values, lmstudio_down, start

CREATE = "FormSubmitter:add_token_form-Create token"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


def create(at: AppTest, name: str, scope: str) -> AppTest:
    at.text_input(key="new_token_name").set_value(name)
    at.selectbox(key="new_token_scope").set_value(scope)
    return at.button(key=CREATE).click().run()


def test_a_created_token_is_shown_once_then_only_listed_by_name(core: Callable[[], Orchestrator]) -> None:
    at = create(start("app_pages/keys.py"), "ci", "admin")
    assert not at.exception
    [shown] = [c.value for c in at.code]
    assert shown.startswith("orch_")
    info = core().tokens.verify(shown)
    assert info is not None and (info.name, info.scope) == ("ci", "admin")
    [row] = at.dataframe[-1].value.to_dict("records")
    assert (row["Name"], row["Scope"], row["Last used"]) == ("ci", "admin", "never")

    at.run()  # any later render: the token is gone from the page
    assert not at.code and shown not in all_values(at)


def test_revoking_a_token_asks_first_and_then_refuses_it(core: Callable[[], Orchestrator]) -> None:
    token = core().tokens.create("notebook", "chat").token
    at = start("app_pages/keys.py")
    at.button(key="token_revoke").click().run()
    assert core().tokens.verify(token) is not None  # only asked so far
    at.button(key="confirm_revoke").click().run()
    assert not at.exception
    assert core().tokens.verify(token) is None
    assert "Revoked the gateway token “notebook”." in [s.value for s in at.success]


def test_a_token_without_a_name_is_refused_and_the_choice_kept(core: Callable[[], Orchestrator]) -> None:
    at = create(start("app_pages/keys.py"), "  ", "admin")
    assert "needs a name" in at.error[0].value
    assert at.selectbox(key="new_token_scope").value == "admin"
    assert core().tokens.list_tokens() == []
