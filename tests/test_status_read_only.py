"""``status`` on a current SQLite file reads through sqlite3 without SQLAlchemy, and prints what the full start prints."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from cryptography.fernet import Fernet

from orchestrator_core import cli
from orchestrator_core.config import Settings
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.providers.plain import PlainClient
from orchestrator_core.store import readonly
from orchestrator_core.store.secret import VERIFIER_PLAINTEXT, signed_with
from orchestrator_core.store.spool import Spool
from tests.helpers import lmstudio_models, settings

ROOT = Path(__file__).resolve().parent.parent
SECRET = "aYrx9ucDmqez-nZZVBKDPq-WwztcQXsl2F8v6tRMVOE="  # a Fernet key as is: no scrypt stretch per start
HOST_MODELS = {"qwen-7b": True, "llama-3b": False}
_READ_ONLY = cli._status_read_only


class _LMStudio(BaseHTTPRequestHandler):
    models: dict[str, bool] = HOST_MODELS
    failing: int | None = None  # answer every request with this status and an error body

    def do_GET(self) -> None:
        found = self.path.startswith("/api/v1/models") and self.failing is None
        body = json.dumps(lmstudio_models(self.models) if found else {"error": "not here"}).encode()
        self.send_response(200 if found else self.failing or 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serve() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LMStudio)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def host() -> Iterator[str]:
    with _serve() as url:
        yield url


@pytest.fixture
def second_host() -> Iterator[str]:
    """Another LM Studio, for a connection the operator added (the same models as the first)."""
    with _serve() as url:
        yield url


@pytest.fixture
def status_env(db_url: str, host: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database as after a first start and a day of use: the host's models, a cooldown, a stored key."""
    for name, value in {"DATABASE_URL": db_url, "LOCAL_HOSTS": "lmstudio", "LMSTUDIO_BASE_URL": host,
                        "ORCHESTRATOR_SECRET_KEY": SECRET, "MISTRAL_API_KEY": "mistral-env-key-0123456789"}.items():
        monkeypatch.setenv(name, value)
    with Orchestrator.from_settings(settings(db_url, local_hosts=("lmstudio",), base_urls={"lmstudio": host},
                                             secret_key=SECRET)) as orch:
        orch.manager.list_with_status(force=True)  # registers the host's models
        orch.keys.add("openai", "work", "sk-stored-openai-key-0123456789")
        orch.failures.record("lmstudio:llama-3b", "host_unavailable", "LM Studio did not answer", 600.0)
        orch.registry.set_active("google:gemini-2.5-flash", False)
    return db_url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _run_read_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    """Run, and check that the read-only path answered (not the full start)."""
    answered: list[int | None] = []
    quick = _READ_ONLY  # not cli's attribute: an earlier _full_start in the same test may have replaced it

    def watched(args: argparse.Namespace) -> int | None:
        answered.append(quick(args))
        return answered[-1]

    monkeypatch.setattr(cli, "_status_read_only", watched)
    result = _run(capsys, *argv)
    assert answered == [result[0]], "the full start answered"
    return result


def _full_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_status_read_only", lambda args: None)


def _without_times(text: str) -> object:
    data = json.loads(text)
    for item in (*data["hosts"], *data["models"]):
        item.pop("checked_at")
    return data


