"""What the ``status`` command reads, through the standard library's sqlite3: no SQLAlchemy, no Alembic.

A status check reads five things: the registered models, the failure cache, the connections (the
seeded ones with the operator's edits, and the added ones), which connections have a usable key (and
that this secret is the database's), and the schema revision. On a SQLite file at the newest
revision these few queries cost a millisecond; importing SQLAlchemy costs a CLI start ~0.4 s.

``ReadOnlyStore.open`` answers None whenever the full start must run instead, so that one says what it
always said: a server database or an unusual URL, a file that is not there yet or not at the newest
revision (it must be migrated), a file or folder the full start would refuse, metric rows an earlier
process spooled (a start writes them), no secret verifier yet (the first start records it), or any
SQLite error (the full start explains it). ``NeedsWrite`` is raised when a host lists a model that is
not registered yet: discovery registers it, and that is a write.

The queries are those of registry.py, failures.py, connections.py and keys.py, in the same order, and
the rows go through the same functions (connections.merge_connections, the pool rules of secret.py); a
test holds the output of both paths equal on the same database and host.
"""

from __future__ import annotations

import builtins
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings, home_dir
from ..connections import FixedConnections, StoredConnection, merge_connections, seeded
from ..errors import InvalidModelIdError
from ..types import ModelRef
from .revision import head_revision
from .secret import (
    VERIFIER_KEY,
    KeyState,
    PoolRow,
    check_signed,
    check_signed_verifier,
    decrypt,
    explain_unusable,
    pick_secret,
    usable_keys,
)
from .spool import Spool

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

BUSY_TIMEOUT_S = 5.0  # as db.BUSY_TIMEOUT_MS: a reader waits this long for another process's lock
USER_ID = "local"  # KeyStore's default user, the one the command line and the console use

# Only the plain forms; anything else (a query string, a URI filename, an escape) goes the full way.
_SQLITE_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?#%]+)")


class NeedsWrite(Exception):  # noqa: N818 - a signal to take the full path, not an error
    """The status check would write (discover a new model): the full start must run."""


@dataclass(frozen=True)
class ReadOnlyModel:
    """The fields of registry.ModelEntry that a status check reads."""

    model_id: str
    active: bool
    priority: int


@dataclass(frozen=True)
class ReadOnlyFailure:
    """The fields of failures.FailureEntry that a status check reads."""

    model_id: str
    error_kind: str
    message: str
    until: datetime  # UTC


class ReadOnlyRegistry:
    """registry.ModelRegistry's reads, over rows read once."""

    def __init__(self, models: Iterable[ReadOnlyModel]) -> None:
        self._models = tuple(models)
        self._ids = {m.model_id for m in self._models}

    def list(self, active_only: bool = False) -> list[ReadOnlyModel]:
        """Models by priority, then model id."""
        return [m for m in self._models if m.active or not active_only]

    def sync_discovered(self, provider: str, names: Iterable[str]) -> builtins.list[str]:
        """Nothing to do when the host lists only registered models; else NeedsWrite."""
        for name in dict.fromkeys(names):
            try:
                model_id = ModelRef.parse(f"{provider.strip().lower()}:{name}").id
            except InvalidModelIdError:
                raise NeedsWrite(name) from None  # the full start logs why it skips such a name
            if model_id not in self._ids:
                raise NeedsWrite(model_id)
        return []


class ReadOnlyFailures:
    """failures.FailureCache's reads, over rows read once."""

    def __init__(self, failures: Iterable[ReadOnlyFailure]) -> None:
        self._rows = {f.model_id: f for f in failures}

    def active(self, now: datetime | None = None) -> dict[str, ReadOnlyFailure]:
        """Models still cooling down, by model id."""
        at = now or datetime.now(UTC)
        return {m: f for m, f in self._rows.items() if f.until > at}


