"""Connections, kinds and model groups as plain data, and the checks a new or edited one must pass.

A connection is a name (the prefix of its model ids), a kind (a class of providers/registry.py), a base
URL, the kind's options, enabled or not, and a pool of keys. The environment seeds one connection per
kind, named after the kind (``openai``, ``custom`` for kind ``openai-compatible``, ``lmstudio``...), so
every model id of before keeps working. Stored in store/connections.py.
"""

from __future__ import annotations

import builtins
import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from .errors import InvalidConnectionError, UnknownConnectionError, redact_url
from .providers.base import Provider
from .providers.registry import KINDS
from .types import KeyCheck

if TYPE_CHECKING:
    from .config import Settings

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
GROUP_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_OPTION_LEN = 200


class KeyMode(enum.StrEnum):
    ORDERED = "ordered"  # the first healthy key, in pool order
    ROUND_ROBIN = "round-robin"  # the healthy keys in turn


@dataclass(frozen=True)
class KindInfo:
    """The facts of one kind, read from its provider class (there is no other list of kinds)."""

    kind: str
    display_name: str
    default_base_url: str | None  # None: a connection of this kind must give one
    needs_key: bool
    local: bool
    options: tuple[str, ...]
    key_env_vars: tuple[str, ...]
    seeded_name: str  # the connection the environment seeds for this kind

    @classmethod
    def of(cls, provider: type[Provider]) -> KindInfo:
        # openai-compatible: a new connection has no sensible default (the seeded one's is a local vLLM's)
        default = None if provider.kind == "openai-compatible" else provider.default_base_url
        return cls(provider.kind, provider.display_name, default, provider.needs_key, provider.local,
                   provider.option_names, provider.key_env_vars, provider.name)


def kinds() -> list[KindInfo]:
    """Every kind, in registry order."""
    return [KindInfo.of(c) for c in KINDS.values()]


@dataclass(frozen=True)
class Connection:
    """A named endpoint; ``seeded``: made from the environment, one per kind, named after the kind."""

    name: str
    kind: str
    base_url: str
    options: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    key_mode: KeyMode = KeyMode.ORDERED
    seeded: bool = False
    key_count: int = 0

    @property
    def provider_class(self) -> type[Provider]:
        return KINDS[self.kind]

    @property
    def local(self) -> bool:
        return KINDS[self.kind].local

    @property
    def shown_url(self) -> str:
        """The base URL as a page, the CLI or the API may show it: credentials in it masked (***@host)."""
        return redact_url(self.base_url)

    @property
    def display_name(self) -> str:
        """'LM Studio' for a seeded connection, 'desk (LM Studio)' for another."""
        kind_name = KINDS[self.kind].display_name
        return kind_name if self.seeded else f"{self.name} ({kind_name})"


@dataclass(frozen=True)
class ConnectionTest:
    """What Test found: reachable, how many models, whether the key was accepted (None: no key needed)."""

    name: str
    reachable: bool
    model_count: int | None
    key: KeyCheck | None
    detail: str
    latency_ms: float


@dataclass(frozen=True)
class ModelGroup:
    """A name with an ordered list of model ids; a call through it tries the members in order."""

    name: str
    members: tuple[str, ...]


def check_name(name: str) -> str:
    """A connection name: a short slug, since it is the prefix of model ids and part of URLs."""
    text = (name or "").strip()
    if not NAME_PATTERN.fullmatch(text):
        raise InvalidConnectionError(
            f"Connection name {text[:40]!r} does not fit: use 1 to 32 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (for example groq or desk-lmstudio)."
        )
    return text


def check_kind(kind: str) -> str:
    text = (kind or "").strip().lower()
    if text not in KINDS:
        raise InvalidConnectionError(f"Unknown kind {kind!r}; use one of: {', '.join(KINDS)}.")
    return text


def check_base_url(kind: str, base_url: str | None, *, current: str | None = None) -> str:
    """The URL without a trailing slash; a kind without a default must be given one. With ``current`` (an
    edit), a URL whose credentials are the masked ``***@`` a page or the API showed keeps the current ones."""
    text = _keep_credentials((base_url or "").strip().rstrip("/"), current)
    if not text:
        default = KindInfo.of(KINDS[kind]).default_base_url
        if default is None:
            raise InvalidConnectionError(
                f"A connection of kind {kind} needs a base URL, such as https://api.groq.com/openai/v1."
            )
        return default
    if KINDS[kind].needs_key and "@" in text.partition("://")[2].split("/", 1)[0]:
        raise InvalidConnectionError(
            f"Base URL {redact_url(text)[:80]!r} holds credentials (user:password@), which httpx would send as "
            f"Basic auth in place of the {KINDS[kind].display_name} key; remove them and add the key to the "
            "connection's pool instead."
        )
    problem = url_problem(text) or _httpx_problem(text, "@" not in text)
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", text) or problem:
        raise InvalidConnectionError(
            f"Base URL {redact_url(text)[:80]!r} does not fit{f' ({problem})' if problem else ''}: it must start "
            "with http:// or https://, name a host (and a port from 1 to 65535, if any), and hold no spaces, query "
            "or fragment (for example http://192.168.1.20:1234)."
        )
    return text


