"""The frame and the overview: every page renders, the sidebar shows hosts and ready models, newcomers get help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import respx

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import lmstudio_down, seed_metrics, start, texts
from tests.helpers import LMSTUDIO, lmstudio_models

PAGES = ["app_pages/overview.py", "app_pages/chat.py", "app_pages/models.py", "app_pages/usage.py",
         "app_pages/spend.py", "app_pages/keys.py"]
NEVER_UP = "⚪ LM Studio: not running (never seen up)"


def test_navigation_renders_every_page(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    at = start()
    assert not at.exception
    assert [t.value for t in at.title] == ["🏠 Overview"]
    for page, title in zip(PAGES[1:], ["💬 Chat", "🧠 Models", "📈 Usage", "💰 Spend", "🔑 API keys"], strict=True):
        at.switch_page(page).run()
        assert not at.exception, page
        assert [t.value for t in at.title] == [title]
        assert NEVER_UP in [m.value for m in at.sidebar.markdown]  # the frame stays


def test_overview_tells_a_newcomer_what_to_do_next(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)
    at = start()
    assert not at.exception and not at.error
    shown = "\n".join(texts(at))
    assert "Getting started" in shown
    assert "start LM Studio and its local server" in shown and "No API key yet" in shown
    assert NEVER_UP in shown
    assert {link.label for link in at.get("page_link")} >= {"Chat with a model", "Manage API keys"}
    assert {"Add a key on the API keys page", "Add a host on the Connections page"} <= {
        link.label for link in at.get("page_link")}  # the steps are links


def test_a_host_seen_up_before_is_red_when_down_and_one_never_seen_is_folded_away(
        wire: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, core: Callable[[], Orchestrator]) -> None:
    monkeypatch.setenv("LOCAL_HOSTS", "lmstudio,ollama")
    lmstudio_down(wire)
    core().registry.sync_discovered("lmstudio", ["qwen"])  # LM Studio listed a model once: it was up before
    at = start()
    assert not at.exception
    sidebar = [m.value for m in at.sidebar.markdown]
    assert "🔴 LM Studio: not reachable" in sidebar and "⚪ not running: Ollama" in sidebar
    assert not any(line.startswith("🔴 Ollama") for line in sidebar)
    hint = next(i.value for i in at.info if "never answered here" in i.value)
    assert hint.startswith("Ollama never answered here") and "LOCAL_HOSTS=lmstudio " in hint


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
