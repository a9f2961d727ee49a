"""No rendered page of the console shows a planted key: every element's value, body and label is searched
after chats that failed with the key echoed back, key tests and a fallback, on the same database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console import shared
from orchestrator_core.errors import mask_key
from tests.faults.conftest import OrchFactory
from tests.faults.fault_server import FaultServer, Reply, Seen
from tests.faults.wire import HEALTHY_DEFAULT, HELLO, LMSTUDIO_STATUS, SHAPES, healthy, lmstudio_models

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"
PLANTED = "sk-PLANTED-console-4b1d8e2f6a9c3e5d7f0a"
PLANTED_ENV = "sk-ant-PLANTED-console-env-8a6c4e2b0d9f"
OPENAI, ANTHROPIC = SHAPES["openai"], SHAPES["anthropic"]
PAGES = ("app_pages/overview.py", "app_pages/chat.py", "app_pages/models.py", "app_pages/keys.py", "app_pages/spend.py")


def echo_401(seen: Seen) -> Reply:
    """A provider that repeats the key it was sent in its error message."""
    key = seen.headers.get("authorization", "").removeprefix("Bearer ") or seen.headers.get("x-api-key", "")
    return Reply.json(401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}})


def rendered(at: AppTest) -> str:
    """Every element of the page as its protobuf text: values, bodies, labels, options, help, data frames."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    for frame in at.dataframe:
        parts.append(frame.value.to_csv())  # a data frame's cells travel as Arrow bytes, not text
    return "\n".join(parts)


@pytest.fixture
def app_env(server: FaultServer, make_orch: OrchFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database with a stored planted key, failures that echoed it, and env for the app pointing at it."""
    server.script(OPENAI.call_path(False), echo_401)
    server.script(OPENAI.models_path(), echo_401)
    server.script(ANTHROPIC.call_path(False), echo_401)
    server.script(ANTHROPIC.models_path(), echo_401)
    server.script(HEALTHY_DEFAULT.call_path(False), healthy(HEALTHY_DEFAULT))
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models(loaded=True)))
    orch = make_orch(env_keys={"anthropic": PLANTED_ENV})
    stored = orch.keys.add("openai", "planted", PLANTED)
    orch.registry.add(OPENAI.model_id, priority=1)
    orch.registry.add(ANTHROPIC.model_id, priority=2)
    result = orch.chat(OPENAI.model_id, HELLO)  # 401 with the key echoed, then the fallback answers
    assert result.fell_back and result.attempts[0].error_kind == "auth"
    orch.test_key(stored.id)
    url = orch.settings.database_url
    orch.close()
    env = {
        "DATABASE_URL": url, "ANTHROPIC_API_KEY": PLANTED_ENV, "LOCAL_HOSTS": "lmstudio",
        "OPENAI_BASE_URL": server.url + OPENAI.base, "ANTHROPIC_BASE_URL": server.url + ANTHROPIC.base,
        "CUSTOM_BASE_URL": server.url + HEALTHY_DEFAULT.base, "LMSTUDIO_BASE_URL": server.url + "/lmstudio",
        "CONNECT_TIMEOUT_S": "0.5", "STATUS_TIMEOUT_S": "0.5", "READ_TIMEOUT_S": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shared.reset()
    st.cache_data.clear()
    yield url
    shared.reset()  # closes the app's orchestrator
    st.cache_data.clear()


def test_no_console_page_renders_a_planted_key(app_env: str, server: FaultServer) -> None:
    at = AppTest.from_file(APP, default_timeout=15)
    at.run()
    seen: dict[str, str] = {}
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        if page.endswith("keys.py"):
            at.button(key="key_test_all").click().run()  # results of the key tests, echoed keys included
            assert not at.exception
        if page.endswith("chat.py"):
            at.selectbox(key="chat_model").set_value(OPENAI.model_id)
            at.chat_input(key="chat_prompt").set_value("hello").run()  # fails with the key echoed, falls back
            assert not at.exception
        seen[page] = rendered(at)

    # The calls really carried the planted keys, and the pages really showed the keys and the failures.
    assert any(s.headers.get("authorization") == f"Bearer {PLANTED}" for s in server.seen)
    assert any(s.headers.get("x-api-key") == PLANTED_ENV for s in server.seen)
    assert PLANTED[-4:] in seen["app_pages/keys.py"] and PLANTED_ENV[-4:] in seen["app_pages/keys.py"]
    assert "fine" in seen["app_pages/chat.py"]
    everything = "\n".join(seen.values())
    assert "Incorrect API key provided" in everything  # the echoing error bodies were rendered...
    assert mask_key(PLANTED) in everything and mask_key(PLANTED_ENV) in everything  # ...and the masks shown
    for page, text in seen.items():
        for secret in (PLANTED, PLANTED_ENV):
            assert secret not in text and secret[3:-3] not in text, f"{page} shows {mask_key(secret)} in plain text"