def test_status_json_read_only_equals_the_full_start(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = _run_read_only(capsys, monkeypatch, "--json", "status")
    _full_start(monkeypatch)
    full = _run(capsys, "--json", "status")

    assert quick[0] == full[0] == 0 and quick[2] == full[2] == ""
    assert _without_times(quick[1]) == _without_times(full[1])
    states = {m["model_id"]: m["state"] for m in json.loads(quick[1])["models"]}
    assert states["lmstudio:llama-3b"] == "cooling_down" and states["lmstudio:qwen-7b"] == "loaded"
    assert states["openai:gpt-4.1-mini"] == states["mistral:mistral-small-latest"] == "external_ready"
    assert "google:gemini-2.5-flash" not in states


def test_status_text_read_only_equals_the_full_start(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = _run_read_only(capsys, monkeypatch, "status")
    _full_start(monkeypatch)

    assert quick == _run(capsys, "status")
    assert "cooling_down" in quick[1] and "until" in quick[1]


def test_status_reads_through_sqlite3_without_importing_sqlalchemy_or_alembic(status_env: str) -> None:
    # Nor httpx (the hosts are asked through http.client) nor cryptography (the secret is checked by HMAC, and
    # the stored openai key need not be decrypted to show "key configured"): each cost the start ~20-45 ms.
    probe = ("import json, sys\nfrom orchestrator_core import cli\ncode = cli.main(['--json', 'status'])\n"
             "print(json.dumps([code, sorted({m.split('.')[0] for m, loaded in sys.modules.items() if loaded} & "
             "{'sqlalchemy', 'alembic', 'pandas', 'plotly', 'streamlit', 'httpx', 'httpcore', 'h11', 'anyio', "
             "'cryptography'})]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False,
                          timeout=60)

    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert (code, heavy) == (0, []), done.stderr


def test_status_registers_a_model_the_host_lists_for_the_first_time(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_LMStudio, "models", {**HOST_MODELS, "phi-4": False})

    code, out, _ = _run(capsys, "--json", "status")

    assert code == 0 and "lmstudio:phi-4" in {m["model_id"] for m in json.loads(out)["models"]}
    store = readonly.ReadOnlyStore.open(status_env)
    assert store is not None and "lmstudio:phi-4" in [m.model_id for m in store.registry.list()]  # registered


def test_status_with_another_secret_fails_as_the_full_start_does(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SECRET_KEY", "a different passphrase")
    quick = _run(capsys, "--json", "status")
    _full_start(monkeypatch)
    full = _run(capsys, "--json", "status")

    assert quick == full and quick[0] == 2 and json.loads(quick[1])["error"] == "secret_key"


def test_read_only_store_leaves_what_must_write_to_the_full_start(status_env: str, tmp_path: Path) -> None:
    path = readonly.sqlite_file(status_env)
    assert path is not None and readonly.ReadOnlyStore.open(status_env) is not None
    assert readonly.ReadOnlyStore.open(f"sqlite:///{tmp_path}/not-there-yet.db") is None  # to be created
    assert readonly.ReadOnlyStore.open("postgresql+psycopg://u:p@127.0.0.1:1/db") is None
    assert readonly.ReadOnlyStore.open("sqlite://") is None  # in memory
    Spool.for_sqlite_file(path).write([{"model": "x"}])  # rows an earlier process could not write
    assert readonly.ReadOnlyStore.open(status_env) is None


def test_read_only_store_leaves_an_older_schema_to_the_migration(status_env: str) -> None:
    path = readonly.sqlite_file(status_env)
    assert path is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0005'")

    assert readonly.ReadOnlyStore.open(status_env) is None


def _equal_outputs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Both paths print the same JSON and text; the read-only path answered. Returns the parsed JSON."""
    quick_json = _run_read_only(capsys, monkeypatch, "--json", "status")
    quick_text = _run_read_only(capsys, monkeypatch, "status")
    _full_start(monkeypatch)
    full_json, full_text = _run(capsys, "--json", "status"), _run(capsys, "status")

    assert quick_json[0] == full_json[0] == 0 and quick_json[2] == full_json[2] == ""
    assert _without_times(quick_json[1]) == _without_times(full_json[1])
    assert quick_text == full_text
    data: dict[str, object] = json.loads(quick_json[1])
    return data


def _states(data: dict[str, object]) -> dict[str, tuple[str, str]]:
    return {m["model_id"]: (m["state"], m["detail"]) for m in data["models"]}  # type: ignore[attr-defined]


def test_status_shows_an_added_lmstudio_connection_as_the_full_start_does(
    status_env: str, second_host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        orch.add_connection("desk", "lmstudio", base_url=second_host)
        orch.statuses(force=True)  # registers desk's models, as the console's first status would

    data = _equal_outputs(capsys, monkeypatch)

    desk = [h for h in data["hosts"] if h["provider"] == "desk"]  # type: ignore[attr-defined]
    assert [(h["display_name"], h["base_url"], h["kind"], h["reachable"]) for h in desk] == [
        ("desk (LM Studio)", second_host, "lmstudio", True)]
    states = _states(data)
    assert states["desk:qwen-7b"][0] == "loaded" and states["desk:llama-3b"][0] == "not_loaded"
    assert states["lmstudio:llama-3b"][0] == "cooling_down"  # the seeded host's cooldown is not desk's


def test_status_shows_a_disabled_connection_as_the_full_start_does(
    status_env: str, second_host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        orch.add_connection("spare", "lmstudio", base_url=second_host)
        orch.statuses(force=True)
        orch.edit_connection("spare", enabled=False)
        orch.edit_connection("mistral", enabled=False)  # a seeded one: its first edit stores a row

    data = _equal_outputs(capsys, monkeypatch)

    assert "spare" not in {h["provider"] for h in data["hosts"]}  # type: ignore[attr-defined]  # not probed
    states = _states(data)
    assert states["spare:qwen-7b"] == ("host_down", "connection spare is disabled; enable it on the Connections page")
    assert states["mistral:mistral-small-latest"][0] == "host_down"  # despite MISTRAL_API_KEY
    assert states["openai:gpt-4.1-mini"][0] == "external_ready"


def test_status_shows_a_connection_whose_keys_are_all_out_of_use_as_the_full_start_does(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        orch.add_connection("groq", "openai-compatible", base_url="https://api.groq.com/openai/v1",
                            key="gsk-first-key-0123456789")
        orch.add_connection("together", "openai-compatible", base_url="https://api.together.xyz/v1",
                            key_mode="round-robin", key="tg-first-key-0123456789")
        orch.add_key("together", "second", "tg-second-key-0123456789")
        orch.add_key("together", "third", "tg-third-key-0123456789")
        orch.add_key("groq", "second", "gsk-second-key-0123456789")
        for key in orch.keys_of("groq"):
            orch.keys.record_fault(key.id, "rejected", "401 from groq", 0.0)
        first, second, third = orch.keys_of("together")
        orch.keys.record_fault(first.id, "cooling", "429 from together", 600.0)
        orch.keys.record_fault(second.id, "exhausted", "quota of together", 3600.0)
        for model in ("groq:llama-3.3-70b", "together:qwen-72b"):
            orch.add_model(model)

    data = _equal_outputs(capsys, monkeypatch)

    states = _states(data)
    assert states["groq:llama-3.3-70b"] == (  # ux's rejected-key state, for a pool whose every key was rejected
        "external_key_rejected", "every key of groq was rejected at its last test or by a call: replace it on the "
        "API Keys page, or test it again")
    assert states["together:qwen-72b"] == ("external_ready", "no key needed")  # one of its keys is usable
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        orch.keys.record_fault(third.id, "rejected", "401 from together", 0.0)

    states = _states(_equal_outputs(capsys, monkeypatch))
    state, detail = states["together:qwen-72b"]
    assert state == "external_no_key" and detail.startswith(
        "every key of together is rejected, rate limited or out of quota until ")


def test_read_only_connections_are_the_connection_stores(status_env: str, second_host: str) -> None:
    with Orchestrator.from_settings(Settings.from_env()) as orch:
        orch.add_connection("desk", "lmstudio", base_url=second_host, key_mode="round-robin")
        orch.add_connection("claude-eu", "anthropic", base_url="https://eu.example.test/anthropic",
                            options={"anthropic_version": "2024-01-01"}, enabled=False)
        orch.edit_connection("google", options={"api_version": "v1"})
        orch.edit_connection("openai", base_url="https://proxy.example.test/v1", enabled=False)
        full = orch.connection_store.list()
    store = readonly.ReadOnlyStore.open(status_env)

    assert store is not None and store.connections(Settings.from_env()).list() == full
    by_name = {c.name: c for c in full}
    assert by_name["claude-eu"].options == {"anthropic_version": "2024-01-01"} and not by_name["claude-eu"].enabled
    assert by_name["openai"].base_url == "https://proxy.example.test/v1" and by_name["openai"].seeded


def test_status_of_a_host_that_is_down_reads_as_the_full_start_does(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("LMSTUDIO_BASE_URL", closed)

    data = _equal_outputs(capsys, monkeypatch)

    [host] = data["hosts"]  # type: ignore[misc]
    assert not host["reachable"] and host["detail"] == (
        f"Cannot reach lmstudio at {closed} (connection refused or unreachable); start the server or fix its base URL.")
    assert _states(data)["lmstudio:qwen-7b"][0] == "host_down"


def test_status_of_a_host_answering_errors_reads_as_the_full_start_does(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_LMStudio, "failing", 503)

    data = _equal_outputs(capsys, monkeypatch)

    [host] = data["hosts"]  # type: ignore[misc]
    assert not host["reachable"] and "unavailable (HTTP 503: not here)" in host["detail"]


def test_status_of_an_older_lmstudio_falls_back_as_the_full_start_does(
    status_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def v0_only(self: _LMStudio) -> None:  # LM Studio 0.3: no /api/v1 (an HTML 404), /api/v0 with states
        if self.path.startswith("/api/v0/models"):
            body, status = json.dumps({"data": [{"id": "qwen-7b", "type": "llm", "state": "loaded"},
                                                {"id": "llama-3b", "type": "llm", "state": "not-loaded"}]}), 200
        else:
            body, status = "<html><title>Not Found</title></html>", 404
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    monkeypatch.setattr(_LMStudio, "do_GET", v0_only)

    states = _states(_equal_outputs(capsys, monkeypatch))

    assert states["lmstudio:qwen-7b"][0] == "loaded"


def test_the_plain_client_stands_in_for_httpx_only_where_it_sends_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert PlainClient.serves("http://127.0.0.1:1234") and PlainClient.serves("http://desk.lan:11434/")
    assert not PlainClient.serves("https://127.0.0.1:1234")  # TLS: httpx's context and CA bundle
    assert not PlainClient.serves("http://user:pw@127.0.0.1:1234")  # httpx would send basic auth
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.test:3128")  # httpx would send through it
    assert not PlainClient.serves("http://127.0.0.1:1234")


def test_the_secret_check_without_cryptography_agrees_with_fernet() -> None:
    key, other = Fernet.generate_key(), Fernet.generate_key()
    for plaintext in (b"", b"sk-" + b"x" * 60, VERIFIER_PLAINTEXT):
        token = Fernet(key).encrypt(plaintext).decode()
        assert signed_with(key, token) and not signed_with(other, token)
        assert not signed_with(key, token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:])  # tampered
    assert not signed_with(key, "not a token") and not signed_with(key, "")
