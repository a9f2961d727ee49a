"""Fixtures for the persistence tests: every test runs on SQLite and on a real PostgreSQL.

A test marked ``sqlite_only`` checks something only SQLite has (pragmas, file permissions, a corrupt file);
``postgresql_only`` one that only a server has (the advisory migration lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core.store import Database
from tests import parts, pg_server

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test checks a SQLite-only behaviour")
    config.addinivalue_line("markers", "postgresql_only: the test checks a PostgreSQL-only behaviour")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marked = [b for b in BACKENDS if metafunc.definition.get_closest_marker(f"{b}_only")]
        backends = marked or list(BACKENDS)
        metafunc.parametrize("backend", backends)


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PostgresServer]:
    """One throwaway cluster per test process (each xdist worker has its own), stopped at the end."""
    try:
        server = pg_server.start()
    except (pg_server.PostgresUnavailableError, OSError) as error:
        parts.unavailable("postgresql", str(error))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(postgres: pg_server.PostgresServer) -> str:
    """A database migrated to head once; each test gets a copy (CREATE DATABASE ... TEMPLATE)."""
    url = postgres.create_database()
    Database.open(url).dispose()  # no connection may stay open on a template
    return url.rsplit("/", 1)[1]


@pytest.fixture
def db_url(db_url: str, backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh, already migrated database of this test's backend."""
    if backend == "sqlite":
        return db_url
    server: pg_server.PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(template=request.getfixturevalue("pg_template"))


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database that has never been migrated."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: pg_server.PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    yield database
    database.dispose()
