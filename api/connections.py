"""/api/connections, /api/kinds, /api/groups: connections, their keys and model groups. Thin: parse, one facade
verb, the error class gives the status (404 unknown connection, 422 a connection that does not fit).

Scopes as the rest of /api: reading groups needs a chat token (a program picks a group like a model); everything
about connections and keys needs an admin token (base URLs and key state are the operator's). No key is ever
answered: keys come back masked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from orchestrator_core.connections import Connection, ConnectionTest, KeyMode, KindInfo, ModelGroup
from orchestrator_core.store import KeyInfo
from orchestrator_core.types import KeyTestResult

from .auth import AdminToken, ChatToken
from .schemas import api_errors

router = APIRouter(prefix="/api", tags=["connections"])
CONNECTION = "/connections/{name}"
AUTH = api_errors(401, 403, 429)
READ = {**AUTH, **api_errors(404, 503)}
WRITE = {**READ, **api_errors(400, 422)}


class KindOut(BaseModel):
    kind: str
    display_name: str
    default_base_url: str | None
    needs_key: bool
    local: bool
    options: list[str]


class ConnectionOut(BaseModel):
    name: str
    kind: str
    base_url: str
    options: dict[str, str]
    enabled: bool
    key_mode: KeyMode
    seeded: bool
    key_count: int


class ConnectionList(BaseModel):
    connections: list[ConnectionOut]


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="a slug: the prefix of its model ids")
    kind: str = Field(max_length=64)
    base_url: str | None = Field(default=None, max_length=2048, description="default: the kind's")
    options: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    key_mode: KeyMode = KeyMode.ORDERED
    key: str | None = Field(default=None, max_length=4096, description="a first key; never answered back")


class ConnectionEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(default=None, max_length=2048)
    options: dict[str, str] | None = None
    enabled: bool | None = None
    key_mode: KeyMode | None = None


class ConnectionTestOut(BaseModel):
    name: str
    reachable: bool
    model_count: int | None
    key: str | None = Field(description="ok | rejected | could_not_verify; null when the kind needs no key")
    detail: str
    latency_ms: float


class KeyOut(BaseModel):
    id: int | str
    connection: str
    label: str
    masked: str
    source: str
    position: int
    state: str
    last_used_at: float | None
    last_error: str | None
    cooling_until: float | None
    last_tested_at: datetime | None
    last_test_status: str | None


class KeyList(BaseModel):
    keys: list[KeyOut]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=4096)
    label: str | None = Field(default=None, max_length=200)


class KeyTestOut(BaseModel):
    id: int | str
    status: str
    detail: str
    latency_ms: float | None


class KeyTestList(BaseModel):
    results: list[KeyTestOut]


class GroupOut(BaseModel):
    name: str
    members: list[str]


class GroupList(BaseModel):
    groups: list[GroupOut]


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(min_length=1, max_length=64, description="model ids in the order they are tried")


def _backend(request: Request) -> Any:
    return request.app.state.backend


def kind_out(kind: KindInfo) -> KindOut:
    return KindOut(kind=kind.kind, display_name=kind.display_name, default_base_url=kind.default_base_url,
                   needs_key=kind.needs_key, local=kind.local, options=list(kind.options))


def connection_out(c: Connection) -> ConnectionOut:
    return ConnectionOut(name=c.name, kind=c.kind, base_url=c.shown_url, options=dict(c.options), enabled=c.enabled,
                         key_mode=c.key_mode, seeded=c.seeded, key_count=c.key_count)


def test_out(test: ConnectionTest) -> ConnectionTestOut:
    return ConnectionTestOut(name=test.name, reachable=test.reachable, model_count=test.model_count,
                             key=test.key.value if test.key else None, detail=test.detail,
                             latency_ms=test.latency_ms)


def key_out(k: KeyInfo) -> KeyOut:
    return KeyOut(id=k.id, connection=k.connection, label=k.label, masked=k.masked, source=k.source,
                  position=k.position, state=k.state, last_used_at=k.last_used_at, last_error=k.last_error,
                  cooling_until=k.cooling_until, last_tested_at=k.last_tested_at,
                  last_test_status=k.last_test_status.value if k.last_test_status else None)


def key_test_out(key_id: int | str, result: KeyTestResult) -> KeyTestOut:
    return KeyTestOut(id=key_id, status=result.status.value, detail=result.detail, latency_ms=result.latency_ms)


def group_out(group: ModelGroup) -> GroupOut:
    return GroupOut(name=group.name, members=list(group.members))


# -- kinds and connections ---------------------------------------------------------------------------
@router.get("/kinds", response_model=list[KindOut], responses=READ)
async def list_kinds(request: Request, _: AdminToken) -> list[KindOut]:
    """Every provider kind a connection can have, with its default URL and options."""
    return [kind_out(k) for k in await _backend(request).call(lambda o: o.kinds())]


@router.get("/connections", response_model=ConnectionList, responses=READ)
async def list_connections(request: Request, _: AdminToken) -> ConnectionList:
    """Every connection: those the environment seeds (one per kind) first, then the added ones."""
    found = await _backend(request).call(lambda o: o.connections())
    return ConnectionList(connections=[connection_out(c) for c in found])


@router.post("/connections", response_model=ConnectionOut, status_code=201, responses=WRITE)
async def add_connection(request: Request, _: AdminToken, body: ConnectionIn) -> ConnectionOut:
    """Add a connection (and its first key); used at once by every process on the database."""
    added = await _backend(request).call(lambda o: o.add_connection(
        body.name, body.kind, base_url=body.base_url, options=body.options, enabled=body.enabled,
        key_mode=body.key_mode, key=body.key))
    return connection_out(added)


@router.get(CONNECTION, response_model=ConnectionOut, responses=READ)
async def get_connection(request: Request, _: AdminToken, name: str) -> ConnectionOut:
    return connection_out(await _backend(request).call(lambda o: o.connection(name)))


@router.patch(CONNECTION, response_model=ConnectionOut, responses=WRITE)
async def edit_connection(request: Request, _: AdminToken, name: str, body: ConnectionEdit) -> ConnectionOut:
    """Change the base URL, options, enabled flag or key mode; omitted fields stay."""
    edited = await _backend(request).call(lambda o: o.edit_connection(
        name, base_url=body.base_url, options=body.options, enabled=body.enabled, key_mode=body.key_mode))
    return connection_out(edited)


@router.delete(CONNECTION, status_code=204, response_class=Response, responses=WRITE)
async def remove_connection(request: Request, _: AdminToken, name: str) -> Response:
    """Remove a connection: its models are deactivated, their metrics kept; a seeded one is disabled instead."""
    await _backend(request).call(lambda o: o.remove_connection(name))
    return Response(status_code=204)


@router.post(CONNECTION + "/test", response_model=ConnectionTestOut, responses=READ)
async def test_connection(request: Request, _: AdminToken, name: str) -> ConnectionTestOut:
    """Reachability, the model count and the key check, with one request to the connection."""
    return test_out(await _backend(request).call(lambda o: o.test_connection(name)))


# -- keys of a connection ----------------------------------------------------------------------------------
@router.get(CONNECTION + "/keys", response_model=KeyList, responses=READ)
async def list_keys(request: Request, _: AdminToken, name: str) -> KeyList:
    """The connection's key pool, masked, in pool order, with each key's state."""
    def keys(o: Any) -> list[KeyInfo]:
        o.connection(name)  # 404 for an unknown connection rather than an empty list
        found: list[KeyInfo] = o.keys_of(name)
        return found

    return KeyList(keys=[key_out(k) for k in await _backend(request).call(keys)])


@router.post(CONNECTION + "/keys", response_model=KeyOut, status_code=201, responses=WRITE)
async def add_key(request: Request, _: AdminToken, name: str, body: KeyIn) -> KeyOut:
    """Add a key to the connection's pool; it is answered masked."""
    return key_out(await _backend(request).call(lambda o: o.add_key(name, body.label, body.key)))


