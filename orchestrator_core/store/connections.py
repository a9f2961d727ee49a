"""Connections and model groups in the database, read from memory until a write anywhere changes them.

Every call resolves its connection and, for a group, the group's members: both are served from memory
and reloaded only when the generation counters (generations.py) say another write happened, so a change
made in one process is seen by every process on the database within FRESHNESS_S, with no query per call.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..connections import (
    Connection,
    KeyMode,
    ModelGroup,
    StoredConnection,
    check_base_url,
    check_group,
    check_key_mode,
    check_kind,
    check_name,
    check_options,
    merge_connections,
    seeded,
    unknown_connection,
)
from ..errors import InvalidConnectionError, UnknownConnectionError
from .db import Database
from .generations import Generations, Token, generations_for
from .tables import AIModel, ApiKey, ConnectionRow, ModelGroupRow, utcnow

AREA = "connections"
GROUPS_AREA = "groups"
REGISTRY_AREA = "registry"  # a removed connection's models are deactivated in the same transaction
KEYS_AREA = "keys"  # and its stored keys deleted

_CONNECTIONS = select(ConnectionRow.__table__).order_by(ConnectionRow.__table__.c.name)
_GROUPS = select(ModelGroupRow.__table__).order_by(ModelGroupRow.__table__.c.name)


class ConnectionStore:
    """The seeded connections (one per kind, from the environment) merged with the stored ones."""

    def __init__(self, db: Database, settings: Settings, *, generations: Generations | None = None) -> None:
        self.db = db
        self.settings = settings
        self._generations = generations or generations_for(db)
        self._seeded = {c.name: c for c in seeded(settings)}
        self._loaded: tuple[Token, dict[str, Connection]] | None = None

    # -- reading -------------------------------------------------------------------------------
    def list(self) -> builtins.list[Connection]:
        """The seeded connections in kind order, then the others by name."""
        return builtins.list(self._all().values())

    def get(self, name: str) -> Connection:
        found = self._all().get(name)
        if found is None:
            raise unknown_connection(name, self._all())
        return found

    def _all(self) -> dict[str, Connection]:
        token = self._generations.token(AREA)
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            with self.db.engine.connect() as conn:
                rows = [StoredConnection(r.name, r.kind, r.base_url, r.options, r.enabled, r.key_mode)
                        for r in conn.execute(_CONNECTIONS)]
            merged = merge_connections(self._seeded.values(), rows)
            loaded = (token, merged)
            self._loaded = loaded
        return loaded[1]

    # -- writing -------------------------------------------------------------------------------
    def add(self, name: str, kind: str, *, base_url: str | None = None, options: Mapping[str, str] | None = None,
            enabled: bool = True, key_mode: str | KeyMode = KeyMode.ORDERED) -> Connection:
        """Store a new connection; the name must be free (the seeded names are taken)."""
        name, kind = check_name(name), check_kind(kind)
        row = ConnectionRow(name=name, kind=kind, base_url=check_base_url(kind, base_url),
                            options=json.dumps(check_options(kind, options)), enabled=bool(enabled),
                            key_mode=check_key_mode(key_mode).value, seeded=False)
        if name in self._all():
            raise _taken(name)
        try:
            with self._generations.writing(AREA) as s:
                s.add(row)
        except IntegrityError:  # another process added it between the check and the insert
            raise _taken(name) from None
        return self.get(name)

    def edit(self, name: str, *, base_url: str | None = None, options: Mapping[str, str] | None = None,
             enabled: bool | None = None, key_mode: str | KeyMode | None = None) -> Connection:
        """Change what is given; the first edit of a seeded connection stores it."""
        current = self.get(name)
        url = check_base_url(current.kind, base_url, current=current.base_url) if base_url is not None else None
        opts = json.dumps(check_options(current.kind, options)) if options is not None else None
        mode = check_key_mode(key_mode).value if key_mode is not None else None
        for attempt in (1, 2):
            try:
                with self._generations.writing(AREA) as s:
                    row = s.scalar(select(ConnectionRow).where(ConnectionRow.name == name))
                    if row is None:  # a seeded connection never edited: store it, following the environment
                        row = ConnectionRow(name=name, kind=current.kind, base_url=None, options="{}",
                                            enabled=True, key_mode=KeyMode.ORDERED.value, seeded=True)
                        s.add(row)
                    if url is not None:
                        row.base_url = url
                    if opts is not None:
                        row.options = opts
                    if enabled is not None:
                        row.enabled = bool(enabled)
                    if mode is not None:
                        row.key_mode = mode
                    row.updated_at = utcnow()
                break
            except IntegrityError:
                # Another process stored this seeded connection between the read and the insert (its first edit
                # too): apply this edit to the row it stored.
                if attempt == 2:
                    raise
        return self.get(name)

    def remove(self, name: str) -> None:
        """Delete a connection and its stored keys, and deactivate its models (their metrics stay); a seeded one is
        disabled instead (its keys stay)."""
        current = self.get(name)
        if current.seeded:
            self.edit(name, enabled=False)
            return
        try:
            with self._generations.writing(AREA) as s:
                s.execute(delete(ConnectionRow).where(ConnectionRow.name == name))
                models = s.scalars(select(AIModel).where(AIModel.provider == name))
                for model in models:
                    model.active, model.updated_at = False, utcnow()
                # Its stored keys go with it: a connection added later under this name, perhaps at another
                # address, must not be handed them.
                s.execute(delete(ApiKey).where(ApiKey.provider == name))
                self._generations.bump(s.connection(), REGISTRY_AREA)
                self._generations.bump(s.connection(), KEYS_AREA)
        finally:
            self._generations.changed(REGISTRY_AREA)
            self._generations.changed(KEYS_AREA)


class GroupStore:
    """Model groups: a name and its ordered members."""

    def __init__(self, db: Database, *, generations: Generations | None = None) -> None:
        self.db = db
        self._generations = generations or generations_for(db)
        self._loaded: tuple[Token, dict[str, ModelGroup]] | None = None

    def list(self) -> builtins.list[ModelGroup]:
        return builtins.list(self._all().values())

    def find(self, name: str) -> ModelGroup | None:
        """The group of that name, or None (a model id never is one: it has a colon)."""
        return self._all().get(name.strip().lower())

    def set(self, name: str, members: Sequence[str]) -> ModelGroup:
        """Create or replace a group."""
        group = check_group(name, members)
        with self._generations.writing(GROUPS_AREA) as s:
            row = s.get(ModelGroupRow, group.name)
            if row is None:
                s.add(ModelGroupRow(name=group.name, members=json.dumps(group.members)))
            else:
                row.members, row.updated_at = json.dumps(group.members), utcnow()
        return group

    def remove(self, name: str) -> None:
        key = name.strip().lower()
        with self._generations.writing(GROUPS_AREA) as s:
            row = s.get(ModelGroupRow, key)
            if row is None:
                raise UnknownConnectionError(f"There is no model group {name!r}; 'groups list' shows them.")
            s.delete(row)

    def _all(self) -> dict[str, ModelGroup]:
        token = self._generations.token(GROUPS_AREA)
        loaded = self._loaded
        if loaded is None or loaded[0] != token:
            with self.db.engine.connect() as conn:
                rows = conn.execute(_GROUPS)
                groups = {row.name: ModelGroup(row.name, tuple(json.loads(row.members))) for row in rows}
            loaded = (token, groups)
            self._loaded = loaded
        return loaded[1]


def _taken(name: str) -> InvalidConnectionError:
    return InvalidConnectionError(
        f"A connection named {name!r} already exists; choose another name or edit that connection."
    )
