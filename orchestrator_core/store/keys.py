"""API keys: encrypted at rest with Fernet, listed only masked, merged with keys from the environment.

``secret_for`` runs on every call, so it reads the keys from memory; a write in this process or another
reloads them (see generations.py). The Fernet key comes from ORCHESTRATOR_SECRET_KEY or, failing that,
from ``secret.key`` beside the database (secret.py). Losing both makes stored keys unreadable:
``verify_secret`` says so at start-up instead of keys silently disappearing.
"""

from __future__ import annotations

import builtins
import logging
import re
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..config import key_text_problem
from ..errors import DatabaseBusyError, InvalidKeyInputError, SecretKeyError, mask_key
from ..providers.registry import PROVIDERS
from ..types import KeyCheck, KeyTestResult
from .db import Database, upsert_insert
from .generations import Generations, Token, generations_for
from .secret import (
    VERIFIER_KEY,
    VERIFIER_PLAINTEXT,
    KeyId,
    KeyState,
    PoolKey,
    PoolRow,
    check_verifier,
    decrypt,
    explain_unusable,
    key_state,
    pick_secret,
    usable_keys,
)
from .tables import ApiKey, AppMeta, utcnow

log = logging.getLogger(__name__)

MAX_KEY_LEN = 500
MAX_LABEL_LEN = 100
DEFAULT_LABEL = "default"

AREA = "keys"
SecretRows = Mapping[str, Sequence[PoolRow]]  # connection -> its stored keys in pool order

_VERIFIER = select(AppMeta.__table__.c.value).where(AppMeta.__table__.c.key == VERIFIER_KEY)

