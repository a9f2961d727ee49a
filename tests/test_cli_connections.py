"""CLI: connections list/add/edit/remove/test and groups set/list/remove, with --json; a key only from stdin."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core import cli
from tests.standins import StandIn, openai_standin

KEY = "gsk-cli-secret-0123456789abcdefXYZ"


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LOCAL_HOSTS", "")
    return db_url


@pytest.fixture
def groq() -> Iterator[StandIn]:
    with openai_standin(key=KEY, models=("llama-3.3-70b", "llama-3.1-8b"), word_delay_s=0) as server:
        yield server


def _run(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
         stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_connections_add_takes_the_key_from_stdin_and_never_prints_it(
    env: str, groq: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, added = _run(["connections", "add", "groq", "--kind", "openai-compatible", "--base-url", groq.base_url,
                        "--key", "-", "--json"], capsys, monkeypatch, stdin=KEY + "\n")
    _, listed = _run(["--json", "connections", "list"], capsys, monkeypatch)
    test_code, tested = _run(["connections", "test", "groq", "--json"], capsys, monkeypatch)
    _, text_list = _run(["connections", "list"], capsys, monkeypatch)

    assert code == 0 and json.loads(added)["name"] == "groq" and json.loads(added)["key_count"] == 1
    rows = {c["name"]: c for c in json.loads(listed)}
    assert rows["groq"]["kind"] == "openai-compatible" and rows["groq"]["seeded"] is False
    assert rows["custom"]["seeded"] is True  # one seeded connection per kind
    assert test_code == 0 and json.loads(tested)["model_count"] == 2 and json.loads(tested)["key"] == "ok"
    assert "groq" in text_list
    for output in (added, listed, tested, text_list):
        assert KEY not in output and KEY[-12:] not in output


def test_a_key_on_the_command_line_is_refused(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = _run(["connections", "add", "groq", "--kind", "openai-compatible", "--base-url",
                      "http://127.0.0.1:9/v1", "--key", KEY], capsys, monkeypatch)
    _, listed = _run(["--json", "connections", "list"], capsys, monkeypatch)

    assert code == 1 and "--key -" in out and KEY not in out
    assert "groq" not in {c["name"] for c in json.loads(listed)}  # nothing half-added


def test_connections_edit_and_remove(
    env: str, groq: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(["connections", "add", "groq", "--kind", "openai-compatible", "--base-url", groq.base_url],
         capsys, monkeypatch)
    code, edited = _run(["connections", "edit", "groq", "--disable", "--key-mode", "round-robin", "--json"],
                        capsys, monkeypatch)
    bad, refused = _run(["connections", "edit", "groq", "--option", "api_version=v1"], capsys, monkeypatch)
    removed, _ = _run(["connections", "remove", "groq"], capsys, monkeypatch)
    _, listed = _run(["--json", "connections", "list"], capsys, monkeypatch)

    assert code == 0 and json.loads(edited)["enabled"] is False and json.loads(edited)["key_mode"] == "round-robin"
    assert bad == 1 and "has no option 'api_version'" in refused
    assert removed == 0 and "groq" not in {c["name"] for c in json.loads(listed)}


def test_groups_set_list_remove(env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, made = _run(["groups", "set", "default", "openai:gpt-4.1-mini", "mistral:mistral-small-latest", "--json"],
                      capsys, monkeypatch)
    _, listed = _run(["groups", "list", "--json"], capsys, monkeypatch)
    _, text = _run(["groups", "list"], capsys, monkeypatch)
    removed, _ = _run(["groups", "remove", "default"], capsys, monkeypatch)
    _, after = _run(["--json", "groups", "list"], capsys, monkeypatch)

    assert code == 0 and json.loads(made)["members"] == ["openai:gpt-4.1-mini", "mistral:mistral-small-latest"]
    assert json.loads(listed) == [json.loads(made)]
    assert "openai:gpt-4.1-mini -> mistral:mistral-small-latest" in text
    assert removed == 0 and json.loads(after) == []


def test_the_cli_still_imports_no_sqlalchemy_to_parse_its_arguments(tmp_path: Path) -> None:
    code = ("import sys; from orchestrator_core import cli; cli.build_parser().parse_args(['connections', 'list']);"
            "print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "False"
