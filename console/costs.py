"""Streamlit-free shaping of cost data for the pages: money text, the answer's cost, budget and override rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from console import views
from orchestrator_core.budgets import BudgetStatus
from orchestrator_core.store.prices import ALL_CONNECTIONS, OverrideEntry
from orchestrator_core.types import OrchestratedResult

STATE_ICONS = {"ok": "🟢 ok", "warning": "🟠 past 80 %", "exceeded": "🔴 spent: calls refused"}


def usd(value: float | None) -> str:
    """Money as text: small amounts keep their significant digits; None is "unknown", never "$0"."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.6f}".rstrip("0")
    return f"${value:,.2f}"


def cost_caption(result: OrchestratedResult) -> str:
    """The answer's cost, and what the failed attempts before it cost where they reported usage."""
    text = "cost unknown" if result.cost_usd is None else f"cost {usd(result.cost_usd)}"
    failed = result.failed_cost_usd
    if failed is not None:
        text += f" (+ {usd(failed)} for the failed attempts before it)"
    return text


def budget_rows(statuses: Sequence[BudgetStatus]) -> list[dict[str, Any]]:
    """One row per budget: whose, the period, the limit, the spend and share, its state."""
    return [
        {"connection": "all connections" if s.scope == ALL_CONNECTIONS else s.scope,
         "period": "month" if s.period == "month" else "day (UTC)", "budget USD": s.limit_usd,
         "spent USD": _round(s.spent_usd), "used": f"{min(s.share, 9.99):.0%}", "state": STATE_ICONS[s.state]}
        for s in statuses
    ]


def budget_warnings(statuses: Iterable[BudgetStatus]) -> list[str]:
    """A sentence for every budget past the warning share or spent."""
    lines = []
    for s in statuses:
        if s.state == "exceeded":
            lines.append(f"{s.label} (${s.limit_usd:,.2f}) is spent: its calls are refused and fallback skips it.")
        elif s.state == "warning":
            lines.append(f"{s.label} is {s.share:.0%} used (${s.spent_usd:,.2f} of ${s.limit_usd:,.2f}).")
    return [line[0].upper() + line[1:] for line in lines]


def override_rows(overrides: Sequence[OverrideEntry]) -> list[dict[str, Any]]:
    return [{"model or connection": o.target, "input $/M": o.input_per_mtok, "output $/M": o.output_per_mtok,
             "cached input $/M": _round(o.cached_input_per_mtok)} for o in overrides]


def spend_rows(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    """store.spend.spend_by_model rows for a table, most spent first; unknown costs stay empty, not 0."""
    shown = rows[:limit] if limit else rows
    return [{"model": r["model"], "spent USD": _round(r["cost_usd"]), "attempts": r["calls"],
             "priced attempts": r["priced_calls"], "USD per 1,000 calls": _round(r["cost_per_1k_calls_usd"])}
            for r in shown]


def fallback_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"fell back from": r["source"], "answered by": r["target"], "answers": r["answers"],
             "cost USD": _round(r["cost_usd"]), "requested model would have cost USD": _round(r["requested_cost_usd"]),
             "saved USD": _round(r["saved_usd"])} for r in rows]


def _round(value: float | None) -> str:
    """A dollar figure for a table cell: up to six decimals, "—" when it is unknown (never "None", never 0)."""
    return views.DASH if value is None else f"{value:.6f}".rstrip("0").rstrip(".")
