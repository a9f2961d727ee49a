"""A planted key is used on the wire and then found nowhere else: not in the database file, the logs, any
exception (chained causes included), the metrics, the failure cache, the key list or a CSV export."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator_core.errors import (
    AllModelsFailedError,
    AuthenticationError,
    BadRequestError,
    OrchestratorError,
    ProviderUnavailableError,
    mask_key,
)
from orchestrator_core.orchestrator import CallEvent, Orchestrator
from orchestrator_core.store.metrics import EXPORT_COLUMNS, iter_export
from orchestrator_core.types import KeyCheck
from tests.faults.conftest import OrchFactory, metric_rows
from tests.faults.fault_server import FaultServer, Reply, Seen
from tests.faults.wire import HEALTHY_DEFAULT, HELLO, SHAPES, healthy, sse

PLANTED = "sk-PLANTED-stored-7f3c9e1a2b4d6f8091a3"  # stored through the key store (encrypted at rest)
PLANTED_ENV = "sk-ant-PLANTED-env-5e7d9c1b3a2f4e6d8c0b"  # from the environment
OPENAI, ANTHROPIC = SHAPES["openai"], SHAPES["anthropic"]


def openai_script(mode: dict[str, str]) -> Any:
    """The OpenAI endpoint; what it does depends on mode["now"]. Its error bodies echo the key back."""

    def reply(seen: Seen) -> Reply:
        key = seen.headers.get("authorization", "").removeprefix("Bearer ")
        now = mode["now"]
        if now == "ok":
            return healthy(OPENAI, "fine")(seen)
        if now == "echo-400":
            return Reply.json(400, {"error": {"message": f"Invalid request made with key {key}",
                                              "type": "invalid_request_error"}})
        if now == "echo-401":
            return Reply.json(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}})
        if now == "echo-bearer":
            return Reply.json(400, {"error": {"message": f"Bad header 'Authorization: Bearer {key}'"}})
        if now == "html-502":
            return Reply.text(502, f"<html><title>Upstream refused {key}</title><body>bad gateway</body></html>",
                              "text/html")
        assert now == "in-band-stream"
        return Reply.stream(sse({"error": {"message": f"key {key} is not allowed", "type": "invalid_request_error"}}))

    return reply


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str and repr of an exception and of every exception chained to it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]


def expect(error: type[OrchestratorError], call: Any, caught: list[BaseException]) -> OrchestratorError:
    with pytest.raises(error) as info:
        call()
    caught.append(info.value)
    return info.value


def database_bytes(orch: Orchestrator) -> bytes:
    path = Path(orch.db.engine.url.database or "")
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def test_planted_key_is_used_on_the_wire_and_found_nowhere_else(
    server: FaultServer, make_orch: OrchFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    for name in ("httpx", "httpcore", "orchestrator_core"):
        caplog.set_level(logging.DEBUG, logger=name)
    mode = {"now": "ok"}
    server.script(OPENAI.call_path(False), openai_script(mode))
    server.script(OPENAI.models_path(), lambda seen: Reply.json(401, {"error": {
        "message": f"Incorrect API key provided: {seen.headers.get('authorization', '')[7:]}",
        "code": "invalid_api_key"}}))
    server.script(ANTHROPIC.call_path(False), lambda seen: Reply.json(401, {"type": "error", "error": {
        "type": "authentication_error", "message": f"invalid x-api-key {seen.headers.get('x-api-key')}"}}))
    server.script(ANTHROPIC.models_path(), Reply.json(200, {"data": [{"id": "claude-fault"}]}))
    server.script(HEALTHY_DEFAULT.call_path(False), healthy(HEALTHY_DEFAULT))

    orch = make_orch(env_keys={"anthropic": PLANTED_ENV})
    stored = orch.keys.add("openai", "planted", PLANTED)
    caught: list[BaseException] = []
    shown: list[Any] = []  # everything a UI could render
    events: list[CallEvent] = []

    shown.append(orch.chat(OPENAI.model_id, HELLO, on_event=events.append))
    chat_stream = orch.stream_chat(OPENAI.model_id, HELLO, on_event=events.append)
    shown.append("".join(chat_stream))
    shown.append(chat_stream.result)
    for now, error in (("echo-400", BadRequestError), ("echo-bearer", BadRequestError),
                       ("echo-401", AuthenticationError), ("html-502", ProviderUnavailableError)):
        mode["now"] = now
        expect(error, lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False, on_event=events.append), caught)
        orch.manager.reset_failed()
        orch.keys.update(stored.id, key=PLANTED)  # after the 401 the key sits out until replaced or tested
    mode["now"] = "in-band-stream"
    expect(BadRequestError, lambda: list(orch.stream_chat(OPENAI.model_id, HELLO, fallback=False)), caught)
    mode["now"] = "echo-401"
    fell_back = orch.chat(OPENAI.model_id, HELLO, on_event=events.append)  # the fallback answers
    assert fell_back.model_id == HEALTHY_DEFAULT.model_id
    shown.append(fell_back)
    orch.manager.reset_failed()
    orch.registry.set_active(HEALTHY_DEFAULT.model_id, False)
    orch.registry.add(ANTHROPIC.model_id, priority=1)
    everything_failed = expect(AllModelsFailedError, lambda: orch.chat(OPENAI.model_id, HELLO), caught)
    shown += [orch.test_key(stored.id), orch.test_key("env:anthropic"), orch.keys.list(), orch.failures.all(), events]

    # The key really went out: otherwise finding it nowhere would prove nothing.
    assert any(s.headers.get("authorization") == f"Bearer {PLANTED}" for s in server.seen)
    assert any(s.headers.get("x-api-key") == PLANTED_ENV for s in server.seen)
    assert orch.keys.secret_for("openai") == PLANTED  # and it is still there, usable

    rows = metric_rows(orch)
    export = tmp_path / "metrics.csv"
    with export.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(iter_export(orch.db))
    while_open = database_bytes(orch)
    results = {s.status for s in shown if hasattr(s, "status") and isinstance(s.status, KeyCheck)}
    assert results == {KeyCheck.REJECTED, KeyCheck.OK}
    orch.close()

    places = {
        "database file (+wal, shm) while open": while_open.decode("latin-1"),
        "database file after close": database_bytes(orch).decode("latin-1"),
        "log output": caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records),
        "exceptions": "\n".join(t for exc in caught for t in exception_texts(exc)),
        "what the console shows": repr(shown),
        "metric rows": repr([[getattr(r, c) for c in EXPORT_COLUMNS] for r in rows]),
        "CSV export": export.read_text(encoding="utf-8"),
    }
    for secret in (PLANTED, PLANTED_ENV):
        leaks = [where for where, text in places.items() if secret in text or secret[3:-3] in text]
        assert leaks == [], f"{secret} leaked into: {leaks}"
    assert len(rows) >= 10 and export.read_text().count("\n") == len(rows) + 1
    # Where the provider echoed the key, the masked form stands in for it.
    assert mask_key(PLANTED) in "\n".join(str(e) for e in caught)
    assert mask_key(PLANTED_ENV) in str(everything_failed)
    assert {k.masked for k in shown[-3] if k.provider in ("openai", "anthropic")} == {mask_key(PLANTED),
                                                                                       mask_key(PLANTED_ENV)}
    assert "httpx" in caplog.text or any(r.name.startswith("httpx") for r in caplog.records)  # logs were captured


def test_key_with_a_newline_is_refused_without_echoing_it_in_the_error_or_the_log(
    server: FaultServer, make_orch: OrchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    orch = make_orch()
    bad = f"{PLANTED}\n{PLANTED_ENV}"
    with pytest.raises(OrchestratorError) as info:
        orch.keys.add("openai", "work", bad)
    texts = "\n".join(exception_texts(info.value)) + caplog.text
    assert PLANTED not in texts and PLANTED_ENV not in texts
    assert PLANTED.encode() not in database_bytes(orch)


# Every shape in which a provider has been seen (or could be) to echo a key back, whole or in part.
ECHOES: dict[str, Any] = {
    "plain-text-body": lambda key: Reply.text(401, f"Unauthorized: the key {key} is not valid"),
    "json-without-a-message-field": lambda key: Reply.json(400, {"status": "denied", "credential": key}),
    "upper-cased-echo": lambda key: Reply.json(401, {"error": {"message": f"Invalid key {key.upper()}"}}),
    "first-20-characters": lambda key: Reply.json(401, {"error": {"message": f"Incorrect key: {key[:20]}"}}),
    "head-ellipsis-tail": lambda key: Reply.json(401, {"error": {"message": f"Incorrect key {key[:6]}…{key[-3:]}"}}),
    "head-stars-ellipsis-tail": lambda key: Reply.json(401, {"error": {"message": f"Bad {key[:8]}***…{key[-4:]}"}}),
    "echo-straddling-the-length-cut": lambda key: Reply.text(400, "x" * 290 + key + " is not allowed here"),
    "json-echo-straddling-the-cut": lambda key: Reply.json(400, {"detail_list": ["y" * 270 + key]}),
}


def pieces_of(secret: str, size: int = 8) -> set[str]:
    return {secret[i : i + size].lower() for i in range(len(secret) - size + 1)}


@pytest.mark.parametrize("shape", list(ECHOES), ids=list(ECHOES))
def test_key_echoed_in_any_shape_leaves_no_piece_of_it_in_the_error_its_causes_or_the_metric_row(
    shape: str, server: FaultServer, make_orch: OrchFactory
) -> None:
    def reply(seen: Seen) -> Reply:
        reply_for: Any = ECHOES[shape]
        return reply_for(seen.headers.get("authorization", "").removeprefix("Bearer "))

    server.script(OPENAI.call_path(False), reply)
    orch = make_orch(env_keys={})  # the planted key is the pool's only one: no other key is tried after it
    orch.keys.add("openai", "planted", PLANTED)
    with pytest.raises(OrchestratorError) as info:
        orch.chat(OPENAI.model_id, HELLO, fallback=False)
    assert any(s.headers.get("authorization") == f"Bearer {PLANTED}" for s in server.seen)  # it went out
    rows = metric_rows(orch)
    assert rows and rows[-1].error
    places = {
        "error and chained causes": "\n".join(exception_texts(info.value)),
        "metric row": repr([[getattr(r, c) for c in EXPORT_COLUMNS] for r in rows]),
    }
    for where, text in places.items():
        lowered = text.lower()
        leaked = sorted(p for p in pieces_of(PLANTED) if p in lowered)
        assert leaked == [], f"pieces of the key in the {where}: {leaked}"
        assert PLANTED[:6].lower() not in lowered, f"the key's head is in the {where}"
    assert mask_key(PLANTED) in str(info.value)  # the mask stands where the key was


@pytest.mark.parametrize("char", ["\x00", "\n", "é", "\u200b"], ids=["nul", "newline", "non-ascii", "zero-width"])
def test_key_no_header_can_carry_that_predates_validation_fails_without_quoting_the_key(
    char: str, server: FaultServer, make_orch: OrchFactory
) -> None:
    bad = PLANTED[:12] + char + PLANTED[12:]  # e.g. stored by an older version, before keys were checked
    server.script(OPENAI.call_path(False), healthy(OPENAI))
    orch = make_orch(env_keys={"openai": bad})
    with pytest.raises(AuthenticationError, match="paste the key again") as info:
        orch.chat(OPENAI.model_id, HELLO, fallback=False)
    texts = "\n".join(exception_texts(info.value)) + repr([[getattr(r, c) for c in EXPORT_COLUMNS]
                                                          for r in metric_rows(orch)])
    assert not [p for p in pieces_of(PLANTED) if p in texts.lower()]
    assert "Illegal header value" not in texts and "codec can't encode" not in texts
