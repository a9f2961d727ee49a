"""Browser tests: Debian's Chromium driven by Playwright against a real `streamlit run` with loopback stand-ins.

`playwright install` is never called: the browser is the system's chromium. Every page a test opens is
watched for browser console errors and uncaught exceptions; a test fails if any appears.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import parts
from tests.e2e.console_server import base_env, start_console, start_demo_lmstudio
from tests.e2e.ui import keyed
from tests.standins import openai_standin

E2E_KEY = "sk-e2e-standin-0123456789abcdefWXYZ"
LOCAL_MODEL = "lmstudio:llama-3.2-3b-instruct"  # listed but not loaded by the demo LM Studio
TIMEOUT_MS = 60_000

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        parts.unavailable("e2e", "chromium not found on PATH (install it: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        parts.unavailable("e2e", "the playwright package is not installed (pip install -r requirements.txt)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as error:
            parts.unavailable("e2e", f"chromium did not start: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


@dataclass
class Watched:
    """A browser page plus every console error and uncaught exception it produced."""

    page: Any
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    result = Watched(page)
    page.on("console", lambda message: result.errors.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: result.errors.append(f"page error: {error}"))
    yield result
    context.close()
    assert result.errors == [], "the browser reported errors"


@pytest.fixture
def page(watched: Watched) -> Any:
    return watched.page


@dataclass
class Console:
    url: str
    home: Path
    env: dict[str, str]
    lmstudio_url: str | None = None


@contextmanager
def running_console(*, lmstudio: bool = False, seed_rows: int = 0, **settings: str) -> Iterator[Console]:
    """A console process (and optionally the demo LM Studio) in a fresh home with a fresh database."""
    home = Path(tempfile.mkdtemp(prefix="orchestrator-e2e-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, home, True)
        env = base_env(home, **settings)
        lmstudio_url = None
        if lmstudio or seed_rows:
            demo, lmstudio_url = start_demo_lmstudio(home, env, seed_rows)
            stack.callback(demo.stop)
            env["LMSTUDIO_BASE_URL"] = lmstudio_url
        server, url = start_console(home, env)
        stack.callback(server.stop)
        yield Console(url, home, env, lmstudio_url)


# -- the consoles the tests run against (one per test module) -------------------------------------
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
