"""The frame and the overview: every page renders, the sidebar shows hosts and ready models, newcomers get help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import respx

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import lmstudio_down, seed_metrics, start, texts
from tests.helpers import LMSTUDIO, lmstudio_models

PAGES = ["app_pages/overview.py", "app_pages/chat.py", "app_pages/models.py", "app_pages/keys.py"]


def test_navigation_renders_every_page(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    at = start()
    assert not at.exception
    assert [t.value for t in at.title] == ["🏠 Overview"]
    for page, title in zip(PAGES[1:], ["💬 Chat", "🧠 Models", "🔑 API keys"], strict=False):
        at.switch_page(page).run()
        assert not at.exception, page
        assert [t.value for t in at.title] == [title]
        assert "🔴 LM Studio: not reachable" in [m.value for m in at.sidebar.markdown]  # the frame stays


def test_overview_tells_a_newcomer_what_to_do_next(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    at = start()
    assert not at.exception and not at.error
    shown = "\n".join(texts(at))
    assert "Getting started" in shown
    assert "start LM Studio and its local server" in shown and "No API key yet" in shown
    assert "🔴 LM Studio: not reachable" in shown
    assert {link.label for link in at.get("page_link")} >= {"Chat with a model", "Manage API keys"}


def test_sidebar_shows_host_reachability_and_ready_models(wire: respx.MockRouter, with_openai_key: str,
                                                          core: Callable[[], Orchestrator]) -> None:
    wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=lmstudio_models({"qwen": True, "llama": False}))
    seed_metrics(core())
    at = start()
    assert not at.exception
    sidebar = [m.value for m in at.sidebar.markdown]
    assert "🟢 LM Studio: 1 loaded of 2" in sidebar
    # ready: the loaded local model and the seeded OpenAI model with its env key
    assert "**2** of 6 ready" in sidebar
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Models ready"] == "2 / 6" and metrics["Local models loaded"] == "1"
    assert metrics["Calls, last hour"] == "23" and metrics["Errors, last hour"] == "2"
    assert metrics["Answered by a fallback"] == "1"
    assert "Getting started" not in texts(at)


def test_startup_error_is_a_page_that_says_what_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      wire: respx.MockRouter) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    at = start()
    assert not at.exception
    assert [t.value for t in at.title] == ["The console cannot start"]
    assert "does not exist" in at.error[0].value
    assert "DATABASE_URL" in at.info[0].value
