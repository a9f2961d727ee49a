"""The parts of the test run that need a real component (PostgreSQL, llama-server, a browser).

A part whose component cannot be started does not run. Under ``CI=true`` that is a failure that says why;
on a developer's machine its tests are skipped with a plain reason, and the end of the run lists, per part,
how many tests ran and why a part did not.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, NoReturn

import pytest

PARTS = {
    "postgresql": "PostgreSQL",
    "real": "real llama-server",
    "e2e": "browser",
}
NOT_RUN = "part did not run:"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(part: str, reason: str) -> NoReturn:
    """Stop a test whose component is missing: a failure under CI, a skip with the reason elsewhere."""
    message = f"{PARTS[part]} {NOT_RUN} {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true runs every part)", pytrace=False)
    pytest.skip(message)


def part_of(nodeid: str) -> str:
    """Which part a test belongs to, from its node id."""
    if nodeid.startswith("tests/e2e/"):
        return "e2e"
    if nodeid.startswith("tests/real/"):
        return "real"
    if "[postgresql" in nodeid:
        return "postgresql"
    return "sqlite"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Per part: how many tests passed, failed, were skipped, and why a part did not run."""
    stats = terminalreporter.stats
    counts: dict[str, Counter[str]] = {}
    reasons: dict[str, set[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid or (outcome == "passed" and getattr(report, "when", "call") != "call"):
                continue
            part = part_of(nodeid)
            counts.setdefault(part, Counter())[outcome] += 1
            if outcome == "skipped" and NOT_RUN in str(report.longrepr):
                reasons.setdefault(part, set()).add(_skip_reason(report))
    if not counts:
        return
    terminalreporter.section("tests per part")
    for part in ("sqlite", "postgresql", "real", "e2e"):
        counter = counts.get(part)
        if counter is None:
            continue
        ran = counter["passed"] + counter["failed"] + counter["error"] + counter["xfailed"] + counter["xpassed"]
        label = {"sqlite": "core + SQLite"}.get(part, PARTS.get(part, part))
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counter.items()))
        terminalreporter.write_line(f"{label}: {ran} ran ({detail})")
        for reason in sorted(reasons.get(part, ())):
            terminalreporter.write_line(f"    NOT RUN: {reason}")


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(text).removeprefix("Skipped: ")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test fails the run: every part must run there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if in_ci() and skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; every part must run in CI.", red=True)
