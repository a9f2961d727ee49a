"""The API keys page's pools: keys grouped by connection, with each key's state, without Streamlit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from orchestrator_core.store import KeyInfo

from . import views

STATE_TEXT = {"ok": "✅ ok", "cooling": "⏸️ cooling", "rejected": "❌ rejected", "exhausted": "🪫 out of quota",
              "untested": "· untested"}


def by_connection(keys: Sequence[KeyInfo]) -> dict[str, list[KeyInfo]]:
    """Keys per connection, each pool in the order a call tries it (the environment key last)."""
    pools: dict[str, list[KeyInfo]] = {}
    for key in sorted(keys, key=lambda k: k.position):
        pools.setdefault(key.connection, []).append(key)
    return pools


def pool_rows(keys: Sequence[KeyInfo], now: float | None = None) -> list[dict[str, Any]]:
    """One pool's table: the masked key, its test, and its state in the pool (never the key itself)."""
    now = time.time() if now is None else now
    rows = views.key_rows(keys)
    for row, key in zip(rows, keys, strict=True):
        cooling = key.cooling_until is not None and key.cooling_until > now
        row.update({
            "State": STATE_TEXT.get(key.state, key.state),
            "Cooling until": views.local_time(key.cooling_until) if cooling else "",
            "Last used": views.local_time(key.last_used_at) if key.last_used_at else "never",
            "Last error": key.last_error or "",
        })
    return rows


def pool_title(display_name: str, count: int, mode: str) -> str:
    """'desk (LM Studio) · 2 keys · ordered'."""
    return f"{display_name} · {count} key{'' if count == 1 else 's'} · {mode}"
