"""The sign-in limiter: failed passwords counted in the database, where no client of the console can reset them.

A count in the process (or in anything a Streamlit client can clear) resets on a restart or on a clear-cache
message; a row in the database survives both and holds for every process on it. Each attempt is reserved
*before* the password is hashed, by one UPDATE that counts it and refuses past the limit, so tries made at the
same instant are counted as they start instead of after their hash:

    limiter = SignInLimiter(db)
    attempt = limiter.reserve()
    if not attempt.granted: ...wait attempt.wait_s...
    elif password_ok: limiter.succeeded()
    else: limiter.failed(attempt)

The attempt that reaches ``max_failures`` starts the lockout at once (so no further try is even hashed while it
is checked); a correct password ends the lockout and clears the count, a wrong one re-arms it for ``lockout_s``.
An attempt whose process died mid-check stays counted, and its lockout expires like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, case, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import SIGN_IN_LOCKOUT_S, SIGN_IN_MAX_FAILURES
from ..errors import DatabaseError
from .db import Database
from .tables import SignInLimit

CONSOLE_SCOPE = "console"

_TABLE = cast(Table, SignInLimit.__table__)


@dataclass(frozen=True)
class Attempt:
    """A reservation: granted (check the password now) or refused for wait_s seconds."""

    granted: bool
    left: int = 0  # when granted: attempts left if this one fails (0: its failure keeps the lockout)
    wait_s: float = 0.0  # when refused: seconds until sign-in opens again


class SignInLimiter:
    """Failed attempts in a row for one scope, shared through the database; max_failures, then lockout_s."""

    def __init__(
        self,
        db: Database,
        *,
        max_failures: int = SIGN_IN_MAX_FAILURES,
        lockout_s: float = SIGN_IN_LOCKOUT_S,
        scope: str = CONSOLE_SCOPE,
        clock: Callable[[], float] = time.time,  # wall clock: processes and restarts must agree on it
    ) -> None:
        self.db = db
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.scope = scope
        self._clock = clock
        self._serial = threading.Lock()

    def reserve(self) -> Attempt:
        """Count one attempt before it is checked; refused while locked, and for every try past the limit."""
        # Threads of this process queue here rather than on the database's write lock: thirty sign-ins at
        # once in one busy process kept that lock long enough (each holder waiting for the GIL) to exceed
        # SQLite's busy timeout. Other processes still meet at the atomic UPDATE.
        with self._serial:
            return self._reserve()

    def _reserve(self) -> Attempt:
        now = self._clock()
        counted = case((_TABLE.c.failures >= self.max_failures, 1), else_=_TABLE.c.failures + 1)
        reserve = (
            update(_TABLE)
            .where(_TABLE.c.scope == self.scope, _TABLE.c.locked_until <= now)
            .values(failures=counted,
                    locked_until=case((counted >= self.max_failures, now + self.lockout_s), else_=0.0))
            .returning(_TABLE.c.failures)
        )
        with self._session() as s:
            failures = s.connection().execute(reserve).scalar()
            if failures is not None:
                return Attempt(True, left=max(0, self.max_failures - failures))
            locked_until = s.scalar(select(_TABLE.c.locked_until).where(_TABLE.c.scope == self.scope))
        if locked_until is None:  # the first attempt ever on this database
            self._add_row()
            return self._reserve()
        return Attempt(False, wait_s=max(0.0, locked_until - now))

    def failed(self, attempt: Attempt) -> None:
        """The reserved attempt had a wrong password; the one that reached the limit locks from now."""
        if attempt.left > 0:
            return  # already counted when it was reserved
        relock = (
            update(_TABLE)
            .where(_TABLE.c.scope == self.scope, _TABLE.c.failures >= self.max_failures)
            .values(locked_until=self._clock() + self.lockout_s)
        )
        with self._serial, self._session() as s:
            s.execute(relock)

    def succeeded(self) -> None:
        """A correct password: the count and any lockout end."""
        with self._serial, self._session() as s:
            s.execute(update(_TABLE).where(_TABLE.c.scope == self.scope).values(failures=0, locked_until=0.0))

    def locked_for(self) -> float:
        """Seconds until attempts are allowed again; 0 when they are allowed now."""
        with self._session() as s:
            locked_until = s.scalar(select(_TABLE.c.locked_until).where(_TABLE.c.scope == self.scope)) or 0.0
        return max(0.0, locked_until - self._clock())

    def _add_row(self) -> None:
        try:
            with self.db.session() as s:
                if s.get(SignInLimit, self.scope) is None:
                    s.add(SignInLimit(scope=self.scope, failures=0, locked_until=0.0))
        except IntegrityError:
            pass  # another process added the row an instant before
        except SQLAlchemyError as error:
            raise _unavailable() from error

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self.db.session() as s:
                yield s
        except SQLAlchemyError as error:
            raise _unavailable() from error


def _unavailable() -> DatabaseError:
    # The gate fails closed on this: no count, no password check.
    return DatabaseError("The sign-in count could not be read or written (the database is busy or unavailable); "
                         "try again in a moment.")
