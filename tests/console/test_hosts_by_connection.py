"""Every local-host connection is listed by its name in the sidebar and on the overview."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import respx

from orchestrator_core.orchestrator import Orchestrator
from tests.console.apptools import lmstudio_down, start, texts

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
