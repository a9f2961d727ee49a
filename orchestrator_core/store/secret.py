"""The secret of stored API keys, without SQLAlchemy: the Fernet, the database's verifier, which keys a call uses.

The Fernet key comes from ORCHESTRATOR_SECRET_KEY or, failing that, from ``secret.key`` beside the
database (created once, mode 0600). ``keys.KeyStore`` and the read-only status path
(``readonly.py``) both judge a database's secret, pick a connection's key and say why none of its pool
is usable with these functions.

Importing ``cryptography`` costs a CLI start ~20 ms, so this module imports it only to encrypt or
decrypt. The read-only status judges the secret with the standard library: a Fernet token carries an
HMAC-SHA256 under the first half of its key, so ``signed_with`` tells whether the verifier (and every
stored key) was written with this secret without decrypting anything (``fernet_key`` reads the secret
the way ``load_fernet`` does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..config import DEFAULT_DATA_DIR, home_dir
from ..errors import SecretKeyError, mask_key
from ..types import KeyCheck

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret
# A fixed, public salt: it only has to stop precomputed tables; the passphrase is the secret.
_KDF_SALT = b"orchestrator_core/api-keys/v1"
UNDECRYPTABLE = (
    "Stored keys cannot be decrypted with this secret; set ORCHESTRATOR_SECRET_KEY to the secret they "
    "were saved with, or restore data/secret.key."
)

# The secret verifier in app_meta: a Fernet token of a constant, so any process can tell whether its
# secret is the one this database was set up with, even before any key is stored.
VERIFIER_KEY = "secret_verifier"
VERIFIER_PLAINTEXT = b"orchestrator_core: the secret of this database, v1"
OTHER_SECRET = (
    "Stored keys cannot be decrypted with this secret: this database was set up with a different secret "  # noqa: S105 - a message
    "(ORCHESTRATOR_SECRET_KEY, or the secret.key file of the folder its first process ran in). Every process "
    "that uses this database needs the same secret: set ORCHESTRATOR_SECRET_KEY to the same value everywhere, "
    "or copy that secret.key into this process's data folder."
)

KeyId = int | str  # an int for a stored key, "env:<connection>" for the environment's
KeyState = Literal["ok", "cooling", "rejected", "exhausted", "untested"]


@dataclass(frozen=True)
class PoolRow:
    """One stored key as the pool sees it (from memory)."""

    id: int
    token: str
    test_status: str | None
    fault: str | None
    cooling_until: datetime | None  # UTC

    def state(self, now: datetime) -> KeyState:
        """The key's state for a call (a stored key counts as used: untested ones are tried)."""
        return key_state(self.fault, self.cooling_until, self.test_status, True, now)


@dataclass(frozen=True)
class PoolKey:
    """A key a call may use: its id (``env:<connection>`` for the environment's) and plaintext."""

    id: KeyId
    secret: str = field(repr=False)

    @property
    def masked(self) -> str:
        return mask_key(self.secret)


def check_verifier(fernet: Fernet, token: str) -> None:
    """SecretKeyError unless token is this secret's verifier."""
    from cryptography.fernet import InvalidToken  # noqa: PLC0415 - start-up cost: see the module

    try:
        ok = fernet.decrypt(token.encode("ascii")) == VERIFIER_PLAINTEXT
    except (InvalidToken, ValueError):
        ok = False
    if not ok:
        raise SecretKeyError(OTHER_SECRET)


def decrypt(fernet: Fernet, token: str) -> str:
    """The plaintext of a stored key; SecretKeyError when this secret cannot decrypt it."""
    from cryptography.fernet import InvalidToken  # noqa: PLC0415 - start-up cost: see the module

    try:
        return fernet.decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise SecretKeyError(UNDECRYPTABLE) from None


def signed_with(key: bytes, token: str) -> bool:
    """Whether ``token`` is a well-formed Fernet token signed with ``key`` (a Fernet key), checked without
    cryptography: version byte 0x80, timestamp, IV, whole AES blocks, and the HMAC-SHA256 of all of it under
    the key's signing half. Only the holder of the key makes such a token; decrypting it is Fernet's job."""
    try:
        data = base64.urlsafe_b64decode(token.encode("ascii"))
        signing = base64.urlsafe_b64decode(key)[:16]
    except (binascii.Error, ValueError):
        return False
    header, mac = 1 + 8 + 16, 32
    if len(data) < header + 16 + mac or (len(data) - header - mac) % 16 or data[0] != 0x80:
        return False
    return hmac.compare_digest(hmac.digest(signing, data[:-mac], "sha256"), data[-mac:])


def check_signed_verifier(key: bytes, token: str) -> None:
    """check_verifier without decrypting: SecretKeyError unless token was written with this secret."""
    if not signed_with(key, token):
        raise SecretKeyError(OTHER_SECRET)


def check_signed(key: bytes, token: str) -> None:
    """What decrypt refuses, without decrypting: SecretKeyError unless this secret wrote the stored key."""
    if not signed_with(key, token):
        raise SecretKeyError(UNDECRYPTABLE)


