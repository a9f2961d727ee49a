"""The password gate in a real browser."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import Console
from tests.e2e.ui import keyed, main, open_page, wait_idle


def test_the_password_gate_refuses_a_wrong_password_and_opens_for_the_right_one(gated: Console, page: Any) -> None:
    open_page(page, gated.url)
    password = keyed(page, "console_password").locator("input")
    password.fill("wrong password")
    page.get_by_role("button", name="Unlock").click()
    expect(main(page).locator('[data-testid="stAlertContentError"]')).to_have_count(1)
    wait_idle(page)
    assert main(page).get_by_role("heading", name="Getting started").count() == 0
    password.fill("correct horse battery staple")
    page.get_by_role("button", name="Unlock").click()
    wait_idle(page)
    main(page).get_by_role("heading", name="Getting started").wait_for()
    assert page.locator('[data-testid="stSidebarNav"]').get_by_role("link").count() == 7  # Usage, Spend, Connections