_KEYS = ApiKey.__table__
# Pool order: position, then the newest key first (every key had position 0 before pools: the newest won).
_SECRET_ROWS = (
    select(_KEYS.c.id, _KEYS.c.provider, _KEYS.c.encrypted_key, _KEYS.c.last_test_status, _KEYS.c.fault,
           _KEYS.c.cooling_until)
    .where(_KEYS.c.user_id == bindparam("user_id"))
    .order_by(_KEYS.c.position, _KEYS.c.updated_at.desc(), _KEYS.c.id.desc())
)
USED_WRITE_EVERY_S = 10.0  # last_used_at is written at most this often per key: no write per call


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the plaintext, only its mask."""

    id: KeyId  # an int for stored keys, "env:<connection>" for environment keys
    provider: str  # the key's connection (named after the kind for the seeded ones): see ``connection``
    label: str
    masked: str
    source: str  # "stored" | "env"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_tested_at: datetime | None = None
    last_test_status: KeyCheck | None = None
    last_test_detail: str | None = None
    last_test_latency_ms: float | None = None
    position: int = 0  # order in the connection's pool (then newest first); the env key comes last
    last_used_at: float | None = None  # epoch seconds
    last_error: str | None = None  # already scrubbed
    cooling_until: float | None = None  # epoch seconds, while cooling or exhausted
    state: KeyState = "untested"

    @property
    def connection(self) -> str:
        return self.provider

    @property
    def read_only(self) -> bool:
        return self.source == "env"


class KeyStore:
    """Stored keys (encrypted, editable) plus keys from the environment (read-only)."""

    def __init__(
        self,
        db: Database,
        fernet: Fernet,
        *,
        env_keys: Mapping[str, str] | None = None,
        known_providers: Collection[str] = tuple(PROVIDERS),
        user_id: str = "local",
        generations: Generations | None = None,
    ) -> None:
        self.db = db
        self._generations = generations or generations_for(db)
        self._secrets: tuple[Token, SecretRows] | None = None
        self.fernet = fernet
        self.env_keys = {p: k for p, k in (env_keys or {}).items() if k}
        self.known_providers = known_providers  # may be live (the connections of now): never copied
        self.user_id = user_id
        self._env_tests: dict[str, KeyTestResult] = {}  # env keys have no row, so their tests live here
        self._env_faults: dict[str, tuple[str | None, datetime | None, str | None]] = {}  # ... and their faults
        self._turns: dict[str, int] = {}  # round-robin: where each connection's next call starts
        self._used: dict[KeyId, float] = {}  # when this process last wrote a key's last_used_at
        # secret_for runs for every call; Fernet decryption costs more than the query, so remember the
        # plaintext per token. A changed key has a new token, so nothing stale is ever served.
        self._plaintexts: dict[str, str] = {}

    # -- editing ---------------------------------------------------------------------------------
    def add(self, provider: str, label: str | None, key: str) -> KeyInfo:
        """Encrypt and store a new key."""
        provider = self._check_provider(provider)
        label = _check_label(label)
        key = check_key(key)
        if label == key:
            raise InvalidKeyInputError("The label is the key itself; labels are shown in clear, so give the key a "
                                       "short name such as 'work'.")
        row = ApiKey(provider=provider, label=label, encrypted_key=self._encrypt(key), user_id=self.user_id)
        try:
            with self._generations.writing(AREA) as s:
                self._check_label_free(s, provider, label, None)
                s.add(row)
                s.flush()
                return self._info(row, mask_key(key))
        except IntegrityError:  # another process added the same label between the check and the insert
            raise _duplicate(provider, label) from None

    def update(self, key_id: KeyId, *, label: str | None = None, key: str | None = None) -> KeyInfo:
        """Change the label and/or the key; a new key forgets the old key's test result."""
        new_label = _check_label(label) if label is not None else None
        new_key = check_key(key) if key is not None else None
        provider = ""
        try:
            with self._generations.writing(AREA) as s:
                row = self._row(s, key_id)
                provider = row.provider
                if new_label is not None and new_label != row.label:
                    self._check_label_free(s, provider, new_label, row.id)
                    row.label = new_label
                if new_key is not None:  # a replaced key starts with a clean slate
                    row.encrypted_key = self._encrypt(new_key)
                    row.last_tested_at = row.last_test_status = row.last_test_detail = None
                    row.last_test_latency_ms = row.fault = row.cooling_until = row.last_error = None
                if new_label is not None or new_key is not None:
                    row.updated_at = utcnow()
                s.flush()
                return self._info(row, mask_key(new_key) if new_key is not None else self._mask(row.encrypted_key))
        except IntegrityError:
            raise _duplicate(provider, new_label or "") from None

    def delete(self, key_id: KeyId) -> None:
        """Remove a stored key."""
        with self._generations.writing(AREA) as s:
            s.delete(self._row(s, key_id))

    def record_test(self, key_id: KeyId, result: KeyTestResult) -> None:
        """Remember the outcome of a key test (env keys: in memory, for this process)."""
        env_provider = self._env_provider(key_id)
        if env_provider is not None:
            self._env_tests[env_provider] = result
            self._env_faults.pop(env_provider, None)
            return
        with self._generations.writing(AREA) as s:
            row = self._row(s, key_id)
            # A test is the operator's word on the key: accepted clears any fault, refused rejects it.
            rejected = result.status is KeyCheck.REJECTED
            row.fault, row.cooling_until = ("rejected", None) if rejected else (None, None)
            row.last_error = result.detail[:1000] if rejected else row.last_error
            row.last_tested_at = result.tested_at
            row.last_test_status = KeyCheck(result.status).value
            row.last_test_detail = result.detail[:1000]
            row.last_test_latency_ms = result.latency_ms

    # -- reading ---------------------------------------------------------------------------------
    def list(self, provider: str | None = None) -> builtins.list[KeyInfo]:
        """Stored keys (masked) then environment keys, by provider."""
        query = select(ApiKey).where(ApiKey.user_id == self.user_id).order_by(
            ApiKey.provider, ApiKey.position, ApiKey.updated_at.desc(), ApiKey.id.desc())
        if provider is not None:
            query = query.where(ApiKey.provider == provider)
        with self.db.session() as s:
            stored = [self._info(row, self._mask(row.encrypted_key)) for row in s.scalars(query)]
        env = [self._env_info(p) for p in sorted(self.env_keys) if provider in (None, p)]
        return sorted(stored + env, key=lambda k: (k.provider, k.source != "stored"))

    def secret_for(self, provider: str) -> str | None:
        """The key to call a connection with (see secret.pick_secret): the first usable key of its pool."""
        stored = self._secret_rows().get(provider, ())
        return pick_secret(self.pool(provider), stored, self.env_keys.get(provider), self._decrypt)

    # -- key pools ---------------------------------------------------------------------------------
    def pool(self, connection: str, *, round_robin: bool = False) -> builtins.list[PoolKey]:
        """The usable keys of a connection in the order a call tries them (the env key last, read-only).

        Rejected keys are left out until tested again or replaced, cooling and exhausted ones until their
        time is up. ``round_robin`` starts each call at the next key."""
        return self._pool(connection, self._secret_rows().get(connection, ()), datetime.now(UTC), round_robin)

    def pool_or_problem(
        self, connection: str, *, round_robin: bool = False
    ) -> tuple[builtins.list[PoolKey], str | None]:
        """``pool`` and, when it is empty, ``pool_problem``: what a call needs, from one read of the stored keys."""
        stored = self._secret_rows().get(connection, ())
        if not stored and connection not in self.env_keys:
            return [], None  # a connection without keys (a local host, a keyless endpoint): nothing to check
        now = datetime.now(UTC)
        keys = self._pool(connection, stored, now, round_robin)
        return (keys, None) if keys else ([], self._problem(connection, stored, now))

    def _pool(self, connection: str, stored: Sequence[PoolRow], now: datetime, round_robin: bool
              ) -> builtins.list[PoolKey]:
        keys = usable_keys(connection, stored, self.env_keys.get(connection), self._env_state(connection, now),
                           self._decrypt, now)
        if round_robin and len(keys) > 1:
            turn = self._turns.get(connection, 0)
            self._turns[connection] = turn + 1
            keys = keys[turn % len(keys):] + keys[:turn % len(keys)]
        return keys

    def pool_size(self, connection: str) -> int:
        """How many keys the connection has, usable or not (the env key counts), from memory."""
        return len(self._secret_rows().get(connection, ())) + (connection in self.env_keys)

    def pool_problem(self, connection: str) -> str | None:
        """Why a connection that has keys can use none of them now, or None (also when it has no key at all).

        From memory, like ``pool``: the status of every hosted model asks it."""
        return self._problem(connection, self._secret_rows().get(connection, ()), datetime.now(UTC))

    def _problem(self, connection: str, stored: Sequence[PoolRow], now: datetime) -> str | None:
        states = [(r.state(now), r.cooling_until) for r in stored]
        if connection in self.env_keys:
            states.append((self._env_state(connection, now), self._env_faults.get(connection, (None, None, None))[1]))
        return explain_unusable(connection, states)

    def record_fault(self, key_id: KeyId, fault: str, message: str, seconds: float) -> None:
        """A call's failure says something about this key: it cools, is rejected or exhausted (errors.KeyFault)."""
        until = datetime.now(UTC) + timedelta(seconds=seconds) if fault != "rejected" else None
        env_connection = self._env_provider(key_id)
        if env_connection is not None:
            self._env_faults[env_connection] = (fault, until, message[:1000])
            return
        with self._generations.writing(AREA) as s:
            row = self._row(s, key_id)
            row.fault, row.cooling_until, row.last_error = fault, until, message[:1000]

    def record_used(self, key_id: KeyId, *, background: Executor | None = None) -> None:
        """A call succeeded with this key: remember when (written at most every USED_WRITE_EVERY_S, on
        ``background`` when given, so a busy database never holds up the call)."""
        now = time.time()
        if now - self._used.get(key_id, 0.0) < USED_WRITE_EVERY_S:
            return
        self._used[key_id] = now
        if not isinstance(key_id, int):
            return  # the env key has no row: its last use is kept in memory
        if background is None:
            self._write_used(key_id, now)
        else:
            background.submit(self._write_used, key_id, now)

    def _write_used(self, key_id: int, when: float) -> None:
        # Not a change of the pool (no generation bump): every cache of keys stays valid.
        try:
            with self.db.session() as s:
                row = s.get(ApiKey, key_id)
                if row is not None:
                    row.last_used_at = datetime.fromtimestamp(when, UTC)
        except (DatabaseBusyError, OperationalError):
            log.info("last use of key %s not recorded: the database is busy or read-only", key_id)

    def _env_state(self, connection: str, now: datetime) -> KeyState:
        fault, until, _ = self._env_faults.get(connection, (None, None, None))
        test = self._env_tests.get(connection)
        return key_state(fault, until, test.status.value if test else None, True, now)

    def rejected(self, connection: str) -> bool:
        """True when every key of the connection (its env key too) is rejected: by its last test or by a call."""
        now = datetime.now(UTC)
        states = [r.state(now) for r in self._secret_rows().get(connection, ())]
        if connection in self.env_keys:
            states.append(self._env_state(connection, now))
        return bool(states) and all(state == "rejected" for state in states)

    def secret_by_id(self, key_id: KeyId) -> str:
        """The plaintext of one key, for testing it."""
        env_provider = self._env_provider(key_id)
        if env_provider is not None:
            return self.env_keys[env_provider]
        with self.db.session() as s:
            return self._decrypt(self._row(s, key_id).encrypted_key)

    def verify_secret(self) -> None:
        """Raise SecretKeyError unless this secret is the database's: its verifier and every stored key decrypt.

        The first process on a database records the verifier, so a second one with another secret (another
        folder's secret.key on a shared PostgreSQL) is refused before it stores a key nobody else can read.
        """
        with self.db.engine.connect() as conn:
            verifier = conn.scalar(_VERIFIER)
        if verifier is not None:
            self._check_verifier(verifier)
        with self.db.session() as s:
            for token in s.scalars(select(ApiKey.encrypted_key)):
                self._decrypt(token)
        if verifier is None:
            self._record_verifier()

    def _check_verifier(self, token: str) -> None:
        check_verifier(self.fernet, token)

    def _record_verifier(self) -> None:
        """Insert the verifier unless another process did first; then it must match ours."""
        table = cast(Table, AppMeta.__table__)
        row = {"key": VERIFIER_KEY, "value": self.fernet.encrypt(VERIFIER_PLAINTEXT).decode("ascii")}
        try:
            with self.db.engine.begin() as conn:  # the full busy wait: two first starts at once must agree
                if self.db.dialect in ("sqlite", "postgresql"):
                    insert = upsert_insert(self.db.dialect)
                    conn.execute(insert(table).on_conflict_do_nothing(index_elements=["key"]), [row])
                elif conn.scalar(_VERIFIER) is None:
                    conn.execute(table.insert(), [row])
                stored = conn.scalar(_VERIFIER)
        except (DatabaseBusyError, IntegrityError):
            return  # recorded on a later start; stored keys were checked above
        except OperationalError as exc:
            if "readonly" in str(exc.orig).lower():
                return
            raise
        if stored is not None:
            self._check_verifier(stored)

    # -- helpers ---------------------------------------------------------------------------------
    def _secret_rows(self) -> SecretRows:
        """Every stored key of this user by provider, from memory unless a write changed them."""
        token = self._generations.token(AREA)
        loaded = self._secrets
        if loaded is None or loaded[0] != token:
            by_provider: dict[str, list[PoolRow]] = {}
            with self.db.engine.connect() as conn:
                for row in conn.execute(_SECRET_ROWS, {"user_id": self.user_id}):
                    until = row.cooling_until.replace(tzinfo=UTC) if row.cooling_until else None
                    pool_row = PoolRow(row.id, row.encrypted_key, row.last_test_status, row.fault, until)
                    by_provider.setdefault(row.provider, []).append(pool_row)
            loaded = (token, by_provider)
            self._secrets = loaded
        return loaded[1]

    def _encrypt(self, key: str) -> str:
        return self.fernet.encrypt(key.encode()).decode("ascii")

    def _decrypt(self, token: str) -> str:
        plaintext = self._plaintexts.get(token)
        if plaintext is None:
            plaintext = self._plaintexts[token] = decrypt(self.fernet, token)
        return plaintext

    def _mask(self, token: str) -> str:
        # Listing must still work with the wrong secret, so the operator can see and delete such keys.
        try:
            return mask_key(self._decrypt(token))
        except SecretKeyError:
            return "•••• (cannot decrypt)"

    def _check_provider(self, provider: str) -> str:
        name = (provider or "").strip().lower()
        if name not in self.known_providers:
            raise InvalidKeyInputError(
                f"Unknown provider {provider!r}; choose one of {', '.join(self.known_providers)}."
            )
        return name

    def _check_label_free(self, s: Session, provider: str, label: str, own_id: int | None) -> None:
        query = select(ApiKey.id).where(
            ApiKey.provider == provider, ApiKey.label == label, ApiKey.user_id == self.user_id
        )
        existing = s.scalar(query)
        if existing is not None and existing != own_id:
            raise _duplicate(provider, label)

    def _env_provider(self, key_id: KeyId) -> str | None:
        if isinstance(key_id, str) and key_id.startswith("env:"):
            provider = key_id[4:]
            if provider not in self.env_keys:
                raise InvalidKeyInputError(f"There is no environment key {key_id!r}; refresh the list of keys.")
            return provider
        return None

    def _row(self, s: Session, key_id: KeyId) -> ApiKey:
        provider = self._env_provider(key_id)
        if provider is not None:
            raise InvalidKeyInputError(
                f"The {provider} key comes from the environment; change {_env_var(provider)} and restart "
                "to edit or remove it.",
                provider=provider,
            )
        number = _key_number(key_id)
        row = s.get(ApiKey, number) if number is not None else None
        if row is None or row.user_id != self.user_id:
            raise InvalidKeyInputError(f"There is no stored key with id {key_id!r}; refresh the list of keys.")
        return row

    def _info(self, row: ApiKey, masked: str) -> KeyInfo:
        used = row.last_used_at
        noted = self._used.get(row.id)  # this process's last use, newer than the row while its write is queued
        if noted is not None and (used is None or noted > used.timestamp()):
            used = datetime.fromtimestamp(noted, UTC)
        cooling = row.cooling_until
        return KeyInfo(
            id=row.id,
            provider=row.provider,
            label=row.label,
            masked=masked,
            source="stored",
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_tested_at=row.last_tested_at,
            last_test_status=KeyCheck(row.last_test_status) if row.last_test_status else None,
            last_test_detail=row.last_test_detail,
            last_test_latency_ms=row.last_test_latency_ms,
            position=row.position or 0,
            last_used_at=used.timestamp() if used else None,
            last_error=row.last_error,
            cooling_until=cooling.timestamp() if cooling else None,
            state=key_state(row.fault, cooling, row.last_test_status, used is not None, datetime.now(UTC)),
        )

    def _env_info(self, provider: str) -> KeyInfo:
        test = self._env_tests.get(provider)
        fault, until, error = self._env_faults.get(provider, (None, None, None))
        used = self._used.get(f"env:{provider}")
        return KeyInfo(
            id=f"env:{provider}",
            provider=provider,
            label=_env_var(provider),
            masked=mask_key(self.env_keys[provider]),
            source="env",
            last_tested_at=test.tested_at if test else None,
            last_test_status=KeyCheck(test.status) if test else None,
            last_test_detail=test.detail if test else None,
            last_test_latency_ms=test.latency_ms if test else None,
            position=1_000_000,
            last_used_at=used,
            last_error=error,
            cooling_until=until.timestamp() if until else None,
            state=key_state(fault, until, test.status.value if test else None, used is not None, datetime.now(UTC)),
        )


