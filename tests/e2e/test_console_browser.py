"""The console in a real browser, on a real `streamlit run`, against loopback stand-in hosts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Console, Watched, running_console
from tests.e2e.ui import choose, keyed, main, open_page, wait_idle
from tests.standins import ANSWER, openai_standin

E2E_KEY = "sk-e2e-standin-0123456789abcdefWXYZ"
LOCAL_MODEL = "lmstudio:llama-3.2-3b-instruct"  # listed but not loaded by the demo LM Studio
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def newcomer(browser: Any) -> Iterator[Console]:
    """No key, no reachable local host."""
    with running_console() as console:
        yield console


@pytest.fixture(scope="module")
def with_hosts(browser: Any) -> Iterator[Console]:
    """The demo LM Studio, a working OpenAI stand-in that checks its key, a failing one for Mistral."""
    with openai_standin(key=E2E_KEY) as openai, \
            openai_standin(fails=True, models=("mistral-small-latest",)) as down, \
            running_console(lmstudio=True, OPENAI_BASE_URL=openai.base_url, MISTRAL_BASE_URL=down.base_url,
                            MISTRAL_API_KEY="mistral-e2e-key-0123456789") as console:
        yield console


@pytest.fixture(scope="module")
def fallback(browser: Any) -> Iterator[Console]:
    """OpenAI is down; Mistral's stand-in answers. No local host."""
    with openai_standin(fails=True) as down, openai_standin(models=("mistral-small-latest",)) as mistral, \
            running_console(OPENAI_BASE_URL=down.base_url, OPENAI_API_KEY="sk-e2e-down-0123456789abcdef",
                            MISTRAL_BASE_URL=mistral.base_url, MISTRAL_API_KEY="mistral-e2e-key-0123456789",
                            MODEL_PRIORITIES="openai:gpt-4.1-mini=1,mistral:mistral-small-latest=2") as console:
        yield console


@pytest.fixture(scope="module")
def seeded(browser: Any) -> Iterator[Console]:
    """A day of metrics in the database and the demo LM Studio."""
    with running_console(seed_rows=400) as console:
        yield console


@pytest.fixture(scope="module")
def gated(browser: Any) -> Iterator[Console]:
    with running_console(CONSOLE_PASSWORD="correct horse battery staple") as console:
        yield console


def send(page: Any, prompt: str) -> None:
    box = keyed(page, "chat_prompt").locator("textarea")
    box.fill(prompt)
    box.press("Enter")


def record_chat_text(page: Any) -> None:
    """Keep every text the assistant's messages show while they change (streaming shows partial answers)."""
    page.evaluate("""() => {
      window.__seen = [];
      new MutationObserver(() => {
        for (const m of document.querySelectorAll('[data-testid="stChatMessage"]')) window.__seen.push(m.innerText);
      }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def test_a_newcomer_sees_what_to_do_first_and_that_no_host_is_reachable(newcomer: Console, page: Any) -> None:
    open_page(page, newcomer.url)
    body = main(page)
    assert body.get_by_role("heading", name="Getting started").is_visible()
    steps = body.locator('[data-testid="stMarkdownContainer"] ol li')
    assert steps.count() >= 2  # no host reachable, no key
    assert "API keys" in steps.all_inner_texts()[1]
    assert "🔴 LM Studio" in body.inner_text()
    assert "🔴 LM Studio: not reachable" in page.locator('[data-testid="stSidebar"]').inner_text()


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


def test_a_chat_loads_the_local_model_first_then_streams_its_answer_with_a_caption(
    with_hosts: Console, page: Any
) -> None:
    open_page(page, with_hosts.url, "chat")
    choose(page, "chat_model", LOCAL_MODEL)
    record_chat_text(page)
    send(page, "hello from the browser")
    status = page.locator('[data-testid="stExpander"]').filter(has_text="llama-3.2-3b-instruct")
    status.first.wait_for(timeout=TIMEOUT_MS)  # the st.status box of the load
    caption = page.locator('[data-testid="stChatMessage"] [data-testid="stCaptionContainer"]')
    caption.first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page, TIMEOUT_MS)
    answer = page.locator('[data-testid="stChatMessage"]').last.inner_text()
    assert "This is llama-3.2-3b-instruct on the demo host. You asked: hello from the browser" in answer
    assert LOCAL_MODEL in caption.first.inner_text()
    seen: list[str] = page.evaluate("window.__seen")
    partial = [text for text in seen if "This is" in text and "hello from the browser" not in text.split("asked:")[-1]]
    assert partial, "no partial answer was ever shown: the answer did not stream"


def test_when_the_chosen_model_fails_another_answers_and_a_notice_says_so(fallback: Console, page: Any) -> None:
    open_page(page, fallback.url, "chat")
    choose(page, "chat_model", "openai:gpt-4.1-mini")
    send(page, "are you there")
    notice = page.locator('[data-testid="stChatMessage"]').filter(has_text="🔀")
    page.locator('[data-testid="stChatMessage"] [data-testid="stCaptionContainer"]').first.wait_for(
        timeout=TIMEOUT_MS)
    wait_idle(page, TIMEOUT_MS)
    answer = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
    assert ANSWER.format(model="mistral-small-latest") in answer
    assert "mistral:mistral-small-latest" in notice.last.inner_text()
    assert "openai:gpt-4.1-mini" in notice.last.inner_text()


def test_the_models_page_shows_the_table_and_every_chart(seeded: Console, page: Any) -> None:
    open_page(page, seeded.url, "models")
    table = main(page).locator('[data-testid="stDataFrame"]').first
    assert table.is_visible()
    cells = table.locator("table").text_content()  # the grid's accessible table (the pixels are a canvas)
    assert "lmstudio:qwen2.5-7b-instruct" in cells and "openai:gpt-4.1-mini" in cells
    charts = main(page).locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
    charts.nth(4).wait_for(timeout=TIMEOUT_MS)
    assert charts.count() == 5  # latency, distribution, time to first token, outcomes, fallbacks


def test_no_page_reports_a_browser_console_error(seeded: Console, watched: Watched) -> None:
    for path in ("", "chat", "models", "keys"):
        open_page(watched.page, seeded.url, path)
        assert main(watched.page).get_by_role("heading").first.is_visible()
    assert watched.errors == []


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
    assert page.locator('[data-testid="stSidebarNav"]').get_by_role("link").count() == 4
