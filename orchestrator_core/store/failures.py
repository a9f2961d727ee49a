"""The failure cache: which models failed recently and stay skipped until when.

It lives in the database, so every process on the same database (console, CLI, workers) skips the
same models. One row per model, kept from its first failure until ``reset`` (a success should reset
it): ``failure_count`` counts failures since then, so a caller can lengthen the cooldown each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .tables import ModelFailure

MAX_MESSAGE_LEN = 1000

# Built once: reads run on every call, and building a statement costs more than SQLite running it.
_TABLE = ModelFailure.__table__
_ALL = select(_TABLE).order_by(_TABLE.c.until.desc())
_ACTIVE = _ALL.where(_TABLE.c.until > bindparam("now"))
_ACTIVE_ONE = _ACTIVE.where(_TABLE.c.model_id == bindparam("model_id"))

When = datetime | float | None  # an aware datetime, epoch seconds, or None for now


@dataclass(frozen=True)
class FailureEntry:
    model_id: str
    error_kind: str
    message: str
    since: datetime  # first failure since the last reset (UTC)
    until: datetime  # skipped until then (UTC)
    failure_count: int

    @property
    def active(self) -> bool:
        """Still cooling down."""
        return self.until > datetime.now(timezone.utc)

    def remaining_s(self, now: When = None) -> float:
        """Seconds of cooldown left (0 once expired)."""
        return max(0.0, (self.until - _as_datetime(now)).total_seconds())


class FailureCache:
    """Model failures shared through the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, model_id: str, error_kind: str, message: str, cooldown_s: float, now: When = None) -> FailureEntry:
        """Note a failure: the model is skipped until max(current until, now + cooldown)."""
        at = _as_datetime(now)
        values = {
            "model_id": model_id,
            "error_kind": error_kind,
            "message": (message or "")[:MAX_MESSAGE_LEN],
            "since": at,
            "until": at + timedelta(seconds=max(0.0, cooldown_s)),
            "failure_count": 1,
        }
        with self.db.session() as s:
            self._upsert(s, values)
            row = s.get_one(ModelFailure, model_id, populate_existing=True)
            return _entry(row)

    def active(self, now: When = None) -> dict[str, FailureEntry]:
        """Models still cooling down, by model id."""
        return {e.model_id: e for e in self._select(_ACTIVE, now=_as_datetime(now))}

    def get(self, model_id: str, now: When = None) -> FailureEntry | None:
        """The model's entry while it is cooling down, else None."""
        entries = self._select(_ACTIVE_ONE, model_id=model_id, now=_as_datetime(now))
        return entries[0] if entries else None

    def all(self) -> list[FailureEntry]:
        """Every entry, expired ones included, newest cooldown first (for display)."""
        return self._select(_ALL)

    def _select(self, query: Select[Any], **params: Any) -> list[FailureEntry]:
        with self.db.engine.connect() as conn:
            return [FailureEntry(**row._mapping) for row in conn.execute(query, params)]

    def reset(self, model_id: str | None = None) -> int:
        """Forget one model's failures, or all of them; returns how many rows were cleared."""
        query = delete(ModelFailure)
        if model_id is not None:
            query = query.where(ModelFailure.model_id == model_id)
        with self.db.session() as s:
            return int(s.connection().execute(query).rowcount or 0)

    def _upsert(self, s: Session, values: dict[str, Any]) -> None:
        table = cast(Table, ModelFailure.__table__)
        dialect = self.db.dialect
        if dialect in ("sqlite", "postgresql"):
            # One statement, so concurrent records of one model neither duplicate nor race each other.
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            stmt = insert(table).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.model_id], set_=_merge(table.c, stmt.excluded)
            )
            s.execute(stmt)
            return
        try:  # other databases: insert, or update the row another process inserted first
            with s.begin_nested():
                s.execute(table.insert().values(**values))
        except IntegrityError:
            row = s.get_one(ModelFailure, values["model_id"], with_for_update=True, populate_existing=True)
            row.error_kind, row.message = values["error_kind"], values["message"]
            row.until = max(row.until, values["until"])
            row.failure_count += 1


def _merge(current: Any, new: Any) -> dict[str, Any]:
    """Column updates for a repeat failure: latest kind and message, no double cooldown, count + 1."""
    return {
        "error_kind": new.error_kind,
        "message": new.message,
        "until": case((current.until > new.until, current.until), else_=new.until),
        "failure_count": current.failure_count + 1,
    }


def _entry(row: ModelFailure) -> FailureEntry:
    return FailureEntry(row.model_id, row.error_kind, row.message, row.since, row.until, row.failure_count)


def _as_datetime(when: When) -> datetime:
    if when is None:
        return datetime.now(timezone.utc)
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(when), timezone.utc)