@dataclass(frozen=True)
class ReadOnlyStore:
    """One consistent read of a current SQLite database: what a status check needs, nothing written."""

    dir: Path
    registry: ReadOnlyRegistry
    failures: ReadOnlyFailures
    stored_connections: tuple[StoredConnection, ...]  # the rows of the connections table, by name
    verifier: str
    all_keys: tuple[str, ...]  # every stored key's token (every user): the secret must decrypt them all
    keys: Mapping[str, tuple[PoolRow, ...]]  # this user's keys by connection, in pool order

    @classmethod
    def open(cls, database_url: str) -> ReadOnlyStore | None:
        """Read the database at database_url, or None when the full start must run (see the module)."""
        path = sqlite_file(database_url)
        if path is None or not _usable(path) or Spool.for_sqlite_file(path).pending():
            return None
        try:
            with closing(_connect(path)) as conn:
                return cls._read(conn, path)
        except sqlite3.Error:
            return None

    @classmethod
    def _read(cls, conn: sqlite3.Connection, path: Path) -> ReadOnlyStore | None:
        conn.execute("BEGIN")  # one snapshot for every read below
        revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
        verifier = conn.execute("SELECT value FROM app_meta WHERE key = ?", (VERIFIER_KEY,)).fetchone()
        if revisions != [head_revision()] or verifier is None:
            return None
        models = [ReadOnlyModel(m, bool(active), p) for m, active, p in conn.execute(
            "SELECT model_id, active, priority FROM ai_models ORDER BY priority, model_id")]
        failures = [ReadOnlyFailure(m, kind, message, _utc(until)) for m, kind, message, until in conn.execute(
            "SELECT model_id, error_kind, message, until FROM model_failures")]
        connections = tuple(
            StoredConnection(name, kind, url, options, bool(enabled), mode) for name, kind, url, options, enabled, mode
            in conn.execute("SELECT name, kind, base_url, options, enabled, key_mode FROM connections ORDER BY name"))
        keys: dict[str, list[PoolRow]] = {}
        for key_id, connection, token, status, fault, until in conn.execute(
                "SELECT id, provider, encrypted_key, last_test_status, fault, cooling_until FROM api_keys "
                "WHERE user_id = ? ORDER BY position, updated_at DESC, id DESC", (USER_ID,)):
            cooling = _utc(until) if until else None
            keys.setdefault(connection, []).append(PoolRow(key_id, token, status, fault, cooling))
        all_keys = tuple(row[0] for row in conn.execute("SELECT encrypted_key FROM api_keys"))
        return cls(path.parent, ReadOnlyRegistry(models), ReadOnlyFailures(failures), connections, str(verifier[0]),
                   all_keys, {c: tuple(rows) for c, rows in keys.items()})

    def connections(self, settings: Settings) -> FixedConnections:
        """The seeded connections with the stored edits, then the added ones (ConnectionStore.list)."""
        return FixedConnections(merge_connections(seeded(settings), self.stored_connections).values())

    def key_lookup(self, key: bytes, env_keys: Mapping[str, str]) -> KeyLookup:
        """KeyStore.verify_secret's checks (SecretKeyError), then KeyStore.secret_for over these rows.

        ``key`` is the Fernet key (secret.fernet_key): the checks read the tokens' signatures with the
        standard library, and a key is decrypted (cryptography imported) only when its plaintext is needed."""
        check_signed_verifier(key, self.verifier)
        for token in self.all_keys:
            check_signed(key, token)
        return KeyLookup(self.keys, {p: k for p, k in env_keys.items() if k}, key)


@dataclass
class KeyLookup:
    """KeyStore.secret_for and KeyStore.pool_problem over rows read once (a ProviderFactory's key lookups).

    The environment's key of a fresh process has no fault and no test yet: it is usable."""

    stored: Mapping[str, tuple[PoolRow, ...]]
    env_keys: Mapping[str, str]
    key: bytes = field(repr=False)
    _fernet: Fernet | None = field(default=None, init=False, repr=False)
    _plaintexts: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __call__(self, connection: str) -> str | None:
        stored, env_key, now = self.stored.get(connection, ()), self.env_keys.get(connection), datetime.now(UTC)
        usable = usable_keys(connection, stored, env_key, "ok", self._plaintext, now)
        return pick_secret(usable, stored, env_key, self._plaintext)

    def present(self, connection: str) -> bool:
        """bool(self(connection)) without decrypting: a stored key (never empty) or the environment's."""
        return bool(self.stored.get(connection)) or connection in self.env_keys

    def problem(self, connection: str) -> str | None:
        """Why the connection can use none of its keys now, or None."""
        now = datetime.now(UTC)
        states: list[tuple[KeyState, datetime | None]] = [
            (r.state(now), r.cooling_until) for r in self.stored.get(connection, ())]
        if connection in self.env_keys:
            states.append(("ok", None))
        return explain_unusable(connection, states)

    def rejected(self, connection: str) -> bool:
        """KeyStore.rejected: every key of the connection was rejected (a fresh process's env key never is)."""
        now = datetime.now(UTC)
        stored = self.stored.get(connection, ())
        return bool(stored) and connection not in self.env_keys and all(r.state(now) == "rejected" for r in stored)

    def _plaintext(self, token: str) -> str:
        plaintext = self._plaintexts.get(token)
        if plaintext is None:
            if self._fernet is None:
                from cryptography.fernet import Fernet  # noqa: PLC0415 - start-up cost: only now is it needed

                self._fernet = Fernet(self.key)
            plaintext = self._plaintexts[token] = decrypt(self._fernet, token)
        return plaintext


def sqlite_file(database_url: str) -> Path | None:
    """The file of a plain sqlite:///path URL (a relative path is under home_dir(), as db.py anchors it)."""
    match = _SQLITE_URL.fullmatch(database_url.strip())
    if match is None or match["path"] in ("", ":memory:") or match["path"].startswith("file:"):
        return None
    path = Path(match["path"]).expanduser()
    return (path if path.is_absolute() else home_dir() / path).absolute()


def _usable(path: Path) -> bool:
    """What db._check_sqlite_location accepts for an existing file (else it raises, with the fix)."""
    return (path.is_file() and os.access(path, os.R_OK | os.W_OK)
            and os.access(path.parent, os.W_OK | os.X_OK))


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _utc(stored: str) -> datetime:
    """A UTCDateTime column as SQLAlchemy's SQLite dialect stores it (naive UTC text), aware."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)
