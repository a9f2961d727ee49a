"""The Connections page in a real browser: the kind picker pre-fills the URL, Test, Remove behind its dialog."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import TIMEOUT_MS, Console, running_console
from tests.e2e.ui import choose, keyed, main, open_page, wait_idle


@pytest.fixture(scope="module")
def demo(browser: Any) -> Iterator[Console]:
    with running_console(lmstudio=True) as console:
        yield console


def test_a_second_lm_studio_is_added_tested_and_removed(demo: Console, page: Any) -> None:
    open_page(page, demo.url, "connections")
    url_box = keyed(page, "new_conn_url").locator("input")
    choose(page, "new_conn_kind", "(ollama)")
    expect(url_box).to_have_value("http://127.0.0.1:11434")  # the kind's default, typed in for the operator
    choose(page, "new_conn_kind", "(lmstudio)")
    expect(url_box).to_have_value("http://127.0.0.1:1234")
    keyed(page, "new_conn_name").locator("input").fill("desk")
    url_box.fill(str(demo.lmstudio_url))
    page.get_by_role("button", name="Add connection").click()
    wait_idle(page)
    expect(main(page).locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("Added desk")
    keyed(page, "conn_test_button").get_by_role("button").click()
    result = main(page).locator('[data-testid="stAlertContentSuccess"]').last
    expect(result).to_contain_text("Reachable: yes", timeout=TIMEOUT_MS)
    expect(result).to_contain_text("Models:")
    wait_idle(page)
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("desk (LM Studio)")
    keyed(page, "conn_remove").get_by_role("button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("metrics are kept")
    dialog.get_by_role("button", name="Remove").click()
    wait_idle(page)
    # The test result of desk may still be on the page for a moment while the rerun replaces it.
    expect(main(page).locator('[data-testid="stAlertContentSuccess"]').filter(has_text="Removed desk")).to_be_visible()
    expect(main(page)).not_to_contain_text("Reachable: yes")  # the removed connection's test result is gone
    expect(page.locator('[data-testid="stSidebar"]')).not_to_contain_text("desk (LM Studio)")
