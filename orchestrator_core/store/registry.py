"""The model registry: which models the console offers, in what order, and which are switched on.

Status checks and fallback read it on every call, so it is read from memory; a write in this process or
another reloads it (see generations.py).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..errors import DatabaseBusyError, InputError, InvalidModelIdError, UnknownProviderError
from ..providers.registry import PROVIDERS
from ..types import ModelRef
from .db import Database, upsert_insert
from .generations import Generations, Token, generations_for
from .tables import AIModel, utcnow

log = logging.getLogger(__name__)

SOURCES = ("seed", "user", "discovered")
AREA = "registry"

_TABLE = AIModel.__table__
_ALL = select(_TABLE).order_by(_TABLE.c.priority, _TABLE.c.model_id)
DISCOVERED_PRIORITY = 200  # below the hosted defaults and the operator's own models


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    provider: str
    name: str
    display_name: str  # the stored display name, or the bare model name when none was given
    active: bool
    priority: int  # lower = preferred
    source: str  # seed | user | discovered
    created_at: datetime
    updated_at: datetime


class ModelRegistry:
    """Registered models in the database; every process sees the same list."""

    def __init__(
        self,
        db: Database,
        known_providers: Collection[str] = tuple(PROVIDERS),
        *,
        generations: Generations | None = None,
    ) -> None:
        self.db = db
        self.known_providers = known_providers  # may be live (the connections of now): never copied
        self._generations = generations or generations_for(db)
        self._loaded: tuple[Token, tuple[ModelEntry, ...], dict[str, ModelEntry]] | None = None

    def list(self, active_only: bool = False) -> builtins.list[ModelEntry]:
        """Models by priority, then model id."""
        entries = self._entries()[0]
        return [e for e in entries if e.active] if active_only else builtins.list(entries)

    def get(self, model_id: str) -> ModelEntry | None:
        """One model, or None when it is not registered."""
        return self._entries()[1].get(model_id)

    def _entries(self) -> tuple[tuple[ModelEntry, ...], dict[str, ModelEntry]]:
        """Every entry in order and by id, from memory unless a write changed them."""
        token = self._generations.token(AREA)
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            with self.db.engine.connect() as conn:
                entries = tuple(_entry(row) for row in conn.execute(_ALL))
            loaded = (token, entries, {e.model_id: e for e in entries})
            self._loaded = loaded
        return loaded[1], loaded[2]

    def add(
        self,
        model_id: str,
        *,
        display_name: str | None = None,
        priority: int = 100,
        active: bool = True,
        source: str = "user",
    ) -> ModelEntry:
        """Register a model given as provider:model."""
        ref = self._check(model_id)
        if source not in SOURCES:
            raise InputError(f"Model source {source!r} is not one of {', '.join(SOURCES)}.", model=model_id)
        row = AIModel(
            model_id=ref.id,
            provider=ref.provider,
            display_name=(display_name or "").strip() or None,
            active=active,
            priority=int(priority),
            source=source,
        )
        try:
            with self._generations.writing(AREA) as s:
                if s.scalar(select(AIModel.id).where(AIModel.model_id == ref.id)) is not None:
                    raise _already(ref.id)
                s.add(row)
                s.flush()
                return _entry(row)
        except IntegrityError:  # another process registered it between the check and the insert
            raise _already(ref.id) from None

    def remove(self, model_id: str) -> None:
        """Unregister a model (a discovered one comes back on the next discovery; deactivate it instead)."""
        with self._generations.writing(AREA) as s:
            s.delete(_row(s, model_id))

    def set_active(self, model_id: str, active: bool) -> ModelEntry:
        """Switch a model on or off for routing and fallback."""
        with self._generations.writing(AREA) as s:
            row = _row(s, model_id)
            row.active, row.updated_at = bool(active), utcnow()
            return _entry(row)

    def set_priority(self, model_id: str, priority: int) -> ModelEntry:
        """Change a model's place in the order (lower = preferred)."""
        with self._generations.writing(AREA) as s:
            row = _row(s, model_id)
            row.priority, row.updated_at = int(priority), utcnow()
            return _entry(row)

    def sync_discovered(self, provider: str, names: Iterable[str]) -> builtins.list[str]:
        """Register models a local host lists that are not known yet; returns the ids added.

        Never deletes a model and never touches one already registered, so the operator's
        active flags and priorities survive every discovery.
        """
        provider = provider.strip().lower()
        ids = []
        for name in dict.fromkeys(names):
            try:
                ids.append(ModelRef.parse(f"{provider}:{name}").id)
            except InvalidModelIdError as exc:
                # One odd name (too long for the model columns, spaces) must not keep the rest unregistered.
                log.warning("Skipping a model %s lists: %s", provider, exc.message)
        registered = self._entries()[1]
        ids = [i for i in ids if i not in registered]  # every status check lands here: no SQL when all are known
        if not ids:
            return []
        try:
            return self._register_new(provider, ids)
        except DatabaseBusyError:
            log.info("Discovery of %s models skipped: the database is busy; the next status check tries again.",
                     provider)
        except OperationalError as exc:
            if "readonly" not in str(exc.orig).lower():
                raise
            log.info("Discovery of %s models skipped: the database is read-only.", provider)
        return []

    def _register_new(self, provider: str, ids: builtins.list[str]) -> builtins.list[str]:
        # Best effort, with a short busy wait: a status check is a read and must not stall on another writer.
        try:
            with self.db.quick_write() as conn:
                known = set(conn.scalars(select(_TABLE.c.model_id).where(_TABLE.c.model_id.in_(ids))))
                now = utcnow()
                new: builtins.list[dict[str, Any]] = [
                    {"model_id": i, "provider": provider, "display_name": None, "active": True,
                     "priority": DISCOVERED_PRIORITY, "source": "discovered", "created_at": now, "updated_at": now}
                    for i in ids
                    if i not in known
                ]
                if new:
                    self._insert_ignoring_existing(conn, new)
                    self._generations.bump(conn, AREA)  # commits with the rows
        finally:
            self._generations.changed(AREA)
        return [str(row["model_id"]) for row in new]

    def _insert_ignoring_existing(self, conn: Connection, rows: builtins.list[dict[str, Any]]) -> None:
        table = cast(Table, AIModel.__table__)
        if self.db.dialect in ("sqlite", "postgresql"):
            # Two processes discovering at once must not fail on the unique model_id.
            insert = upsert_insert(self.db.dialect)
            conn.execute(insert(table).on_conflict_do_nothing(index_elements=[table.c.model_id]), rows)
            return
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(table.insert(), [row])
            except IntegrityError:
                pass

    def _check(self, model_id: str) -> ModelRef:
        ref = ModelRef.parse(model_id)
        if ref.provider not in self.known_providers:
            raise UnknownProviderError(
                f"Unknown provider {ref.provider!r} in {model_id!r}; use one of {', '.join(self.known_providers)}.",
                provider=ref.provider,
            )
        return ref


def _row(s: Session, model_id: str) -> AIModel:
    row = s.scalar(select(AIModel).where(AIModel.model_id == model_id))
    if row is None:
        raise InvalidModelIdError(f"Model {model_id!r} is not registered; add it first.", model=model_id)
    return row


def _already(model_id: str) -> InvalidModelIdError:
    return InvalidModelIdError(
        f"Model {model_id!r} is already registered; change its priority or active flag instead.", model=model_id
    )


def _entry(row: Any) -> ModelEntry:
    """A ModelEntry from an AIModel object or a Core row of ai_models."""
    name = row.model_id.partition(":")[2]
    return ModelEntry(
        model_id=row.model_id,
        provider=row.provider,
        name=name,
        display_name=row.display_name or name,
        active=row.active,
        priority=row.priority,
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )

