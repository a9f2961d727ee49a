"""Plotly figures built from the SQL-aggregated lists the metric queries return."""

from __future__ import annotations

from console import charts


def test_percentile_series_draws_p50_and_p95_per_model() -> None:
    rows = [{"bucket": 0.0, "model": "a:1", "calls": 3, "p50_ms": 100.0, "p95_ms": 180.0},
            {"bucket": 60.0, "model": "a:1", "calls": 1, "p50_ms": 110.0, "p95_ms": 110.0},
            {"bucket": 0.0, "model": "b:1", "calls": 2, "p50_ms": 300.0, "p95_ms": 400.0}]
    fig = charts.percentile_series(rows, "Latency")
    assert [t.name for t in fig.data] == ["a:1 p50", "a:1 p95", "b:1 p50", "b:1 p95"]
    assert list(fig.data[0].y) == [100.0, 110.0] and list(fig.data[1].y) == [180.0, 110.0]
    assert fig.layout.title.text == "Latency"


def test_latency_distribution_overlays_one_histogram_per_model() -> None:
    rows = [{"model": "a:1", "bin_start_ms": 0.0, "bin_end_ms": 10.0, "count": 2},
            {"model": "a:1", "bin_start_ms": 10.0, "bin_end_ms": 20.0, "count": 0},
            {"model": "b:1", "bin_start_ms": 0.0, "bin_end_ms": 10.0, "count": 5}]
    fig = charts.latency_distribution(rows)
    assert [t.name for t in fig.data] == ["a:1", "b:1"]
    assert list(fig.data[0].x) == [5.0, 15.0] and list(fig.data[0].y) == [2, 0]
    assert fig.layout.barmode == "overlay"


def test_calls_by_outcome_stacks_ok_first_then_error_kinds() -> None:
    rows = [{"model": "a:1", "outcome": "error", "error_kind": "rate_limit", "calls": 2},
            {"model": "a:1", "outcome": "ok", "error_kind": None, "calls": 5},
            {"model": "b:1", "outcome": "skipped", "error_kind": "cooling_down", "calls": 1}]
    fig = charts.calls_by_outcome(rows)
    assert [t.name for t in fig.data] == ["ok", "error: rate_limit", "skipped: cooling_down"]
    assert list(fig.data[0].y) == [5, 0] and list(fig.data[2].y) == [0, 1]


def test_fallback_sankey_links_failed_model_to_the_one_tried_next() -> None:
    rows = [{"source": "lmstudio:q", "target": "openai:g", "outcome": "ok", "calls": 4},
            {"source": "openai:g", "target": "anthropic:c", "outcome": "error", "calls": 1}]
    sankey = charts.fallback_sankey(rows).data[0]
    labels = list(sankey.node.label)
    assert labels == ["lmstudio:q (failed)", "openai:g (failed)", "anthropic:c (tried next)", "openai:g (tried next)"]
    links = list(zip(sankey.link.source, sankey.link.target, sankey.link.value, strict=False))
    assert links == [(0, 3, 4), (1, 2, 1)]
