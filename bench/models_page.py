"""Benchmark: how fast the Models page (and the Usage page) answer over a million call metrics. Prints; asserts nothing.

    python bench/models_page.py [--rows 1000000] [--days 7] [--runs 5] [--db PATH]

Seeds a SQLite file the way bench/metrics_queries.py does (through rollup.write_batch; --db reuses a file seeded
before), registers its 12 models, then drives the pages with Streamlit's AppTest, the same script runs a browser
session gets: opening the page, a table action (Reset failure on the picked model), changing the auto-refresh interval, and on the Usage page changing the range.
Each figure is the wall time of one script run in milliseconds, the median of --runs: "warm" with the metric
cache as a session usually finds it (entries last METRICS_TTL_S), "cold" with it cleared before every run, so
each run pays for its own queries (an action right after an entry expired).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import streamlit as st
from metrics_queries import MODELS, seed
from streamlit.testing.v1 import AppTest

from orchestrator_core.store import Database


def prepare(path: Path, rows: int, days: float) -> None:
    """Seed the file unless it already holds metrics, and register the seeded models."""
    db = Database.open(f"sqlite:///{path}")
    try:
        with db.engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM call_metrics").scalar_one()
        if not count:
            print(f"seeding {rows:,} rows over {days:g} days into {path} …", flush=True)
            print(f"seeded in {seed(db, rows, days):.1f} s", flush=True)
        else:
            print(f"reusing {path}: {count:,} metric rows", flush=True)
    finally:
        db.dispose()


def register(at: AppTest) -> None:
    from console import shared

    registry = shared.orchestrator().registry
    known = {e.model_id for e in registry.list()}
    for model_id in MODELS:
        if model_id not in known:
            registry.add(model_id)


def timed(at: AppTest, action: Callable[[AppTest], object], runs: int) -> tuple[float, float]:
    """(warm, cold) median ms of the script run an action triggers."""
    medians = []
    for cold in (False, True):
        times = []
        for _ in range(runs):
            if cold:
                st.cache_data.clear()
            started = time.perf_counter()
            action(at)
            at.run()
            times.append((time.perf_counter() - started) * 1000)
            if at.exception:
                raise SystemExit(f"the page raised: {at.exception[0].value}")
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def widget(at: AppTest, kind: str, key: str) -> object:
    return next(w for w in getattr(at, kind) if w.key == key)


def interval_cycle() -> Callable[[AppTest], object]:
    choices = iter(["10 s", "5 s"] * 100)
    return lambda at: widget(at, "selectbox", "models_interval").set_value(next(choices))  # type: ignore[attr-defined]


def range_cycle() -> Callable[[AppTest], object]:
    choices = iter(["Last 7 days", "Last 24 hours"] * 100)
    return lambda at: widget(at, "radio", "chart_range").set_value(next(choices))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="seed (or reuse) this file instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        prepare(path, args.rows, args.days)
        os.environ.update(DATABASE_URL=f"sqlite:///{path}", LOCAL_HOSTS="", ORCHESTRATOR_HOME=tmp)
        os.environ.pop("CONSOLE_PASSWORD", None)
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
        at.run()
        register(at)
        figures: list[tuple[str, tuple[float, float]]] = []
        figures.append(("Models: open the page", timed(at, lambda a: a.switch_page("app_pages/models.py"), args.runs)))
        figures.append(("Models: Reset failure (table action)",
                        timed(at, lambda a: widget(a, "button", "action_reset").click(), args.runs)))  # type: ignore[attr-defined]
        figures.append(("Models: change auto-refresh", timed(at, interval_cycle(), args.runs)))
        usage = ROOT / "app_pages" / "usage.py"
        if usage.exists():
            figures.append(("Usage: open the page", timed(at, lambda a: a.switch_page("app_pages/usage.py"), args.runs)))
            figures.append(("Usage: change the range", timed(at, range_cycle(), args.runs)))
        print(f"\n{'script run':<40} {'warm ms':>9} {'cold ms':>9}")
        for label, (warm, cold) in figures:
            print(f"{label:<40} {warm:>9.0f} {cold:>9.0f}")


if __name__ == "__main__":
    main()
