"""API keys page: keys grouped by connection, the pool mode, each key's state, Test all of one pool."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import all_values, lmstudio_down, start
from tests.helpers import OPENAI

GROQ = "https://api.groq.example/openai/v1"
FIRST = "gsk-first-PLAINTEXT-000000000-aaaa"
SECOND = "gsk-second-PLAINTEXT-00000000-bbbb"
OPENAI_KEY = "sk-openai-PLAINTEXT-000000000-cccc"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


@pytest.fixture
def pools(core: Callable[[], Orchestrator]) -> Orchestrator:
    orch = core()
    orch.add_connection("groq", "openai-compatible", base_url=GROQ)
    orch.add_key("groq", "first", FIRST)
    orch.add_key("groq", "second", SECOND)
    orch.add_key("openai", "work", OPENAI_KEY)
    return orch


def tables(at: AppTest) -> dict[str, list[dict[str, object]]]:
    """Each pool's rows, by the connection named in the bold title above its table."""
    titles = [m.value.strip("*").split(" · ")[0] for m in at.markdown if " · " in m.value and m.value.startswith("**")]
    frames = [f.value.to_dict("records") for f in at.dataframe if "State" in f.value.columns]
    return dict(zip(titles, frames, strict=True))


def test_keys_are_grouped_by_connection_with_the_pool_mode(pools: Orchestrator) -> None:
    at = start("app_pages/keys.py")
    assert not at.exception
    shown = tables(at)
    assert sorted(shown) == ["OpenAI (openai)", "groq (Custom OpenAI-compatible)"]
    groq = shown["groq (Custom OpenAI-compatible)"]
    assert [r["Label"] for r in groq] == [k.label for k in pools.keys_of("groq")]  # the pool's order
    assert sorted(r["Label"] for r in groq) == ["first", "second"]
    assert all(r["State"] == "· untested" and r["Last used"] == "never" for r in groq)
    assert any("2 keys · ordered" in m.value for m in at.markdown)
    text = all_values(at)
    assert all(secret not in text for secret in (FIRST, SECOND, OPENAI_KEY)) and "PLAINTEXT" not in text


def test_a_cooling_key_shows_its_state_until_and_error(pools: Orchestrator, core: Callable[[], Orchestrator]) -> None:
    first = next(k for k in pools.keys_of("groq") if k.label == "first")
    pools.keys.record_fault(first.id, "cooling", "Rate limited by groq; retry after 30 s.", 30.0)
    at = start("app_pages/keys.py")
    groq = next(rows for title, rows in tables(at).items() if title.startswith("groq"))
    row = next(r for r in groq if r["Label"] == "first")
    assert row["State"] == "⏸️ cooling"
    assert row["Cooling until"]
    assert row["Last error"] == "Rate limited by groq; retry after 30 s."


def test_the_pool_mode_is_changed_on_the_page(pools: Orchestrator, core: Callable[[], Orchestrator]) -> None:
    at = start("app_pages/keys.py")
    at = at.selectbox(key="pool_mode_groq").set_value("round-robin").run()
    assert not at.exception
    assert core().connection("groq").key_mode.value == "round-robin"
    assert any("groq now uses its keys in turn" in s.value for s in at.success)


def test_test_all_of_one_pool_tests_only_its_keys(pools: Orchestrator, wire: respx.MockRouter) -> None:
    groq = wire.get(f"{GROQ}/models").mock(side_effect=[
        httpx.Response(200, json={"data": [{"id": "llama"}]}),
        httpx.Response(401, json={"error": {"message": "invalid key"}})])
    openai = wire.get(f"{OPENAI}/models").respond(json={"data": []})
    at = start("app_pages/keys.py")
    at = at.button(key="key_test_pool_groq").click().run()
    assert not at.exception
    assert at.info[0].value == "Tested 2 keys: 1 OK, 1 rejected, 0 could not be verified."
    assert groq.call_count == 2 and openai.call_count == 0
    states = sorted(str(r["State"]) for r in next(rows for t, rows in tables(at).items() if t.startswith("groq")))
    assert states == sorted(["❌ rejected", "✅ ok"])
