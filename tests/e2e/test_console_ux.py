"""The console in a real browser: headless Debian Chromium driven by Playwright against `streamlit run`.

Self-contained: a loopback stand-in LM Studio (docs/demo_host.py's handler, its model states changed by the
tests), a Streamlit server on a free 127.0.0.1 port with a temp database, and one browser page per test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.helpers import stop_process

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Page, expect  # noqa: E402 - after the importorskip above

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's /usr/bin/chromium")
TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_host_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_demo_host", ROOT / "docs" / "demo_host.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def host() -> Iterator[ModuleType]:
    """A stand-in LM Studio on a free port; tests change `host.MODELS` (name -> loaded) and LOAD_SECONDS."""
    module = demo_host_module()
    module.MODELS.clear()
    module.MODELS.update({"alpha-model": True, "beta-model": False, "gamma-model": False})
    module.LOAD_SECONDS = 1.0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), module.Host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    module.PORT = server.server_address[1]
    yield module
    server.shutdown()
    server.server_close()


@pytest.fixture
def console(host: ModuleType, tmp_path: Path) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free port, pointed at the stand-in host; its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and
           k not in ("CONSOLE_PASSWORD", "OIDC_ISSUER", "LM_API_TOKEN")}
    env.update({
        "DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
        "ORCHESTRATOR_SECRET_KEY": "",
        "LOCAL_HOSTS": "lmstudio",
        "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{host.PORT}",
        "STATUS_CACHE_TTL_S": "0.3",
        "POLL_INTERVAL_S": "0.2",
        "LOAD_TIMEOUT_S": "30",
    })
    env.pop("ORCHESTRATOR_SECRET_KEY")
    (tmp_path / "data").mkdir()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    # cwd is the temp folder, so data/secret.key and any .env are the test's own.
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def page(console: str, browser: Any) -> Iterator[Page]:
    # The session's one browser (tests/e2e/conftest.py): a second sync_playwright in the same worker fails.
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(TIMEOUT_MS)
    tab.base_url = console  # type: ignore[attr-defined]
    yield tab
    context.close()
    assert not errors, errors


def open_page(page: Page, path: str) -> None:
    page.goto(f"{page.base_url}/{path}")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-testid='stMain'] h1", timeout=60_000)  # the page's title: the script ran
    settle(page)


def settle(page: Page) -> None:
    """Wait until the script run is over (Streamlit marks the app "running" while a script runs)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') || "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)


def pick(page: Page, label: str, option: str) -> None:
    """Choose an option in the selectbox labelled `label` by the text its entry shows."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option").filter(has_text=option).first.click()
    settle(page)


def picker_text(page: Page, label: str) -> str:
    """What the selectbox shows as chosen (its combobox input)."""
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def send(page: Page, prompt: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


def wait_for_answer(page: Page, count: int) -> Any:
    """The `count`-th answer from the demo host ("This is <model> on the demo host…")."""
    answers = page.get_by_text(re.compile(r"This is [\w.-]+ on the demo host"))
    expect(answers).to_have_count(count, timeout=TIMEOUT_MS)
    return answers.nth(count - 1).inner_text()


# -- 1. the model picker keeps its choice ----------------------------------------------------------------
def test_chat_picker_keeps_the_chosen_model_after_it_loads_and_its_status_changes(page: Page) -> None:
    open_page(page, "chat")
    pick(page, "Model", "lmstudio:gamma-model")
    for turn in range(1, 4):  # not loaded -> loaded on send -> loaded; the status cache expires between turns
        send(page, f"prompt {turn}")
        assert "This is gamma-model" in wait_for_answer(page, turn)
        settle(page)
        assert "lmstudio:gamma-model" in picker_text(page, "Model")
        page.wait_for_timeout(800)


def test_models_action_picker_keeps_the_chosen_model_after_a_load(page: Page) -> None:
    open_page(page, "models")
    pick(page, "Model", "lmstudio:beta-model")
    page.get_by_role("button", name="Load and wait").click()
    expect(page.get_by_text("lmstudio:beta-model is loaded")).to_be_visible()
    settle(page)
    page.wait_for_timeout(800)
    for _ in range(2):  # the browser sends its stale label on the second run after the status changed
        page.get_by_role("button", name="Reset failure", exact=True).click()
        settle(page)
        expect(page.get_by_text("lmstudio:beta-model had no failure").first).to_be_visible()
        assert "lmstudio:beta-model" in picker_text(page, "Model")


# -- 2, 3. a running reply shows Stop, keeps the input off, and stops when asked -------------------------
def test_a_running_reply_disables_the_input_and_stop_ends_the_load_wait(page: Page, host: ModuleType) -> None:
    host.LOAD_SECONDS = 8.0
    open_page(page, "chat")
    pick(page, "Model", "lmstudio:beta-model")
    send(page, "slow one")
    stop = page.get_by_role("button", name="⏹️ Stop")
    expect(stop).to_be_visible()
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()  # no second prompt can drop this one
    stop.click()
    expect(page.get_by_text("Stopped before the first word")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_enabled()
    expect(page.get_by_text("slow one", exact=True)).to_be_visible()  # the prompt is still in the conversation


# -- 5. the reply is drawn above the input, not below it ---------------------------------------------------
def test_a_running_reply_is_drawn_above_the_chat_input(page: Page, host: ModuleType) -> None:
    host.LOAD_SECONDS = 6.0
    open_page(page, "chat")
    pick(page, "Model", "lmstudio:beta-model")
    send(page, "where does this go")
    loading = page.get_by_test_id("stChatMessage").filter(has_text="Loading lmstudio:beta-model")
    expect(loading).to_be_visible()
    reply_box = loading.bounding_box()
    input_box = page.get_by_test_id("stChatInput").bounding_box()
    assert reply_box is not None and input_box is not None
    assert reply_box["y"] + reply_box["height"] <= input_box["y"]  # below it was the first run's layout
    page.get_by_role("button", name="⏹️ Stop").click()
    settle(page)


# -- 4. compare answers the first click after typing -----------------------------------------------------
def test_compare_runs_on_the_first_click_after_typing(page: Page) -> None:
    open_page(page, "chat")
    page.get_by_role("tab", name="Compare models").click()
    chooser = page.get_by_role("combobox", name="Models (2–4)")
    for model in ("lmstudio:alpha-model", "lmstudio:beta-model"):
        chooser.click()
        page.get_by_role("option").filter(has_text=model).first.click()
        settle(page)
    page.keyboard.press("Escape")
    page.get_by_label("Prompt", exact=True).fill("compare me")
    page.get_by_role("button", name="Compare").click()  # straight after typing: no blur rerun in between
    expect(page.get_by_text(re.compile("This is alpha-model on the demo host"))).to_be_visible()
    expect(page.get_by_text(re.compile("This is beta-model on the demo host"))).to_be_visible()


def test_models_load_and_wait_can_be_cancelled_and_says_the_host_keeps_loading(
        page: Page, host: ModuleType) -> None:
    host.LOAD_SECONDS = 8.0
    open_page(page, "models")
    pick(page, "Model", "lmstudio:beta-model")
    page.get_by_role("button", name="Load and wait").click()
    cancel = page.get_by_role("button", name="Cancel the wait")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.get_by_text("Stopped waiting for lmstudio:beta-model. The host keeps loading it").first).to_be_visible()
    expect(page.get_by_text("lmstudio:beta-model is loaded")).to_have_count(0)
