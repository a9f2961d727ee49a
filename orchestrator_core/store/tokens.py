"""Gateway tokens: bearer tokens for the HTTP API, stored only as a SHA-256 and compared in constant time.

A token reads ``orch_<token_id>_<secret>``. ``token_id`` is public (it finds the row, so a check is one
indexed read); the secret is 43 url-safe characters from ``secrets``, so a plain SHA-256 is as good as a
slow hash here (nothing to brute-force) and keeps a check in microseconds. The token itself is returned
once, by ``create``; nothing stores, logs or shows it afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import bindparam, select, update

from ..errors import InputError
from .db import Database
from .tables import GatewayToken, utcnow

Scope = Literal["chat", "admin"]
SCOPES: tuple[Scope, ...] = ("chat", "admin")
TOKEN_PREFIX = "orch"  # noqa: S105 - the public prefix of every token, not a secret
MAX_NAME_LEN = 100
_TOKEN_RE = re.compile(rf"^{TOKEN_PREFIX}_([0-9a-f]{{12}})_[A-Za-z0-9_-]{{43}}$")
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()  # compared when no row matches: same work either way

_TABLE = GatewayToken.__table__
_BY_TOKEN_ID = select(_TABLE).where(_TABLE.c.token_id == bindparam("token_id"))


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never the token or its hash."""

    id: int
    name: str
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewToken:
    """A token just created: the only moment its plaintext exists outside the caller's hands."""

    info: TokenInfo
    token: str


class TokenStore:
    """Gateway tokens in the database, shared by every process on it."""

    def __init__(self, db: Database, *, touch_every_s: float = 60.0, recheck_s: float = 1.0) -> None:
        self.db = db
        # last_used_at is written at most this often per token: a write per request would cost more than the call.
        self.touch_every_s = touch_every_s
        # A token checked against the database is trusted from memory for this long: a revoke in another
        # process takes effect within it (in this process at once). Keyed by digest, never by the token.
        self.recheck_s = recheck_s
        self._touched: dict[int, float] = {}
        self._checked: dict[str, tuple[TokenInfo, float]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scope: str = "chat") -> NewToken:
        """Make a token; the returned NewToken.token is shown once and never again."""
        name = _check_name(name)
        checked_scope = _check_scope(scope)
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        row = GatewayToken(token_id=token_id, name=name, scope=checked_scope, token_hash=_digest(token))
        with self.db.session() as s:
            taken = s.scalar(select(GatewayToken.id).where(GatewayToken.name == name,
                                                           GatewayToken.revoked_at.is_(None)))
            if taken is not None:
                raise InputError(
                    f"A gateway token named {name!r} already exists; pick another name or revoke it first."
                )
            s.add(row)
            s.flush()
            return NewToken(_info(row), token)

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, active first, newest first."""
        with self.db.session() as s:
            rows = s.scalars(select(GatewayToken).order_by(GatewayToken.revoked_at.is_not(None),
                                                           GatewayToken.created_at.desc(), GatewayToken.id.desc()))
            return [_info(row) for row in rows]

    def revoke(self, ref: int | str) -> TokenInfo:
        """Revoke a token by id or by name; every process refuses it from its next request on."""
        with self.db.session() as s:
            query = select(GatewayToken).where(GatewayToken.revoked_at.is_(None))
            if isinstance(ref, int) or ref.isdigit():
                query = query.where(GatewayToken.id == int(ref))
            else:
                query = query.where(GatewayToken.name == ref)
            row = s.scalars(query).first()
            if row is None:
                raise InputError(f"No active gateway token {ref!r}; list them with "
                                 "'python -m orchestrator_core tokens list'.")
            row.revoked_at = utcnow()
            s.flush()
        with self._lock:
            self._checked = {d: hit for d, hit in self._checked.items() if hit[0].id != row.id}
        return _info(row)

    def cached(self, token: str) -> TokenInfo | None:
        """A valid token's info from memory if it was checked within recheck_s (no database, no blocking)."""
        digest = _digest(token)
        hit = self._checked.get(digest)
        if hit is None or time.monotonic() - hit[1] >= self.recheck_s:
            return None
        return hit[0]

    def verify(self, token: str) -> TokenInfo | None:
        """The token's info when it is valid and not revoked, else None (constant-time comparison)."""
        info = self._verify(token)
        digest = _digest(token)
        with self._lock:
            if info is None:
                self._checked.pop(digest, None)
            else:
                if len(self._checked) > 10_000:
                    self._checked.clear()
                self._checked[digest] = (info, time.monotonic())
        return info

    def _verify(self, token: str) -> TokenInfo | None:
        match = _TOKEN_RE.match(token)
        with self.db.engine.connect() as conn:
            row = conn.execute(_BY_TOKEN_ID, {"token_id": match.group(1)}).first() if match else None
        expected = row.token_hash if row is not None else _DUMMY_HASH
        if not hmac.compare_digest(_digest(token), expected) or row is None or row.revoked_at is not None:
            return None
        info = TokenInfo(row.id, row.name, cast(Scope, row.scope), row.created_at, row.last_used_at, row.revoked_at)
        self._touch(info.id)
        return info

    def _touch(self, row_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(row_id, -self.touch_every_s) < self.touch_every_s:
                return
            self._touched[row_id] = now
        with self.db.session() as s:
            s.execute(update(GatewayToken).where(GatewayToken.id == row_id).values(last_used_at=utcnow()))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InputError("A gateway token needs a name (who or what uses it, e.g. 'ci' or 'notebook').")
    if len(name) > MAX_NAME_LEN or not name.isprintable():
        raise InputError(f"A gateway token name must be printable text of at most {MAX_NAME_LEN} characters.")
    return name


def _check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise InputError(f"Scope {scope!r} is not one of {', '.join(SCOPES)}; 'chat' may call /v1, 'admin' may "
                         "also load, unload and reset.")
    return scope  # narrowed to Scope by the membership test


def _info(row: GatewayToken) -> TokenInfo:
    return TokenInfo(row.id, row.name, cast(Scope, row.scope), row.created_at, row.last_used_at, row.revoked_at)
