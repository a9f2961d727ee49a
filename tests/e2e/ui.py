"""Stable ways to drive the console in a browser: keyed widgets (`st-key-<key>`), roles, the script state."""

from __future__ import annotations

from typing import Any

# Streamlit marks its app root with the script run state ("running" while a rerun is under way), and shows
# skeletons while an element's lazily loaded code arrives.
_IDLE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app !== null && app.dataset.testScriptState === 'notRunning'
      && app.dataset.testConnectionState === 'CONNECTED'
      && document.querySelector('[data-testid="stStatusWidgetRunningIcon"]') === null
      && document.querySelector('[data-testid^="stSkeleton"], [data-testid="stAppSkeleton"]') === null;
}"""


def wait_idle(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until the script run has finished and the app is connected."""
    page.wait_for_function(_IDLE, timeout=timeout_ms)


def open_page(page: Any, base_url: str, path: str = "") -> None:
    """Open the console and go to a page (``""`` is the overview) through the sidebar, as a user does.

    (Loading a deep URL such as /chat directly makes Streamlit's frontend probe /chat/_stcore/... first,
    which the browser logs as 404 errors: a Streamlit behaviour, not the console's.)
    """
    page.goto(base_url)
    page.locator('[data-testid="stMain"] h1').first.wait_for()  # the first run has drawn the page title
    wait_idle(page)
    if path:
        page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').click()
        page.wait_for_url(f"**/{path}")
        page.locator('[data-testid="stMain"] h1').first.wait_for()
        wait_idle(page)


def keyed(page: Any, key: str) -> Any:
    """The element of the widget created with ``key=key``."""
    return page.locator(f".st-key-{key}")


def main(page: Any) -> Any:
    """The page's main area (not the sidebar)."""
    return page.locator('[data-testid="stMain"]')


def choose(page: Any, key: str, option_text: str) -> None:
    """Pick an option of the selectbox created with ``key=key`` by (part of) its visible text."""
    keyed(page, key).get_by_role("combobox").click()
    page.get_by_role("option").filter(has_text=option_text).first.click()
    wait_idle(page)
