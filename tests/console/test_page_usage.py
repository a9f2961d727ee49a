"""Usage page: the charts over the call metrics and the CSV export."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta

import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import lmstudio_down, seed_metrics, start, texts


def usage_page() -> AppTest:
    return start("app_pages/usage.py")


def test_charts_render_from_seeded_metrics(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    seed_metrics(core())
    at = usage_page()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # latency, distribution, time to first token, outcomes, fallback flows
    assert not any("No calls in this range" in t for t in texts(at))
    download = at.get("download_button")[0]
    assert download.label == "Download metrics as CSV" and not download.disabled


def test_a_range_without_calls_shows_a_hint_not_an_error(wire: respx.MockRouter,
                                                         core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    seed_metrics(core(), now=time.time() - 3 * 86400)  # three days ago: outside the last hour and 24 h
    at = usage_page()
    assert not at.exception and not at.get("plotly_chart")
    assert any(t.startswith("No calls in this range yet") for t in texts(at))
    at.radio(key="chart_range").set_value("Last 7 days").run()
    assert len(at.get("plotly_chart")) == 5


def test_custom_range_covers_whole_days(wire: respx.MockRouter, core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    seed_metrics(core(), now=time.time() - 10 * 86400)
    at = usage_page()
    at.radio(key="chart_range").set_value("Custom").run()
    assert not at.get("plotly_chart")  # default custom range: the last 7 days
    today = date.today()
    at.date_input(key="chart_dates").set_value((today - timedelta(days=12), today)).run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
