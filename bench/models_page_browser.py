"""Benchmark: the Models page in a real browser over a million call metrics. Prints figures; asserts nothing.

    python bench/models_page_browser.py --db PATH [--runs 5] [--shots DIR]

PATH is a database seeded by bench/models_page.py (its --db). A copy of it is served by `streamlit run` (the
e2e machinery, Debian's chromium); each figure is the time from a click to the page being idle again, as
tests/e2e/ui.wait_idle sees it. With --shots, screenshots of the Models and Usage pages at 1400 and 390 px.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright

from tests.e2e.conftest import CHROMIUM_ARGS, running_console
from tests.e2e.ui import choose, main, open_page, wait_idle


def timed(page: Any, act: Callable[[], object], runs: int) -> float:
    """Median ms from an action to the page being idle again."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        act()
        page.wait_for_timeout(50)  # the click's rerun starts: wait_idle must not see the state before it
        wait_idle(page)
        times.append((time.perf_counter() - started) * 1000 - 50)
    return statistics.median(times)


def main_() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shots", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bench.db"
        shutil.copyfile(args.db, copy)
        with sqlite3.connect(copy) as conn:
            conn.execute("DELETE FROM app_meta")  # the seeding run's secret verifier: this console has its own
        with running_console(DATABASE_URL=f"sqlite:///{copy}", LOCAL_HOSTS="") as console, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            started = time.perf_counter()
            open_page(page, console.url, "models")
            opened = (time.perf_counter() - started) * 1000
            main(page).locator('[data-testid="stDataFrame"]').first.wait_for()
            reset = main(page).get_by_role("button", name="Reset failure", exact=True).first
            choices = iter(["10 s", "5 s"] * args.runs)
            figures = {
                "Models: open (from the overview)": opened,
                "Models: Reset failure (table action)": timed(page, reset.click, args.runs),
                "Models: change auto-refresh": timed(
                    page, lambda: choose(page, "models_interval", next(choices)), args.runs),
            }
            print(f"\n{'browser, click to idle':<40} {'median ms':>10}")
            for label, ms in figures.items():
                print(f"{label:<40} {ms:>10.0f}", flush=True)
            if args.shots:
                shots(browser, console.url, args.shots)
            browser.close()


def shots(browser: Any, url: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for width in (1400, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(120_000)
        for path in ("models", "usage"):
            page.goto(f"{url}/{path}")  # a phone's sidebar is folded away: straight to the page
            page.locator('[data-testid="stMain"] h1').first.wait_for()
            wait_idle(page)
            if path == "usage":
                page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first.wait_for()
                wait_idle(page)
            page.screenshot(path=folder / f"{path}_{width}.png", full_page=True)
        page.close()


if __name__ == "__main__":
    main_()
