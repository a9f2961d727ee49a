"""FailureCache: one row per model in the database, shared by every process, no double cooldown."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from orchestrator_core.store import Database, FailureCache
from orchestrator_core.store.tables import ModelFailure

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_record_makes_the_model_cool_down_until_now_plus_cooldown(db: Database) -> None:
    cache = FailureCache(db)
    entry = cache.record("openai:gpt-4.1-mini", "rate_limit", "429 slow down", 60, now=T0)
    assert (entry.error_kind, entry.message, entry.failure_count) == ("rate_limit", "429 slow down", 1)
    assert (entry.since, entry.until) == (T0, T0 + timedelta(seconds=60))
    assert cache.get("openai:gpt-4.1-mini", now=T0 + timedelta(seconds=59)) == entry
    assert set(cache.active(now=T0)) == {"openai:gpt-4.1-mini"}


def test_cooldown_expires(db: Database) -> None:
    cache = FailureCache(db)
    cache.record("ollama:llama3", "unavailable", "refused", 30, now=T0)
    later = T0 + timedelta(seconds=30)
    assert cache.active(now=later) == {}
    assert cache.get("ollama:llama3", now=later) is None
    assert [e.model_id for e in cache.all()] == ["ollama:llama3"]  # still listed for display
    assert not cache.all()[0].active


def test_epoch_seconds_are_accepted_for_now(db: Database) -> None:
    cache = FailureCache(db)
    entry = cache.record("openai:a", "timeout", "slow", 10, now=T0.timestamp())
    assert entry.until == T0 + timedelta(seconds=10)
    assert cache.get("openai:a", now=T0.timestamp() + 5) is not None


def test_a_repeat_failure_never_doubles_the_cooldown(db: Database) -> None:
    cache = FailureCache(db)
    cache.record("openai:a", "rate_limit", "first", 60, now=T0)
    again = cache.record("openai:a", "timeout", "second", 10, now=T0 + timedelta(seconds=5))
    assert again.until == T0 + timedelta(seconds=60)  # the longer cooldown stands; not 60 + 10
    assert (again.error_kind, again.message, again.failure_count, again.since) == ("timeout", "second", 2, T0)
    extended = cache.record("openai:a", "rate_limit", "third", 120, now=T0 + timedelta(seconds=30))
    assert extended.until == T0 + timedelta(seconds=150)
    assert extended.failure_count == 3
    assert extended.remaining_s(T0 + timedelta(seconds=140)) == 10.0


def test_concurrent_records_of_one_model_make_one_row(db_url: str, db: Database) -> None:
    # Each thread has its own Database, as separate processes would.
    databases = [Database.open(db_url) for _ in range(8)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def fail(database: Database) -> None:
        barrier.wait()
        try:
            cache = FailureCache(database)
            cache.record("openai:a", "unavailable", "503", 60, now=T0)
            assert cache.flush(timeout_s=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fail, args=(d,)) for d in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in databases:
        d.dispose()
    assert errors == []
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ModelFailure)).scalar_one() == 1
    entry = FailureCache(db).get("openai:a", now=T0)
    assert entry is not None and entry.failure_count == 8 and entry.until == T0 + timedelta(seconds=60)


def test_reset_clears_one_model_or_all(db: Database) -> None:
    cache = FailureCache(db)
    for model in ("openai:a", "openai:b", "google:c"):
        cache.record(model, "timeout", "slow", 60, now=T0)
    assert cache.reset("openai:a") == 1
    assert set(cache.active(now=T0)) == {"openai:b", "google:c"}
    assert cache.reset("openai:a") == 0
    assert cache.reset() == 2
    assert cache.all() == []


def test_the_cache_is_shared_through_the_database(db_url: str, db: Database) -> None:
    other_process = Database.open(db_url)
    theirs = FailureCache(other_process)
    theirs.record("openai:a", "auth", "401", 60)
    assert theirs.flush(timeout_s=30)
    entry = FailureCache(db).get("openai:a")
    assert entry is not None and entry.active and entry.error_kind == "auth"
    other_process.dispose()


def test_long_messages_are_truncated(db: Database) -> None:
    entry = FailureCache(db).record("openai:a", "bad_response", "x" * 5000, 60, now=T0)
    assert len(entry.message) == 1000


def test_databases_without_upsert_fall_back_to_insert_then_update(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Database, "dialect", property(lambda self: "mysql"))
    cache = FailureCache(db)
    cache.record("openai:a", "timeout", "first", 60, now=T0)
    again = cache.record("openai:a", "auth", "second", 10, now=T0)
    assert (again.failure_count, again.message, again.until) == (2, "second", T0 + timedelta(seconds=60))


def test_a_model_id_of_the_full_255_characters_cools_down(db: Database) -> None:
    longest = "openai:" + "m" * (255 - len("openai:"))
    cache = FailureCache(db)
    cache.record(longest, "timeout", "slow", 60, now=T0)
    assert cache.flush(timeout_s=30)
    assert set(FailureCache(db).active(now=T0)) == {longest}


def test_lookups_while_a_failure_waits_for_its_write_merge_it_once_and_see_every_change(
    db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A failed call asks at once again (its fallback's cooldown check, the ranking's active()): one merge of
    # the unwritten failures serves them until a failure is recorded, written or reset.
    from orchestrator_core.store import failures as module

    merges: list[str] = []
    merged = module._Unwritten.merged
    monkeypatch.setattr(module._Unwritten, "merged", lambda self, e: merges.append(self.values["model_id"])
                        or merged(self, e))
    cache = FailureCache(db)
    cache.active()  # the rows are loaded
    with cache._writing:  # the writer waits: the failures stay unwritten meanwhile
        cache.record("openai:a", "unavailable", "refused", 60, now=T0)
        merges.clear()
        assert cache.get("openai:a", now=T0) is not None and set(cache.active(now=T0)) == {"openai:a"}
        assert merges == ["openai:a"]
        cache.record("openai:b", "timeout", "slow", 30, now=T0)
        assert set(cache.active(now=T0)) == {"openai:a", "openai:b"}
        again = cache.record("openai:a", "rate_limit", "429", 120, now=T0)
        assert cache.get("openai:a", now=T0) == again and again.failure_count == 2
        assert cache.get("openai:a", now=T0).until == T0 + timedelta(seconds=120)  # type: ignore[union-attr]
    assert cache.flush()
    assert set(cache.active(now=T0)) == {"openai:a", "openai:b"}  # written: read from the rows
    assert cache.reset("openai:a") == 1 and set(cache.active(now=T0)) == {"openai:b"}
    with cache._writing:
        cache.record("openai:c", "unavailable", "refused", 60, now=T0)
        assert set(cache.active(now=T0)) == {"openai:b", "openai:c"}
    assert cache.reset() == 2 and cache.active(now=T0) == {} and cache.get("openai:c", now=T0) is None
    cache.close()
