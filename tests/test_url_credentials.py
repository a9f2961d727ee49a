"""Credentials inside a base URL (https://user:password@host) never reach a message, a metric row, a Test result,
the CLI's output or a host list; an edit that sends the masked URL back keeps them."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import httpx
import pytest
import respx
from sqlalchemy import select

from orchestrator_core import cli
from orchestrator_core.config import Settings
from orchestrator_core.connections import check_base_url
from orchestrator_core.errors import ConfigurationError, InvalidConnectionError, OrchestratorError, redact_url
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.providers.custom import CustomProvider
from orchestrator_core.store.tables import CallMetric
from orchestrator_core.types import ChatParams
from tests.helpers import settings

PASSWORD = "hunter2-Very-Secret-pw"
DOWN = f"http://operator:{PASSWORD}@127.0.0.1:9"  # nothing listens on port 9
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    with Orchestrator.from_settings(settings(db_url, local_hosts=())) as o:
        yield o


def test_redact_url_masks_everything_before_the_host() -> None:
    assert redact_url("https://u:p@host:8/v1") == "https://***@host:8/v1"
    assert redact_url("https://TOKEN@host") == "https://***@host"
    assert redact_url("https://u:pa/ss?x@host/v1") == "https://***@host/v1"  # an unescaped '/' in the password
    assert redact_url("http://127.0.0.1:1234") == "http://127.0.0.1:1234"


def test_a_down_host_with_credentials_in_its_url_says_so_without_them(orch: Orchestrator) -> None:
    orch.add_connection("box", "llamacpp", base_url=DOWN)

    with pytest.raises(OrchestratorError) as info:
        orch.chat("box:qwen.gguf", HELLO, fallback=False)
    test = orch.test_connection("box")
    hosts = [h for h in orch.hosts(force=True) if h.provider == "box"]
    orch.metrics.flush()
    with orch.db.session() as s:
        errors = [row.error or "" for row in s.scalars(select(CallMetric))]

    assert "127.0.0.1:9" in str(info.value) and "***@" in str(info.value)
    shown = [str(info.value), test.detail, *errors, *(h.base_url + h.detail for h in hosts)]
    assert hosts and errors and not [text for text in shown if PASSWORD in text or "operator" in text]


@respx.mock
def test_a_host_that_echoes_its_url_back_has_the_password_scrubbed() -> None:
    # A proxy's error page quoting the URL it was asked for, credentials and all
    respx.post("https://proxy.test/v1/chat/completions").mock(
        side_effect=lambda request: httpx.Response(502, text=f"upstream failed for {request.url} ({PASSWORD})"))

    with httpx.Client(base_url=f"https://proxy-user:{PASSWORD}@proxy.test/v1") as client:
        provider = CustomProvider(client, "sk-custom-0123456789")
        with pytest.raises(OrchestratorError) as info:
            provider.chat("m", [{"role": "user", "content": "hello"}], ChatParams())

    assert "upstream failed" in info.value.message and PASSWORD not in info.value.message


def test_a_refused_url_is_quoted_without_its_credentials() -> None:
    with pytest.raises(InvalidConnectionError) as info:
        check_base_url("openai-compatible", f"https://me:{PASSWORD}@host.test/v 1")
    with pytest.raises(ConfigurationError) as env:
        Settings.from_env({"CUSTOM_BASE_URL": f"ftp://me:{PASSWORD}@host.test"})

    assert "host.test" in info.value.message and PASSWORD not in info.value.message
    assert "host.test" in env.value.message and PASSWORD not in env.value.message


def test_an_edit_sending_the_masked_url_back_keeps_the_credentials(orch: Orchestrator) -> None:
    orch.add_connection("proxy", "openai-compatible", base_url=f"https://me:{PASSWORD}@proxy.test/v1")
    shown = orch.connection("proxy").shown_url

    orch.edit_connection("proxy", base_url=shown)
    unchanged = orch.connection("proxy").base_url
    orch.edit_connection("proxy", base_url=shown.replace("/v1", "/v2"))
    moved = orch.connection("proxy").base_url
    orch.edit_connection("proxy", base_url="https://proxy.test/v3")

    assert shown == "https://***@proxy.test/v1"
    assert (unchanged, moved) == (f"https://me:{PASSWORD}@proxy.test/v1", f"https://me:{PASSWORD}@proxy.test/v2")
    assert orch.connection("proxy").base_url == "https://proxy.test/v3"  # typed without credentials: dropped


def test_the_cli_prints_connections_without_url_credentials(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LOCAL_HOSTS", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    outputs = []
    for args in (["connections", "add", "proxy", "--kind", "openai-compatible", "--base-url",
                  f"https://me:{PASSWORD}@proxy.test/v1"],
                 ["--json", "connections", "edit", "proxy", "--key-mode", "round-robin"],
                 ["connections", "list"], ["--json", "connections", "list"]):
        assert cli.main(args) == 0
        outputs.append(capsys.readouterr().out)

    assert all("***@proxy.test" in out for out in outputs)
    assert not [out for out in outputs if PASSWORD in out]
    assert {c["name"]: c["base_url"] for c in json.loads(outputs[3])}["proxy"] == "https://***@proxy.test/v1"


def test_the_repr_of_settings_carries_no_key_secret_or_password() -> None:
    shown = repr(Settings.from_env({
        "OPENAI_API_KEY": "sk-proj-repr-0123456789abcdef", "ORCHESTRATOR_SECRET_KEY": "secret-repr-0123456789",
        "DATABASE_URL": f"postgresql+psycopg://app:{PASSWORD}@db.test/app",
        "CUSTOM_BASE_URL": f"https://me:{PASSWORD}@proxy.test/v1"}))
    assert "Settings(" in shown and "read_timeout_s" in shown
    assert not [s for s in ("sk-proj-repr", "secret-repr", PASSWORD) if s in shown]


def test_a_hosted_kind_refuses_credentials_in_its_url_where_they_would_replace_its_key() -> None:
    with pytest.raises(InvalidConnectionError, match="Basic auth in place of the OpenAI key") as info:
        check_base_url("openai", f"https://me:{PASSWORD}@api.openai.test/v1")
    assert PASSWORD not in str(info.value) and "***@api.openai.test" in str(info.value)
    assert check_base_url("openai-compatible", f"https://me:{PASSWORD}@proxy.test/v1").startswith("https://me:")
