"""Usage: charts over the call metrics (latency, time to first token, outcomes, fallbacks) and the CSV export.

On a page of their own: five Plotly figures redrawn on every Models page action made each action take over a
second; here only a change of the range redraws them.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import streamlit as st

from console import charts, state, views

orch = state.orchestrator()
st.title("📈 Usage")


def metrics_csv(since: float, until: float) -> str:
    columns, rows = orch.export_metrics(since, until)
    return views.csv_text(rows, columns)


def chart(figure_rows: list[dict[str, Any]], build: Any, key: str, empty: str) -> None:
    if figure_rows:
        st.plotly_chart(build(figure_rows), key=key, width="stretch")
    else:
        st.info(empty)


def pick_range() -> views.TimeRange:
    pick = st.columns([3, 2])
    range_choice = pick[0].radio("Time range", list(views.RANGES), horizontal=True, key="chart_range")
    custom: tuple[date, ...] = ()
    if range_choice == "Custom":
        today = date.today()
        picked: Any = pick[1].date_input("From – to", value=(today - timedelta(days=7), today), key="chart_dates")
        custom = tuple(picked) if isinstance(picked, (tuple, list)) else (picked,)
    return views.resolve_range(range_choice, state.minute_now(), custom)


def draw(since: float, until: float, bucket: int) -> None:
    st.caption(f"Time buckets of {timedelta(seconds=bucket)}; aggregated in the database.")
    row = st.columns(2)
    with row[0]:
        chart(state.metric(orch, "latency_series", since, until, bucket),
              lambda r: charts.percentile_series(r, "Latency over time (p50 / p95)"),
              "chart_latency", "No successful calls in this range.")
    with row[1]:
        chart(state.metric(orch, "latency_histogram", since, until), charts.latency_distribution,
              "chart_histogram", "No successful calls in this range.")
    row = st.columns(2)
    with row[0]:
        chart(state.metric(orch, "ttft_series", since, until, bucket),
              lambda r: charts.percentile_series(r, "Time to first token (p50 / p95)"),
              "chart_ttft", "No streamed answers in this range, so no time to first token.")
    with row[1]:
        chart(state.metric(orch, "calls_by_outcome", since, until), charts.calls_by_outcome, "chart_outcomes",
              "No calls in this range.")
    chart(state.metric(orch, "fallback_flows", since, until), charts.fallback_sankey, "chart_fallbacks",
          "No fallbacks in this range.")


@st.fragment
def metric_charts() -> None:
    """Charts and the CSV export; changing the range reruns only this part."""
    window = pick_range()
    since, until = window.since, window.until
    outcomes = state.metric(orch, "calls_by_outcome", since, until)
    if not outcomes:
        st.info("No calls in this range yet. Send a prompt on the Chat page, or pick a longer range.")
    else:
        draw(since, until, views.bucket_seconds(window.span_s))
    st.download_button(
        "Download metrics as CSV",
        # Built only when clicked: a week of calls can be a large file.
        data=lambda: metrics_csv(since, until),
        file_name=f"call_metrics_{int(since)}_{int(until)}.csv",
        mime="text/csv",
        on_click="ignore",
        key="metrics_csv",
        disabled=not outcomes,
    )


metric_charts()