def _env_var(provider: str) -> str:
    """The variable an environment key comes from, as the key list labels it: 'GOOGLE_API_KEY (or GEMINI_API_KEY)'."""
    names = PROVIDERS[provider].key_env_vars if provider in PROVIDERS else ()
    if not names:
        return f"{provider.upper()}_API_KEY"
    return names[0] + (f" (or {', '.join(names[1:])})" if names[1:] else "")


def _key_number(key_id: KeyId) -> int | None:
    if isinstance(key_id, int) and not isinstance(key_id, bool):
        return key_id
    if isinstance(key_id, str) and key_id.strip().isdigit():
        return int(key_id)
    return None


def _check_label(label: str | None) -> str:
    text = DEFAULT_LABEL if label is None else label.strip()
    if not text:
        raise InvalidKeyInputError("The label is empty; give the key a short name such as 'default' or 'work'.")
    if len(text) > MAX_LABEL_LEN:
        raise InvalidKeyInputError(f"The label is longer than {MAX_LABEL_LEN} characters; shorten it.")
    if looks_like_a_key(text):
        # A label is shown in clear on every page, in the CLI and the API: a key pasted there would be too.
        raise InvalidKeyInputError("The label looks like an API key (a long run of letters and digits); labels "
                                   "are shown in clear, so put the key in the key field and name it here, "
                                   "e.g. 'work'.")
    return text