def url_problem(url: str) -> str | None:
    """Why a client could not be made for this URL, or None. A URL httpx refuses (a port such as 'abc', an
    unclosed IPv6 bracket, a host IDNA refuses) would raise in every status check of every page, not just in
    calls to that connection. The standard library's reading: the environment's URLs are checked at every start,
    and the read-only status imports no httpx (a stored connection's URL is also read by httpx, check_base_url)."""
    quoted = "@" not in url  # a refused part is quoted only when no credentials can be in it
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raw = url.partition("://")[2].rpartition("@")[2].split("/", 1)[0]
        if "[" in raw and "]" not in raw:
            return "Invalid port or host: an IPv6 address's '[' is not closed"
        number = raw.partition("]")[2].removeprefix(":") if raw.startswith("[") else raw.partition(":")[2]
        if number.isdigit():
            return f"port {number} is out of range"
        return f"Invalid port: {number!r}" if quoted else "the host or port cannot be read"
    if not parts.hostname:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range"
    try:
        parts.hostname.encode("idna")  # what the socket does at the first request: 'a..b' fails only there
    except UnicodeError:
        return "the host name has an empty part or one over 63 characters"
    return None


def _httpx_problem(url: str, quoted: bool) -> str | None:
    import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return str(exc) if quoted else "the host or port cannot be read"  # exc quotes the part it read
    return None if parsed.host else "no host"


def _keep_credentials(url: str, current: str | None) -> str:
    scheme, sep, rest = url.partition("://")
    kept = (current or "").partition("://")[2]
    if not sep or not rest.startswith("***@") or "@" not in kept:
        return url
    return f"{scheme}://{kept.rsplit('@', 1)[0]}@{rest.removeprefix('***@')}"


def check_options(kind: str, options: Mapping[str, str] | None) -> dict[str, str]:
    allowed = KINDS[kind].option_names
    result: dict[str, str] = {}
    for key, value in (options or {}).items():
        if key not in allowed:
            accepted = ", ".join(allowed) if allowed else "none"
            raise InvalidConnectionError(f"Kind {kind} has no option {key!r}; it accepts: {accepted}.")
        text = str(value).strip()
        if len(text) > MAX_OPTION_LEN or any(not c.isprintable() for c in text):
            raise InvalidConnectionError(f"Option {key} must be one line of at most {MAX_OPTION_LEN} characters.")
        if text:
            result[key] = text
    return result


def check_key_mode(mode: str | KeyMode) -> KeyMode:
    try:
        return KeyMode(mode)
    except ValueError:
        raise InvalidConnectionError(
            f"Key mode {mode!r} is not one of {', '.join(m.value for m in KeyMode)}."
        ) from None


def check_group(name: str, members: Iterable[str]) -> ModelGroup:
    """A group name (no colon, so it never looks like a model id) and at least one member, each once."""
    text = (name or "").strip().lower()
    if not GROUP_PATTERN.fullmatch(text):
        raise InvalidConnectionError(
            f"Group name {text[:40]!r} does not fit: use 1 to 64 lower-case letters, digits, '.', '-' or '_' "
            "(no ':', which model ids use), for example default or fast."
        )
    listed = tuple(dict.fromkeys(m.strip() for m in members if m.strip()))
    if not listed:
        raise InvalidConnectionError(f"Group {text} needs at least one model id (connection:model).")
    return ModelGroup(text, listed)


class ConnectionSource(Protocol):
    """Where the factory and the model manager read connections: the store, or the seeded ones alone."""

    def get(self, name: str) -> Connection:
        """One connection; UnknownConnectionError when none has that name."""

    def list(self) -> builtins.list[Connection]:
        """Every connection: the seeded ones (one per kind) first, then the others by name."""


def seeded(settings: Settings) -> builtins.list[Connection]:
    """The connections the environment makes: one per kind, named after it, at its env var's URL or default."""
    return [Connection(c.name, c.kind, settings.base_url(c.name), seeded=True) for c in KINDS.values()]


class FixedConnections:
    """A ConnectionSource over connections known up front: the seeded ones only (a factory without a
    database, as in tests of one provider), or the rows the read-only status read once."""

    def __init__(self, connections: Iterable[Connection]) -> None:
        self._all = {c.name: c for c in connections}

    def get(self, name: str) -> Connection:
        found = self._all.get(name)
        if found is None:
            raise unknown_connection(name, self._all)
        return found

    def list(self) -> builtins.list[Connection]:
        return builtins.list(self._all.values())


@dataclass(frozen=True)
class StoredConnection:
    """A row of the ``connections`` table, as store/connections.py and the read-only status read it."""

    name: str
    kind: str
    base_url: str | None  # None: a seeded connection follows its env var / the kind's default
    options: str | None  # JSON object of strings
    enabled: bool
    key_mode: str


def merge_connections(seeded: Iterable[Connection], rows: Iterable[StoredConnection]) -> dict[str, Connection]:
    """The seeded connections in kind order with the operator's edits, then the stored others by name.

    A stored URL replaces the environment's; a row of a kind this code does not know is left out."""
    stored = {row.name: row for row in rows}
    merged = {base.name: _merge(base, stored.pop(base.name, None)) for base in seeded}
    merged.update((name, _stored(row)) for name, row in sorted(stored.items()) if row.kind in KINDS)
    return merged


def _merge(base: Connection, row: StoredConnection | None) -> Connection:
    if row is None:
        return base
    return Connection(base.name, base.kind, row.base_url or base.base_url, _options(row.options), bool(row.enabled),
                      KeyMode(row.key_mode), seeded=True)


def _stored(row: StoredConnection) -> Connection:
    return Connection(row.name, row.kind, row.base_url or "", _options(row.options), bool(row.enabled),
                      KeyMode(row.key_mode), seeded=False)


def _options(raw: str | None) -> dict[str, str]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def unknown_connection(name: str, known: Iterable[str]) -> UnknownConnectionError:
    return UnknownConnectionError(
        f"There is no connection {name!r}; use one of: {', '.join(known)}, or add it on the Connections page "
        f"or with 'python -m orchestrator_core connections add {name} --kind KIND'.",
        provider=name,
    )
