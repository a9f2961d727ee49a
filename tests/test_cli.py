"""The command line prints the host's state: an asynchronous unload is not reported as "loaded"."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from orchestrator_core import cli, loader
from orchestrator_core.types import ModelState
from tests.helpers import LLAMACPP


@pytest.fixture
def llama_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LOCAL_HOSTS", "llamacpp")
    monkeypatch.setenv("POLL_INTERVAL_S", "0.01")
    with respx.mock(assert_all_called=False) as router:
        yield router


def _models(value: str) -> httpx.Response:
    return httpx.Response(200, json={"data": [{"id": "tiny-b", "status": {"value": value}}]})


def test_cli_unload_prints_not_loaded_once_the_router_has_stopped_the_model(
    llama_env: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    # As seen on a real llama-server: the unload answers, then GET /models says "loaded" for a few looks.
    looks = itertools.count()
    unloaded = {"asked": False}
    llama_env.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _models(
        "unloaded" if unloaded["asked"] and next(looks) >= 3 else "loaded"))
    llama_env.post(f"{LLAMACPP}/models/unload").mock(
        side_effect=lambda r: unloaded.update(asked=True) or httpx.Response(200, json={"success": True}))

    assert cli.main(["unload", "llamacpp:tiny-b"]) == 0

    assert capsys.readouterr().out.strip() == "llamacpp:tiny-b: not_loaded."


def test_cli_unload_prints_unloading_while_the_host_still_lists_the_model(
    llama_env: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "UNLOAD_WAIT_S", 0.05)
    llama_env.get(f"{LLAMACPP}/models").mock(side_effect=lambda r: _models("loaded"))
    llama_env.post(f"{LLAMACPP}/models/unload").respond(json={"success": True})

    assert cli.main(["unload", "llamacpp:tiny-b"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("llamacpp:tiny-b: unloading (unload requested") and "loaded" in out


def test_cli_has_an_icon_for_every_state() -> None:
    assert set(cli.STATE_ICONS) == set(ModelState)


def test_cli_chat_json_has_cost_usd_a_number_or_null(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LOCAL_HOSTS", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cli-0123456789abcdef")
    answer = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}
    with respx.mock(assert_all_called=False) as router:
        router.post("https://api.openai.com/v1/chat/completions").respond(json=answer)
        assert cli.main(["--json", "chat", "openai:gpt-4o-mini", "hi"]) == 0
        priced = json.loads(capsys.readouterr().out)
        assert cli.main(["--json", "chat", "openai:not-in-any-price-table", "hi"]) == 0
        unpriced = json.loads(capsys.readouterr().out)
    assert priced["cost_usd"] == pytest.approx(0.15)  # gpt-4o-mini input: $0.15 per million tokens
    assert priced["attempts"][0]["cost_usd"] == pytest.approx(0.15)
    assert unpriced["cost_usd"] is None
