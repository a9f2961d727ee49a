"""Migration 0007 (connections, key pools, groups) on a database of today's schema (0006) holding data."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import respx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.db import alembic_config
from tests.helpers import OPENAI, openai_answer, settings

OPENAI_KEY = "sk-stored-before-pools-0123456789WXYZ"
CUSTOM_KEY = "sk-custom-before-pools-0123456789ABCD"
HELLO = [{"role": "user", "content": "hello"}]


def _database_at_0006_with_data(path: Path, fernet: Fernet) -> str:
    """Today's schema with keys, registry rows, metrics and a cooldown in it, written with plain SQL."""
    from alembic import command

    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
        now = datetime.now(UTC).replace(tzinfo=None)
        for provider, key in (("openai", OPENAI_KEY), ("custom", CUSTOM_KEY)):
            conn.execute(text("INSERT INTO api_keys (provider, label, encrypted_key, user_id, created_at, updated_at,"
                              " last_test_status) VALUES (:p, 'work', :k, 'local', :t, :t, 'ok')"),
                         {"p": provider, "k": fernet.encrypt(key.encode()).decode(), "t": now})
        for model_id, active, priority in (("custom:vllm-llama", True, 7), ("lmstudio:qwen2.5-7b-instruct", False, 9)):
            conn.execute(text("INSERT INTO ai_models (model_id, provider, display_name, active, priority, source, "
                              "created_at, updated_at) VALUES (:m, :p, NULL, :a, :pr, 'user', :t, :t)"),
                         {"m": model_id, "p": model_id.split(":")[0], "a": active, "pr": priority, "t": now})
        conn.execute(text("INSERT INTO call_metrics (ts, request_id, requested_model, model, provider, outcome, "
                          "latency_ms, streamed) VALUES (:ts, 'r1', 'openai:gpt-4.1-mini', 'openai:gpt-4.1-mini', "
                          "'openai', 'ok', 120.0, 0)"), {"ts": time.time() - 60})
        conn.execute(text("INSERT INTO model_failures (model_id, error_kind, message, since, until, failure_count) "
                          "VALUES ('custom:vllm-llama', 'rate_limit', 'slow down', :s, :u, 1)"),
                     {"s": now, "u": now + timedelta(minutes=10)})
    engine.dispose()
    return url


def test_todays_ids_keys_registry_metrics_and_cooldowns_keep_working_after_0007(tmp_path: Path) -> None:
    secret = Fernet.generate_key().decode()
    url = _database_at_0006_with_data(tmp_path / "old.db", Fernet(secret.encode()))

    with respx.mock(assert_all_called=False) as wire:
        sent = wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("still here"))
        with Orchestrator.from_settings(settings(url, secret_key=secret, local_hosts=())) as orch:
            result = orch.chat("openai:gpt-4.1-mini", HELLO, fallback=False)
            keys = {(k.connection, k.label, k.state) for k in orch.keys_of()}
            models = {m.model_id: (m.active, m.priority) for m in orch.models()}
            orch.flush_metrics(5.0)
            stats = orch.metric_query("model_stats", time.time() - 3600)
            cooling = {e.model_id for e in orch.cooldowns()}
            connections = {c.name: (c.kind, c.seeded, c.key_count) for c in orch.connections()}

    assert result.text == "still here"
    assert sent.calls.last.request.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # the stored key, decrypted
    assert keys == {("openai", "work", "ok"), ("custom", "work", "ok")}
    assert models["custom:vllm-llama"] == (True, 7) and models["lmstudio:qwen2.5-7b-instruct"] == (False, 9)
    assert stats["openai:gpt-4.1-mini"].calls == 2  # the old row and this call's
    assert cooling == {"custom:vllm-llama"}
    assert connections["custom"] == ("openai-compatible", True, 1)
    assert connections["openai"] == ("openai", True, 1)
    assert connections["lmstudio"] == ("lmstudio", True, 0)


def test_the_migrations_form_one_chain_with_costs_after_connections() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [script.get_current_head()]  # one head: no branch left to merge
    chain = [rev.revision for rev in script.walk_revisions("base", "heads")]
    assert chain[:3] == ["0008", "0007", "0006"]


def test_a_0006_database_with_data_upgrades_to_head_with_connections_and_costs(tmp_path: Path) -> None:
    secret = Fernet.generate_key().decode()
    url = _database_at_0006_with_data(tmp_path / "old.db", Fernet(secret.encode()))

    with respx.mock(assert_all_called=False) as wire:
        wire.post(f"{OPENAI}/chat/completions").respond(json=openai_answer("priced"))
        with Orchestrator.from_settings(settings(url, secret_key=secret, local_hosts=())) as orch:
            orch.chat("openai:gpt-4.1-mini", HELLO, fallback=False)
            orch.flush_metrics(5.0)
            orch.set_group("default", ["openai:gpt-4.1-mini"])
    engine = create_engine(url)
    with engine.connect() as conn:
        costs = conn.execute(text("SELECT request_id, cost_usd, price_source FROM call_metrics")).all()
        groups = conn.execute(text("SELECT name FROM model_groups")).scalars().all()
        areas = set(conn.execute(text("SELECT area FROM cache_generations")).scalars())
    engine.dispose()
    assert {row.request_id for row in costs if row.cost_usd is None} >= {"r1"}  # the old row: cost unknown
    assert any(row.cost_usd is not None and row.cost_usd > 0 for row in costs)  # this call: priced
    assert groups == ["default"]
    assert areas >= {"connections", "groups", "pricing", "spend"}