@router.post(CONNECTION + "/keys/test", response_model=KeyTestList, responses=READ)
async def test_keys(request: Request, _: AdminToken, name: str) -> KeyTestList:
    """Test every key of the connection (Test all)."""
    def test(o: Any) -> dict[int | str, KeyTestResult]:
        o.connection(name)
        results: dict[int | str, KeyTestResult] = o.test_all_keys(name)
        return results

    results = await _backend(request).call(test)
    return KeyTestList(results=[key_test_out(i, r) for i, r in results.items()])


# -- model groups -------------------------------------------------------------------------------------
@router.get("/groups", response_model=GroupList, responses=READ)
async def list_groups(request: Request, _: ChatToken) -> GroupList:
    """Every model group with its members in the order a call tries them."""
    return GroupList(groups=[group_out(g) for g in await _backend(request).call(lambda o: o.groups())])


@router.put("/groups/{name}", response_model=GroupOut, responses=WRITE)
async def set_group(request: Request, _: AdminToken, name: str, body: GroupIn) -> GroupOut:
    """Create or replace a group; every member must be connection:model on a known connection."""
    return group_out(await _backend(request).call(lambda o: o.set_group(name, body.members)))


@router.delete("/groups/{name}", status_code=204, response_class=Response, responses=WRITE)
async def remove_group(request: Request, _: AdminToken, name: str) -> Response:
    await _backend(request).call(lambda o: o.remove_group(name))
    return Response(status_code=204)
