"""The newcomer overview and the API keys page in a real browser."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import E2E_KEY, TIMEOUT_MS, Console
from tests.e2e.ui import choose, keyed, main, open_page, wait_idle


def test_a_newcomer_sees_what_to_do_first_and_that_no_host_is_reachable(newcomer: Console, page: Any) -> None:
    open_page(page, newcomer.url)
    body = main(page)
    assert body.get_by_role("heading", name="Getting started").is_visible()
    steps = body.locator('[data-testid="stMarkdownContainer"] ol li')
    assert steps.count() >= 2  # no host reachable, no key
    assert "API keys" in steps.all_inner_texts()[1]
    assert "⚪ LM Studio: not running (never seen up)" in body.inner_text()  # grey: never seen up, so not red
    assert "⚪ LM Studio: not running" in page.locator('[data-testid="stSidebar"]').inner_text()
    assert body.get_by_role("link", name="Add a key on the API keys page").is_visible()  # the step is a link


def test_adding_a_key_and_testing_it_marks_it_ok(with_hosts: Console, page: Any) -> None:
    open_page(page, with_hosts.url, "keys")
    choose(page, "new_key_provider", "(openai)")
    keyed(page, "new_key_label").locator("input").fill("e2e")
    keyed(page, "new_key_value").locator("input").fill(E2E_KEY)
    page.get_by_role("button", name="Save key").click()
    wait_idle(page)
    expect(main(page).locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("••••WXYZ")
    table = main(page).locator('[data-testid="stDataFrame"]').first
    assert "not tested" in table.locator("table").text_content()
    choose(page, "key_pick", "openai · e2e")
    keyed(page, "key_test").get_by_role("button", name="Test", exact=True).click()
    expect(table.locator("table")).to_contain_text("✅ OK", timeout=TIMEOUT_MS)
    wait_idle(page)
    assert main(page).locator('[data-testid="stAlertContentSuccess"]').count() == 1
    assert main(page).locator('[data-testid="stAlertContentError"]').count() == 0
    assert E2E_KEY not in page.content()
