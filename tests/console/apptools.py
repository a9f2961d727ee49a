"""Helpers for the console's AppTest tests: start the app on a page, seed metrics, collect rendered text."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import MetricRow

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"


def lmstudio_down(router: respx.MockRouter) -> None:
    router.route(host="127.0.0.1", port=1234).mock(side_effect=httpx.ConnectError("refused"))


def start(page: str | None = None, **state: Any) -> AppTest:
    """Run the app, then switch to a page file and run that too."""
    at = AppTest.from_file(APP, default_timeout=10)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    return at


def seed_metrics(orch: Orchestrator, now: float | None = None) -> None:
    """A few minutes of calls: successes with latency and TTFT, errors, a fallback."""
    now = now or time.time()
    rows = []
    for i in range(20):
        rows.append(MetricRow(model="openai:gpt-4.1-mini", outcome="ok", latency_ms=200 + i * 10, ttft_ms=50 + i,
                              request_id=f"r{i}", prompt_tokens=5, completion_tokens=7, streamed=True,
                              ts=now - 600 + i * 20))
    rows.append(MetricRow(model="lmstudio:qwen", outcome="error", latency_ms=15, error_kind="unavailable",
                          error="Cannot reach lmstudio", request_id="fb", ts=now - 120))
    rows.append(MetricRow(model="openai:gpt-4.1-mini", outcome="ok", latency_ms=300, request_id="fb",
                          requested_model="lmstudio:qwen", fallback_from="lmstudio:qwen", ts=now - 119))
    rows.append(MetricRow(model="anthropic:claude-haiku-4-5", outcome="error", latency_ms=40, error_kind="rate_limit",
                          error="slow down", request_id="rl", ts=now - 60))
    for row in rows:
        orch.metrics.record(row)
    orch.metrics.flush()


def texts(at: AppTest) -> list[str]:
    """Every text-bearing element value on the page (markdown, captions, alerts, titles…)."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader", "text",
             "toast", "code")
    values: list[str] = []
    for kind in kinds:
        values.extend(str(e.value) for e in at.get(kind))
    return values


def all_values(at: AppTest) -> str:
    """Everything rendered, widget values and dataframes included, as one string (for "no secret shown")."""
    parts = texts(at)
    for kind in ("text_input", "text_area", "selectbox", "multiselect", "chat_input"):
        for widget in at.get(kind):
            parts.append(str(widget.value))
            parts.extend(str(o) for o in getattr(widget, "options", []) or [])
    for frame in at.dataframe:
        parts.append(frame.value.to_csv())
    for status in at.status:
        parts.append(str(status.label))
    return "\n".join(parts)


def shown(markdown: str) -> str:
    """What CommonMark displays for Markdown whose only syntax is backslash escapes (views.plain's output)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)
