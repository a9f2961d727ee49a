"""(Re)write docs/screenshots/*.png from the current console, with the browser-test machinery.

    .venv/bin/python scripts/screenshots.py        # or: make screenshots

A real `streamlit run` with the demo LM Studio (docs/demo_host.py, a day of seeded metrics), stand-in
OpenAI and Mistral APIs on loopback, Debian's chromium through Playwright.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright

from tests.e2e.conftest import CHROMIUM_ARGS, running_console
from tests.e2e.ui import choose, keyed, main, open_page, wait_idle
from tests.standins import openai_standin

OUT = REPO / "docs" / "screenshots"
KEY = "sk-demo-standin-0123456789abcdWXYZ"


def main_() -> None:
    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("chromium not found on PATH (apt-get install chromium)")
    with openai_standin(key=KEY) as openai, openai_standin(models=("mistral-small-latest",)) as mistral, \
            running_console(seed_rows=3000, OPENAI_BASE_URL=openai.base_url, MISTRAL_BASE_URL=mistral.base_url,
                            MISTRAL_API_KEY="mistral-demo-key-0123456789") as console, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        OUT.mkdir(parents=True, exist_ok=True)
        open_page(page, console.url)
        page.screenshot(path=OUT / "overview.png", full_page=True)
        open_page(page, console.url, "keys")
        choose(page, "new_key_provider", "(openai)")
        keyed(page, "new_key_label").locator("input").fill("work")
        keyed(page, "new_key_value").locator("input").fill(KEY)
        page.get_by_role("button", name="Save key").click()
        wait_idle(page)
        page.screenshot(path=OUT / "keys.png", full_page=True)
        open_page(page, console.url, "connections")
        choose(page, "new_conn_kind", "(lmstudio)")
        keyed(page, "new_conn_name").locator("input").fill("desk")
        keyed(page, "new_conn_url").locator("input").fill(str(console.lmstudio_url))
        page.get_by_role("button", name="Add connection").click()
        wait_idle(page)
        keyed(page, "conn_test_button").get_by_role("button").click()
        main(page).get_by_text("Reachable: yes").wait_for()
        wait_idle(page)
        page.set_viewport_size({"width": 1400, "height": 1500})  # the table, the Test result and the Add form
        main(page).get_by_role("heading", name="Connections").first.evaluate("e => e.scrollIntoView()")
        page.screenshot(path=OUT / "connections.png")
        page.set_viewport_size({"width": 1400, "height": 900})
        open_page(page, console.url, "chat")
        choose(page, "chat_model", "lmstudio:llama-3.2-3b-instruct")
        prompt = keyed(page, "chat_prompt").locator("textarea")
        prompt.fill("What can you do?")
        prompt.press("Enter")
        page.locator('[data-testid="stChatMessage"] [data-testid="stCaptionContainer"]').first.wait_for()
        wait_idle(page)
        page.screenshot(path=OUT / "chat.png", full_page=True)
        open_page(page, console.url, "models")
        main(page).locator('[data-testid="stDataFrame"]').first.wait_for()
        wait_idle(page)
        page.screenshot(path=OUT / "models.png", full_page=True)
        open_page(page, console.url, "usage")
        page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').nth(4).wait_for()
        wait_idle(page)
        page.screenshot(path=OUT / "charts.png", full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.set_default_timeout(60_000)
        phone.goto(f"{console.url}/models")  # a phone's sidebar is folded away: straight to the page
        main(phone).locator('[data-testid="stDataFrame"]').first.wait_for()
        wait_idle(phone)
        phone.screenshot(path=OUT / "models_phone.png", full_page=True)
        browser.close()
    for name in ("overview", "keys", "connections", "chat", "models", "charts", "models_phone"):
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main_()
