"""Every local-host connection is listed by its name in the sidebar and on the overview."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import respx

from console import views
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.types import ModelFacts
from tests.console.apptools import lmstudio_down, start, texts
from tests.helpers import LMSTUDIO, other_hosts_down, settings

DESK = "http://192.0.2.20:1234"


def test_two_lm_studio_hosts_are_listed_by_connection_name(wire: respx.MockRouter,
                                                           core: Callable[[], Orchestrator]) -> None:
    lmstudio_down(wire)
    wire.get(f"{DESK}/api/v1/models").mock(return_value=httpx.Response(200, json={"models": [
        {"type": "llm", "key": "qwen2.5-7b-instruct", "display_name": "Qwen", "loaded_instances": [{"id": "q"}]},
    ]}))
    core().add_connection("desk", "lmstudio", base_url=DESK)
    at = start()
    assert not at.exception
    lines = [t for t in texts(at) if "LM Studio" in t]
    assert any(t.startswith("🟢 desk (LM Studio)") for t in lines), lines
    assert any(t.startswith("⚪ LM Studio: not running (never seen up)") for t in lines), lines
    hint = next(i.value for i in at.info if "never answered here" in i.value)
    assert "LOCAL_HOSTS= " in hint and "desk" not in hint  # LOCAL_HOSTS names seeded hosts only
    overview = [t for t in texts(at) if "desk (LM Studio)" in t]
    assert len(overview) >= 2  # the sidebar and the overview's Local hosts


def test_two_lm_studio_connections_keep_their_model_facts_and_group_apart_in_the_picker(db_url: str) -> None:
    def listing(size: int, context: int) -> dict[str, object]:
        return {"models": [{"type": "llm", "key": "qwen2.5-7b-instruct", "size_bytes": size,
                            "max_context_length": 32768,
                            "loaded_instances": [{"id": "q", "config": {"context_length": context}}]}]}

    with respx.mock(assert_all_called=False) as wire:
        other_hosts_down(wire)
        wire.get(f"{LMSTUDIO}/api/v1/models").respond(json=listing(4_000_000_000, 4096))
        wire.get(f"{DESK}/api/v1/models").respond(json=listing(8_000_000_000, 8192))
        with Orchestrator.from_settings(settings(db_url, env_keys={"openai": "sk-test-0123456789abcdef"})) as orch:
            orch.add_connection("desk", "lmstudio", base_url=DESK)
            statuses = {s.model_id: s for s in orch.statuses(force=True)}

    assert statuses["lmstudio:qwen2.5-7b-instruct"].facts == ModelFacts(
        size_bytes=4_000_000_000, context_length=4096, max_context_length=32768)
    assert statuses["desk:qwen2.5-7b-instruct"].facts == ModelFacts(
        size_bytes=8_000_000_000, context_length=8192, max_context_length=32768)  # its own host's, not the other's
    order = views.grouped(statuses)
    assert order.index("openai:gpt-4.1-mini") == len(order) - 1  # local connections first
    assert sorted(order[:2]) == ["desk:qwen2.5-7b-instruct", "lmstudio:qwen2.5-7b-instruct"]
