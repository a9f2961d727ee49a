"""Benchmark: the console's metric queries over a million call metrics on SQLite. Prints a table; asserts nothing.

    python bench/metrics_queries.py [--rows 1000000] [--days 7] [--runs 5] [--keep PATH]

Seeds a temporary SQLite database with --rows attempts spread over --days days across 12 models (errors,
skips, fallback chains, streamed answers with a time to first token), written in batches through
rollup.write_batch: the very function the metrics writer runs, so the minute and hour rollups are built
the way production builds them (no ANALYZE afterwards: the console's database never gets one either). Then times every query the console runs for the last hour, 24 hours and 7 days,
with the bucket sizes the Models page uses. Target: every query under about 200 ms for 7 days.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from orchestrator_core.store import Database, metrics, rollup, spend
from orchestrator_core.store.tables import CallMetric, call_metrics_hour, call_metrics_minute

# model id -> (share of requests, median latency ms, error rate)
MODELS: dict[str, tuple[float, float, float]] = {
    "openai:gpt-4.1-mini": (20, 900, 0.02),
    "openai:gpt-4.1": (8, 2200, 0.02),
    "anthropic:claude-haiku-4-5": (12, 800, 0.03),
    "anthropic:claude-sonnet-4-5": (6, 2600, 0.04),
    "google:gemini-2.5-flash": (10, 700, 0.03),
    "google:gemini-2.5-pro": (4, 3500, 0.05),
    "mistral:mistral-small-latest": (6, 600, 0.02),
    "custom:deepseek-chat": (5, 1500, 0.06),
    "lmstudio:qwen2.5-7b-instruct": (10, 400, 0.04),
    "ollama:llama3.2:3b": (10, 250, 0.03),
    "ollama:qwen2.5-coder:7b": (5, 600, 0.05),
    "llamacpp:phi-4": (4, 500, 0.08),
}
# error kind -> (share of errors, latency ms of the failed attempt)
ERRORS = {"rate_limit": (0.35, 150), "timeout": (0.15, 30000), "unavailable": (0.3, 20), "server_error": (0.2, 1200)}
# USD per million input / output tokens by provider; custom is unpriced (its cost is unknown, NULL).
PRICES = {"openai": (0.4, 1.6), "anthropic": (1.0, 5.0), "google": (0.3, 2.5), "mistral": (0.1, 0.3),
          "lmstudio": (0.0, 0.0), "ollama": (0.0, 0.0), "llamacpp": (0.0, 0.0)}
SKIP_RATE = 0.015  # the model was cooling down: skipped without a request
STREAMED_SHARE = 0.6
BATCH = 20_000
# The Models page's ranges and the bucket sizes console.views.bucket_seconds picks for them.
RANGES = (("last hour", 3600, 60), ("24 hours", 86400, 1800), ("7 days", 7 * 86400, 10800))

NAMES = list(MODELS)
WEIGHTS = list(itertools.accumulate(share for share, _, _ in MODELS.values()))
# The orchestrator walks alternatives in priority order, so each model falls back to a few others:
# mostly the next one in that order, sometimes (that one cooling down or its provider dead) the one after.
FALLBACKS = {name: (NAMES[(i + 1) % len(NAMES)], NAMES[(i + 2) % len(NAMES)]) for i, name in enumerate(NAMES)}


def attempts(rng: random.Random, request: int, ts: float) -> Iterator[dict[str, Any]]:
    """The attempts of one request: the requested model, then fallbacks until one answers (at most 3)."""
    requested = rng.choices(NAMES, cum_weights=WEIGHTS)[0]
    streamed = rng.random() < STREAMED_SHARE
    model, previous = requested, None
    for _ in range(3):
        _, median, error_rate = MODELS[model]
        row: dict[str, Any] = {
            "ts": ts, "request_id": f"r{request:09d}", "requested_model": requested, "model": model,
            "provider": model.partition(":")[0], "outcome": "ok", "error_kind": None, "error": None,
            "latency_ms": 0.0, "ttft_ms": None, "prompt_tokens": None, "completion_tokens": None,
            "fallback_from": previous, "streamed": streamed, "input_cost_usd": None, "output_cost_usd": None,
            "cost_usd": None, "price_source": None, "requested_cost_usd": None,
        }
        draw = rng.random()
        if draw < SKIP_RATE:
            row.update(outcome="skipped", error_kind="cooling_down", error=f"{model} is cooling down")
        elif draw < SKIP_RATE + error_rate:
            kind = rng.choices(list(ERRORS), weights=[s for s, _ in ERRORS.values()])[0]
            row.update(outcome="error", error_kind=kind, error=f"{model}: {kind}",
                       latency_ms=ERRORS[kind][1] * rng.uniform(0.7, 1.3))
        else:
            latency = rng.lognormvariate(math.log(median), 0.6)
            row.update(latency_ms=latency, prompt_tokens=rng.randint(20, 2000), completion_tokens=rng.randint(5, 800))
            price(row)
            if streamed:
                row["ttft_ms"] = latency * rng.uniform(0.08, 0.35)
        yield row
        if row["outcome"] == "ok":
            return
        ts += row["latency_ms"] / 1000
        first, second = FALLBACKS[model]
        previous, model = model, first if rng.random() < 0.8 else second


def price(row: dict[str, Any]) -> None:
    """The cost columns of an answered attempt, as the orchestrator writes them (unpriced models stay NULL)."""
    rates = PRICES.get(row["provider"])
    if rates is None:
        return
    row["input_cost_usd"] = row["prompt_tokens"] * rates[0] / 1e6
    row["output_cost_usd"] = row["completion_tokens"] * rates[1] / 1e6
    row["cost_usd"] = row["input_cost_usd"] + row["output_cost_usd"]
    row["price_source"] = "bench"
    requested = PRICES.get(row["requested_model"].partition(":")[0])
    if row["fallback_from"] and requested is not None:
        row["requested_cost_usd"] = (row["prompt_tokens"] * requested[0] + row["completion_tokens"] * requested[1]) / 1e6


def generate(rows: int, days: float, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """`rows` attempts in time order over `days` days ending now, in batches of BATCH."""
    rng = random.Random(seed)
    end = time.time()
    span = days * 86400
    batch: list[dict[str, Any]] = []
    request = written = 0
    while written < rows:
        # Placed by the rows made so far, so exactly `rows` rows spread evenly up to now.
        ts = end - span + (written + len(batch) + rng.random()) * span / rows
        batch.extend(attempts(rng, request, ts))
        request += 1
        if len(batch) >= BATCH or written + len(batch) >= rows:
            batch = batch[: rows - written]
            written += len(batch)
            yield batch
            batch = []


def seed(db: Database, rows: int, days: float) -> float:
    """Write the rows batch by batch as the metrics writer does: raw rows and rollup in one transaction."""
    started = time.perf_counter()
    for batch in generate(rows, days):
        with db.engine.begin() as conn:
            rollup.write_batch(conn, batch)
    return time.perf_counter() - started


def timed(call: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(first run, median of the rest) in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:] or times)


def queries(db: Database, now: float, span: float, bucket: int) -> dict[str, Callable[[], Any]]:
    since = now - span
    return {
        "summary": lambda: metrics.summary(db, since),
        "model_stats (raw)": lambda: metrics.model_stats(db, since),
        "calls_by_outcome": lambda: metrics.calls_by_outcome(db, since, now),
        "latency_series": lambda: metrics.latency_series(db, since, now, bucket),
        "latency_histogram": lambda: metrics.latency_histogram(db, since, now),
        "ttft_series": lambda: metrics.ttft_series(db, since, now, bucket),
        "fallback_flows": lambda: metrics.fallback_flows(db, since, now),
        "spend_total": lambda: spend.spend_total(db, since, now),
        "spend_by_provider": lambda: spend.spend_by_provider(db, since),
        "spend_series model": lambda: spend.spend_series(db, since, now, max(bucket, 3600), "model"),
        "spend_series conn.": lambda: spend.spend_series(db, since, now, max(bucket, 3600), "provider"),
        "spend_by_model": lambda: spend.spend_by_model(db, since, now),
        "fallback_costs": lambda: spend.fallback_costs(db, since, now),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the database here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        db = Database.open(f"sqlite:///{path}")
        seconds = seed(db, args.rows, args.days)
        with db.engine.connect() as conn:
            raw = conn.execute(select(func.count()).select_from(CallMetric)).scalar_one()
            minutes, hours = (conn.execute(select(func.count()).select_from(t)).scalar_one()
                              for t in (call_metrics_minute, call_metrics_hour))
        print(f"seeded {raw:,} rows over {args.days:g} days in {seconds:.1f} s through rollup.write_batch "
              f"(raw rows + rollups, {BATCH:,} rows a transaction); rollup rows: {minutes:,} per minute, "
              f"{hours:,} per hour; file {path.stat().st_size / 2**20:.0f} MiB")
        now = math.ceil(time.time() / 60) * 60  # as console.state.minute_now
        print(f"\n{'query':<20} {'range':<10} {'bucket':>7} {'first ms':>9} {'median ms':>10} {'result rows':>12}")
        worst = 0.0
        for label, span, bucket in RANGES:
            for name, call in queries(db, now, span, bucket).items():
                first, median = timed(call, args.runs)
                result = call()
                size = len(result) if isinstance(result, (list, dict)) else 1
                print(f"{name:<20} {label:<10} {bucket:>6}s {first:>9.1f} {median:>10.1f} {size:>12}")
                if span == RANGES[-1][1] and "raw" not in name:
                    worst = max(worst, first, median)
            print()
        verdict = "OK" if worst <= 200 else "OVER TARGET"
        print(f"slowest rollup query over 7 days: {worst:.1f} ms (target <= 200 ms)  {verdict}")
        db.dispose()


if __name__ == "__main__":
    main()
