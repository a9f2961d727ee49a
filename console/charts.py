"""Plotly figures from the SQL-aggregated metric lists (a few hundred rows at most, never raw calls)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go

_OUTCOME_COLORS = {"ok": "rgba(46, 160, 67, 0.6)", "error": "rgba(218, 54, 51, 0.6)",
                   "skipped": "rgba(150, 150, 150, 0.5)"}


LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0}  # under the ticks


def _layout(fig: go.Figure, title: str, y_title: str = "", x_title: str = "") -> go.Figure:
    # The legend below the plot, in rows: at its default place on the right it took most of a phone's width.
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, legend_title_text="",
                      legend=LEGEND_BELOW, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=400)
    return fig


def _by_model(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["model"]].append(row)
    return dict(sorted(groups.items()))


def _when(bucket: float) -> datetime:
    return datetime.fromtimestamp(bucket, UTC).astimezone()


def percentile_series(rows: Sequence[dict[str, Any]], title: str) -> go.Figure:
    """p50 (solid) and p95 (dotted) per model and time bucket, from latency_series / ttft_series."""
    fig = go.Figure()
    for model, points in _by_model(rows).items():
        x = [_when(p["bucket"]) for p in points]
        fig.add_scatter(x=x, y=[p["p50_ms"] for p in points], mode="lines+markers", name=f"{model} p50",
                        legendgroup=model, customdata=[p["calls"] for p in points],
                        hovertemplate="%{y:.0f} ms (%{customdata} calls)")
        fig.add_scatter(x=x, y=[p["p95_ms"] for p in points], mode="lines", name=f"{model} p95",
                        legendgroup=model, line={"dash": "dot"}, hovertemplate="%{y:.0f} ms")
    return _layout(fig, title, "ms")


def latency_distribution(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Overlaid latency histograms per model, from latency_histogram's shared bins."""
    fig = go.Figure()
    for model, bins in _by_model(rows).items():
        fig.add_bar(
            x=[(b["bin_start_ms"] + b["bin_end_ms"]) / 2 for b in bins],
            y=[b["count"] for b in bins],
            width=[b["bin_end_ms"] - b["bin_start_ms"] for b in bins],
            name=model, opacity=0.6,
        )
    fig.update_layout(barmode="overlay")
    return _layout(fig, "Latency distribution (successful calls)", "calls", "ms")


def outcome_label(row: dict[str, Any]) -> str:
    """"ok", or the outcome with its error kind: "error: rate_limit"."""
    kind = row.get("error_kind")
    return row["outcome"] if row["outcome"] == "ok" or not kind else f"{row['outcome']}: {kind}"


def calls_by_outcome(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Stacked bars per model: successful calls, errors by kind, skipped (cooling down)."""
    labels = sorted({outcome_label(r) for r in rows}, key=lambda k: (k != "ok", k))
    models = sorted({r["model"] for r in rows})
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        counts[(row["model"], outcome_label(row))] += int(row["calls"])
    fig = go.Figure()
    for label in labels:
        color = _OUTCOME_COLORS["ok"] if label == "ok" else None
        fig.add_bar(x=models, y=[counts[(m, label)] for m in models], name=label, marker_color=color)
    fig.update_layout(barmode="stack")
    return _layout(fig, "Calls and errors by model", "attempts")


def fallback_sankey(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Which model fell back to which: left the model that failed, right the one tried next."""
    sources = sorted({r["source"] for r in rows})
    targets = sorted({r["target"] for r in rows})
    # Separate left and right nodes: a model can be both, and a loop would hide the direction.
    nodes = [f"{m} (failed)" for m in sources] + [f"{m} (tried next)" for m in targets]
    left = {m: i for i, m in enumerate(sources)}
    right = {m: len(sources) + i for i, m in enumerate(targets)}
    fig = go.Figure(go.Sankey(
        node={"label": nodes, "pad": 18, "thickness": 14},
        link={
            "source": [left[r["source"]] for r in rows],
            "target": [right[r["target"]] for r in rows],
            "value": [int(r["calls"]) for r in rows],
            "label": [r["outcome"] for r in rows],
            "color": [_OUTCOME_COLORS.get(r["outcome"], _OUTCOME_COLORS["skipped"]) for r in rows],
        },
    ))
    return _layout(fig, "Fallback flows (green: the fallback answered, red: it failed too)")


# -- spend (issue 11) -------------------------------------------------------------------------------
def spend_over_time(rows: Sequence[dict[str, Any]], by: str, title: str) -> go.Figure:
    """Stacked USD bars per time bucket and model (by="model") or connection (by="provider"), from spend_series."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[by]].append(row)
    fig = go.Figure()
    for key, points in sorted(groups.items()):
        fig.add_bar(x=[_when(p["bucket"]) for p in points], y=[p["cost_usd"] for p in points], name=key,
                    customdata=[p["priced_calls"] for p in points],
                    hovertemplate="$%{y:.6f} (%{customdata} priced calls)")
    fig.update_layout(barmode="stack")
    return _layout(fig, title, "USD")


def fallback_cost_bars(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Per fallback (from → answered by): what its answers cost next to what the requested model would have."""
    labels = [f"{r['source']} → {r['target']}" for r in rows]
    fig = go.Figure()
    fig.add_bar(x=labels, y=[r["requested_cost_usd"] for r in rows], name="requested model would have cost")
    fig.add_bar(x=labels, y=[r["cost_usd"] for r in rows], name="the fallback cost")
    fig.update_layout(barmode="group")
    return _layout(fig, "Cost of fallbacks (answers priced on both sides)", "USD")
