"""The chat page in a real browser: check-and-load, streaming, fallback."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import LOCAL_MODEL, TIMEOUT_MS, Console, record_chat_text, send
from tests.e2e.ui import choose, open_page, wait_idle
from tests.standins import ANSWER


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
