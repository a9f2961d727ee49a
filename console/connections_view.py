"""The Connections page's rows and sentences, without Streamlit (testable on plain data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator_core.connections import Connection, ConnectionTest, KindInfo
from orchestrator_core.loader import HostStatus
from orchestrator_core.types import KeyCheck

KEY_WORDS = {KeyCheck.OK: "accepted", KeyCheck.REJECTED: "rejected", KeyCheck.UNVERIFIED: "could not be checked"}


def kind_label(kind: KindInfo) -> str:
    """'LM Studio (lmstudio), local host' for the kind picker."""
    where = "local host" if kind.local else ("needs a key" if kind.needs_key else "hosted")
    return f"{kind.display_name} ({kind.kind}), {where}"


def status_text(connection: Connection, kind: KindInfo, host: HostStatus | None) -> str:
    """One cell: what this connection can do right now, as far as is known without a request."""
    if not connection.enabled:
        return "⏸️ disabled"
    if host is not None:
        if host.reachable:
            return f"🟢 up: {host.loaded} loaded of {host.models}"
        return "🔴 not reachable"
    if kind.local:
        return "⚪ not probed (not in LOCAL_HOSTS)"
    if kind.needs_key and connection.key_count == 0:
        return "❌ no key"
    return f"✅ {_count(connection.key_count, 'key')}" if connection.key_count else "✅ enabled"


def connection_rows(connections: Sequence[Connection], kinds: Mapping[str, KindInfo],
                    hosts: Mapping[str, HostStatus]) -> list[dict[str, Any]]:
    """The connections table: nothing secret (keys are counted, URLs masked)."""
    return [
        {
            "Name": c.name,
            "Kind": kinds[c.kind].display_name if c.kind in kinds else c.kind,
            "Base URL": c.shown_url,
            "Status": status_text(c, kinds[c.kind], hosts.get(c.name)) if c.kind in kinds else "unknown kind",
            "Keys": c.key_count,
            "Key mode": c.key_mode.value,
            "Source": "environment" if c.seeded else "added",
        }
        for c in connections
    ]


def test_summary(test: ConnectionTest, kind: KindInfo) -> tuple[str, list[str]]:
    """('success' | 'warning' | 'error', the lines to show) for a Test result."""
    lines = [f"Reachable: {'yes' if test.reachable else 'no'} ({test.latency_ms:.0f} ms)."]
    if test.model_count is not None:
        lines.append(f"Models: {test.model_count}.")
    if test.key is not None:
        lines.append(f"Key: {KEY_WORDS[test.key]}.")
    elif kind.needs_key:
        lines.append("Key: none stored or set; add one on the API keys page.")
    lines.append(test.detail)
    if not test.reachable:
        return "error", lines
    return ("success" if test.key in (None, KeyCheck.OK) else "warning"), lines


def removal_text(connection: Connection, model_count: int, key_count: int = 0) -> str:
    """What Remove does to this connection, said before it happens."""
    if connection.seeded:
        return (f"{connection.name} comes from the environment, so it is disabled rather than removed: its models "
                "are skipped until you enable it again.")
    models = _count(model_count, "registered model")
    verb = "is" if model_count == 1 else "are"
    keys = (f" Its {_count(key_count, 'stored key')} {'is' if key_count == 1 else 'are'} deleted with it."
            if key_count else "")
    return (f"{connection.name} is removed. Its {models} {verb} deactivated (not deleted), and their metrics are kept. "
            f"Model ids starting with “{connection.name}:” stop working.{keys}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
