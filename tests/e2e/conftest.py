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