_KEY_LIKE = re.compile(r"[A-Za-z0-9]{20,}")


def looks_like_a_key(text: str) -> bool:
    """A run of 20 or more letters and digits, both in it, without a separator: what provider keys carry
    (sk-proj-…, sk-ant-…, AIza…, gsk_…) and a name such as 'prod-eu-west-1' or 'work 2024' never does."""
    return any(any(c.isdigit() for c in run) and any(c.isalpha() for c in run) for run in _KEY_LIKE.findall(text))


def check_key(key: str | None) -> str:
    """The key with surrounding whitespace removed; the message never repeats the key."""
    text = (key or "").strip()
    if not text:
        raise InvalidKeyInputError("The key is empty; paste the API key from the provider's console.")
    if any(c.isspace() for c in text):
        raise InvalidKeyInputError(
            "The key contains a space or a line break; paste only the key itself, on one line."
        )
    problem = key_text_problem(text)
    if problem:
        # Such a key would fail in the HTTP header, and that exception would carry the key with it.
        raise InvalidKeyInputError(f"The key contains {problem}; copy it again from the provider's console.")
    if len(text) > MAX_KEY_LEN:
        raise InvalidKeyInputError(
            f"The key is longer than {MAX_KEY_LEN} characters; paste only the key, not surrounding text."
        )
    return text


def _duplicate(provider: str, label: str) -> InvalidKeyInputError:
    return InvalidKeyInputError(
        f"A key labelled {label!r} already exists for {provider}; choose another label or edit that key."
    )

