"""The models page and every page's browser console, on a database with a day of metrics."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import TIMEOUT_MS, Console, Watched
from tests.e2e.ui import main, open_page


def test_the_models_page_shows_the_table_and_the_usage_page_every_chart(seeded: Console, page: Any) -> None:
    open_page(page, seeded.url, "models")
    table = main(page).locator('[data-testid="stDataFrame"]').first
    assert table.is_visible()
    cells = table.locator("table").text_content()  # the grid's accessible table (the pixels are a canvas)
    assert "lmstudio:qwen2.5-7b-instruct" in cells and "openai:gpt-4.1-mini" in cells
    assert main(page).locator('[data-testid="stPlotlyChart"]').count() == 0  # the charts are on Usage
    open_page(page, seeded.url, "usage")
    charts = main(page).locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
    charts.nth(4).wait_for(timeout=TIMEOUT_MS)
    assert charts.count() == 5  # latency, distribution, time to first token, outcomes, fallbacks


def test_no_page_reports_a_browser_console_error(seeded: Console, watched: Watched) -> None:
    for path in ("", "chat", "models", "usage", "keys"):
        open_page(watched.page, seeded.url, path)
        assert main(watched.page).get_by_role("heading").first.is_visible()
    assert watched.errors == []
