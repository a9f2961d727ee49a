"""The console's password gate, without Streamlit: hash parsing, constant-time checks under the sign-in limiter.

Configure one of (the hash wins when both are set):

    CONSOLE_PASSWORD=<plain text>
    CONSOLE_PASSWORD_HASH=sha256:<64 hex digits>
    CONSOLE_PASSWORD_HASH=pbkdf2_sha256$<iterations>$<salt>$<hex digest>

``python -m console.auth`` prints a PBKDF2 hash for a password typed at the prompt. A malformed
hash fails closed: the console refuses everyone until it is fixed. Failed attempts are counted in the
database (orchestrator_core.store.logins): SIGN_IN_MAX_FAILURES in a row, then SIGN_IN_LOCKOUT_S for everyone.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator_core.errors import ConfigurationError
from orchestrator_core.store import SignInLimiter

PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
_MIN_PBKDF2_ITERATIONS = 1_000


@dataclass(frozen=True)
class PasswordCheck:
    """How to verify a typed password: a scheme and what it needs."""

    scheme: str  # "plain" | "sha256" | "pbkdf2_sha256"
    digest: bytes
    salt: bytes = b""
    iterations: int = 0

    def verify(self, password: str) -> bool:
        """True when password matches; always compares in constant time."""
        return hmac.compare_digest(self._digest_of(password), self.digest)

    def _digest_of(self, password: str) -> bytes:
        data = password.encode("utf-8")
        if self.scheme == "pbkdf2_sha256":
            return hashlib.pbkdf2_hmac("sha256", data, self.salt, self.iterations)
        # Plain passwords are compared as SHA-256 digests too, so the length of the secret never leaks.
        return hashlib.sha256(data).digest()


def parse_password_hash(spec: str) -> PasswordCheck:
    """A PasswordCheck from "sha256:<hex>" or "pbkdf2_sha256$<iterations>$<salt>$<hex>"."""
    text = spec.strip()
    if text.startswith("sha256:"):
        digest = _hex(text[len("sha256:"):], 32)
        return PasswordCheck("sha256", digest)
    if text.startswith("pbkdf2_sha256$"):
        parts = text.split("$")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2]:
            raise _bad_hash()
        iterations = int(parts[1])
        if iterations < _MIN_PBKDF2_ITERATIONS:
            raise ConfigurationError(
                f"CONSOLE_PASSWORD_HASH uses {iterations} PBKDF2 iterations, fewer than {_MIN_PBKDF2_ITERATIONS}; "
                "make a new hash with `python -m console.auth`."
            )
        return PasswordCheck("pbkdf2_sha256", _hex(parts[3], 32), parts[2].encode("utf-8"), iterations)
    raise _bad_hash()


def _hex(text: str, size: int) -> bytes:
    try:
        digest = bytes.fromhex(text.strip())
    except ValueError:
        raise _bad_hash() from None
    if len(digest) != size:
        raise _bad_hash()
    return digest


def _bad_hash() -> ConfigurationError:
    return ConfigurationError(
        "CONSOLE_PASSWORD_HASH is not 'sha256:<64 hex digits>' or 'pbkdf2_sha256$<iterations>$<salt>$<64 hex "
        "digits>'; make one with `python -m console.auth` or set CONSOLE_PASSWORD instead."
    )


def password_check_from_env(environ: Mapping[str, str]) -> PasswordCheck | None:
    """The configured check, or None when the console is open (no password set)."""
    spec = (environ.get("CONSOLE_PASSWORD_HASH") or "").strip()
    if spec:
        return parse_password_hash(spec)
    plain = environ.get("CONSOLE_PASSWORD") or ""
    if plain:
        return PasswordCheck("plain", hashlib.sha256(plain.encode("utf-8")).digest())
    return None


def make_pbkdf2_hash(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: str | None = None) -> str:
    """A CONSOLE_PASSWORD_HASH value for password."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${digest.hex()}"


def try_password(check: PasswordCheck, password: str, limiter: SignInLimiter) -> str | None:
    """Check a typed password under the limiter: None when it is right, else what to tell the visitor.

    The attempt is reserved before the password is hashed, so tries past the limit are never checked, even
    when many arrive at the same instant.
    """
    attempt = limiter.reserve()
    if not attempt.granted:
        return f"Too many wrong passwords; try again in {math.ceil(attempt.wait_s)} s."
    if password and check.verify(password):
        limiter.succeeded()
        return None
    limiter.failed(attempt)
    lock = f"{limiter.lockout_s:.0f} s"
    if attempt.left:
        return f"Wrong password; {attempt.left} more attempt{'s' if attempt.left > 1 else ''} before a {lock} lock."
    return f"Wrong password; sign-in is locked for {lock}."


def _main() -> None:
    password = getpass.getpass("Console password: ")
    if not password or password != getpass.getpass("Again: "):
        raise SystemExit("The passwords are empty or differ; nothing printed.")
    print(f"CONSOLE_PASSWORD_HASH='{make_pbkdf2_hash(password)}'")


if __name__ == "__main__":
    _main()
