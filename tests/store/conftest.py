"""Fixtures for the persistence tests: a migrated database per test, disposed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator_core.store import Database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    yield database
    database.dispose()