def key_state(fault: str | None, cooling_until: datetime | None, test_status: str | None,
              used: bool, now: datetime) -> KeyState:
    """What a key is now: rejected stays so until tested again or replaced; cooling and exhausted expire."""
    if fault == "rejected" or (fault is None and test_status == KeyCheck.REJECTED.value):
        return "rejected"
    if fault in ("cooling", "exhausted") and cooling_until is not None and cooling_until > now:
        return "exhausted" if fault == "exhausted" else "cooling"
    return "ok" if used or test_status == KeyCheck.OK.value else "untested"


def usable_keys(connection: str, stored: Sequence[PoolRow], env_key: str | None, env_state: KeyState,
                plaintext: Callable[[str], str], now: datetime) -> list[PoolKey]:
    """The keys of a connection a call may use now, in pool order, the environment's key last."""
    keys = [PoolKey(r.id, plaintext(r.token)) for r in stored if r.state(now) == "ok"]
    if env_key is not None and env_state == "ok":
        keys.append(PoolKey(f"env:{connection}", env_key))
    return keys


def pick_secret(usable: Sequence[PoolKey], stored: Sequence[PoolRow], env_key: str | None,
                plaintext: Callable[[str], str]) -> str | None:
    """The key to call a connection with: its first usable key, else its first stored key, else the env key.

    A stored key out of use (rejected, cooling) is used only when nothing is usable, so the call fails
    with a clear authentication error instead of "no key".
    """
    if usable:
        return usable[0].secret
    return plaintext(stored[0].token) if stored else env_key


def explain_unusable(connection: str, states: Sequence[tuple[KeyState, datetime | None]]) -> str | None:
    """Why a connection whose keys are in these (state, cooling until) can use none of them, or None."""
    if not states or any(state == "ok" for state, _ in states):
        return None
    if all(state == "rejected" for state, _ in states):
        return f"every key of {connection} was rejected; test it again or replace it on the API Keys page"
    until = min(u for state, u in states if u is not None and state != "rejected")
    when = until.astimezone().strftime("%H:%M:%S")
    return f"every key of {connection} is rejected, rate limited or out of quota until {when}"


def load_fernet(secret: str | None, key_dir: Path | None) -> Fernet:
    """The Fernet for stored keys: from ORCHESTRATOR_SECRET_KEY, else from key_dir/secret.key (made once).

    A secret that is a valid Fernet key (32 url-safe base64 bytes) is used as is; any other text is
    treated as a passphrase and stretched with scrypt (fixed app salt) into a Fernet key.
    """
    from cryptography.fernet import Fernet  # noqa: PLC0415 - start-up cost: see the module

    return Fernet(fernet_key(secret, key_dir))


def fernet_key(secret: str | None, key_dir: Path | None) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) load_fernet uses, read or made without cryptography."""
    if secret is not None and secret.strip():
        return _fernet_key_from_secret(secret.strip())
    return _read_or_create_key_file((key_dir or default_key_dir()) / SECRET_FILE)


def default_key_dir() -> Path:
    """Where secret.key lives when the database has no folder of its own (PostgreSQL, in-memory SQLite)."""
    return home_dir() / DEFAULT_DATA_DIR


def _is_fernet_key(key: bytes) -> bool:
    """What Fernet(key) accepts: url-safe base64 of exactly 32 bytes."""
    try:
        return len(base64.urlsafe_b64decode(key)) == 32
    except (binascii.Error, ValueError):
        return False


def _fernet_key_from_secret(secret: str) -> bytes:
    if _is_fernet_key(secret.encode()):
        return secret.encode()
    derived = hashlib.scrypt(secret.encode(), salt=_KDF_SALT, n=2**14, r=8, p=1, dklen=32)
    return base64.urlsafe_b64encode(derived)


def _read_or_create_key_file(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: exactly one process creates the file; 0o600 from the first byte, never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    except OSError as exc:
        raise SecretKeyError(
            f"Cannot create the key file {path} ({exc.strerror}); make its folder writable or set "
            "ORCHESTRATOR_SECRET_KEY."
        ) from None
    key = base64.urlsafe_b64encode(os.urandom(32))  # what Fernet.generate_key() does
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _read_key_file(path: Path) -> bytes:
    # Another process may have created the file an instant ago and still be writing its 44 bytes.
    for _ in range(50):
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise SecretKeyError(f"Cannot read the key file {path} ({exc.strerror}); fix its permissions.") from None
        if key:
            break
        time.sleep(0.01)
    if not _is_fernet_key(key):
        raise SecretKeyError(
            f"The key file {path} is not a valid key; restore it from a backup or set ORCHESTRATOR_SECRET_KEY."
        )
    _check_private(path)
    return key


def _check_private(path: Path) -> None:
    """Refuse a key file other users can read: whoever reads it can decrypt every stored key."""
    if os.name == "nt":  # Windows has no POSIX mode bits; its ACLs are out of reach here
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyError(
            f"The key file {path} can be read or changed by other users (mode {mode:04o}); run "
            f"`chmod 600 {path}` so only its owner can, then start again."
        )

