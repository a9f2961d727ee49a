"""The sign-in limiter: counted in the database, reserved before the check, shared by every process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from orchestrator_core.errors import DatabaseError
from orchestrator_core.store import Database, SignInLimiter


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    yield database
    database.dispose()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wrong(limiter: SignInLimiter) -> int:
    """One reserved attempt with a wrong password; the attempts it left (-1: it was refused)."""
    attempt = limiter.reserve()
    if not attempt.granted:
        return -1
    limiter.failed(attempt)
    return attempt.left


def test_five_wrong_attempts_lock_sign_in_then_the_count_starts_afresh(db: Database) -> None:
    clock = Clock()
    limiter = SignInLimiter(db, max_failures=5, lockout_s=60, clock=clock)
    assert [wrong(limiter) for _ in range(5)] == [4, 3, 2, 1, 0]
    refused = limiter.reserve()
    assert not refused.granted and refused.wait_s == pytest.approx(60)
    clock.now += 59
    assert limiter.locked_for() == pytest.approx(1) and not limiter.reserve().granted
    clock.now += 1.5
    assert limiter.locked_for() == 0
    assert wrong(limiter) == 4  # a fresh count after the lockout


def test_a_correct_password_clears_the_count(db: Database) -> None:
    limiter = SignInLimiter(db, max_failures=3, lockout_s=60, clock=Clock())
    wrong(limiter)
    wrong(limiter)
    assert limiter.reserve().granted
    limiter.succeeded()
    assert wrong(limiter) == 2


def test_reservations_in_flight_count_before_any_of_them_is_checked(db: Database) -> None:
    limiter = SignInLimiter(db, max_failures=5, lockout_s=60, clock=Clock())
    in_flight = [limiter.reserve() for _ in range(5)]
    assert [a.granted for a in in_flight] == [True] * 5 and in_flight[-1].left == 0
    assert not limiter.reserve().granted  # the sixth is refused while the five are still being hashed


def test_the_attempt_that_reaches_the_limit_unlocks_when_its_password_is_right(db: Database) -> None:
    limiter = SignInLimiter(db, max_failures=2, lockout_s=60, clock=Clock())
    wrong(limiter)
    last = limiter.reserve()
    assert last.granted and last.left == 0 and limiter.locked_for() > 0
    limiter.succeeded()
    assert limiter.locked_for() == 0 and wrong(limiter) == 1


def test_the_last_wrong_attempt_locks_for_the_whole_lockout_from_its_failure(db: Database) -> None:
    clock = Clock()
    limiter = SignInLimiter(db, max_failures=1, lockout_s=60, clock=clock)
    attempt = limiter.reserve()
    clock.now += 10  # the hash took a while
    limiter.failed(attempt)
    assert limiter.locked_for() == pytest.approx(60)


def test_the_count_survives_a_restart_and_is_shared_by_every_process(db: Database, db_url: str) -> None:
    clock = Clock()
    first = SignInLimiter(db, max_failures=5, lockout_s=60, clock=clock)
    wrong(first)
    wrong(first)
    other_process = Database.open(db_url)  # its own engine and connections, as a second process has
    try:
        assert wrong(SignInLimiter(other_process, max_failures=5, lockout_s=60, clock=clock)) == 2
    finally:
        other_process.dispose()
    assert wrong(first) == 1


def test_thirty_reservations_at_the_same_instant_grant_at_most_max_failures(db: Database) -> None:
    limiter = SignInLimiter(db, max_failures=5, lockout_s=60)
    start = threading.Barrier(30)

    def reserve(_: int) -> bool:
        start.wait()
        return limiter.reserve().granted

    with ThreadPoolExecutor(max_workers=30) as pool:
        granted = list(pool.map(reserve, range(30)))
    assert granted.count(True) == 5


def test_a_database_that_cannot_keep_the_count_is_a_database_error(db: Database) -> None:
    limiter = SignInLimiter(db)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE sign_in_limits"))
    with pytest.raises(DatabaseError, match="sign-in count could not be read or written"):
        limiter.reserve()
