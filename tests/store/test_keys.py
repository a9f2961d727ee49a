"""KeyStore: encrypted at rest, masked in lists, validated, merged with environment keys."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from orchestrator_core.errors import InvalidKeyInputError, SecretKeyError
from orchestrator_core.store import Database, KeyStore, load_fernet
from orchestrator_core.types import KeyCheck, KeyTestResult

OPENAI_KEY = "sk-proj-AbCdEf0123456789xyzWXYZ"
ANTHROPIC_KEY = "sk-ant-api03-QwErTy9876543210"
PROVIDERS = ("openai", "anthropic", "google", "mistral")


@pytest.fixture
def keys(db: Database, tmp_path: Path) -> KeyStore:
    return KeyStore(db, load_fernet(None, tmp_path), known_providers=PROVIDERS)


def test_add_returns_masked_info_and_list_shows_only_the_mask(keys: KeyStore) -> None:
    info = keys.add("openai", "work", OPENAI_KEY)
    assert (info.provider, info.label, info.source, info.masked) == ("openai", "work", "stored", "••••WXYZ")
    assert isinstance(info.id, int) and info.created_at is not None and info.created_at.tzinfo is not None
    listed = keys.list()
    assert [(k.id, k.masked) for k in listed] == [(info.id, "••••WXYZ")]
    assert OPENAI_KEY not in repr(listed)
    assert keys.secret_for("openai") == OPENAI_KEY


@pytest.mark.sqlite_only
def test_plaintext_key_never_reaches_the_database_files(db: Database, keys: KeyStore, tmp_path: Path) -> None:
    keys.add("openai", None, OPENAI_KEY)
    keys.update(keys.list()[0].id, key=ANTHROPIC_KEY.replace("ant", "xyz"))
    keys.add("anthropic", "default", ANTHROPIC_KEY)
    db_files = [p for p in tmp_path.iterdir() if p.name.startswith("test.db")]
    assert any(p.name == "test.db-wal" for p in db_files)  # the freshest writes sit in the WAL
    for path in db_files:
        data = path.read_bytes()
        assert OPENAI_KEY.encode() not in data and ANTHROPIC_KEY.encode() not in data
    db.dispose()  # checkpoint the WAL into the main file and look again
    data = (tmp_path / "test.db").read_bytes()
    assert ANTHROPIC_KEY.encode() not in data and b"anthropic" in data


def test_plaintext_key_is_in_no_row_of_any_table(db: Database, keys: KeyStore) -> None:
    keys.add("openai", None, OPENAI_KEY)
    keys.add("anthropic", "default", ANTHROPIC_KEY)
    with db.engine.connect() as conn:
        tables = inspect(db.engine).get_table_names()
        dump = repr([conn.execute(text(f"SELECT * FROM {name}")).all() for name in tables])  # noqa: S608 - own tables
    assert "anthropic" in dump and "default" in dump
    assert OPENAI_KEY not in dump and ANTHROPIC_KEY not in dump


def test_surrounding_whitespace_is_stripped_and_label_defaults(keys: KeyStore) -> None:
    info = keys.add(" OpenAI ", None, f"  {OPENAI_KEY}\n")
    assert (info.provider, info.label) == ("openai", "default")
    assert keys.secret_by_id(info.id) == OPENAI_KEY


@pytest.mark.parametrize(
    ("provider", "label", "key", "message"),
    [
        ("nosuch", "a", OPENAI_KEY, "Unknown provider 'nosuch'"),
        ("openai", "   ", OPENAI_KEY, "label is empty"),
        ("openai", "a", "   ", "key is empty"),
        ("openai", "a", "sk-abc def123456", "contains a space or a line break"),
        ("openai", "a", "sk-abc\ndef123456", "contains a space or a line break"),
        ("openai", "a", "sk-" + "x" * 600, "longer than 500 characters"),
    ],
)
def test_invalid_input_is_rejected_and_nothing_is_stored(
    keys: KeyStore, provider: str, label: str, key: str, message: str
) -> None:
    with pytest.raises(InvalidKeyInputError, match=message) as info:
        keys.add(provider, label, key)
    assert key.strip() not in info.value.message or not key.strip()
    assert keys.list() == []


def test_duplicate_label_for_a_provider_is_rejected(keys: KeyStore) -> None:
    keys.add("openai", "work", OPENAI_KEY)
    with pytest.raises(InvalidKeyInputError, match="labelled 'work' already exists"):
        keys.add("openai", "work", OPENAI_KEY + "2")
    keys.add("anthropic", "work", ANTHROPIC_KEY)  # the same label for another provider is fine
    assert sorted((k.provider, k.label) for k in keys.list()) == [("anthropic", "work"), ("openai", "work")]


def test_update_changes_label_and_key_and_forgets_the_old_test(keys: KeyStore) -> None:
    info = keys.add("openai", "work", OPENAI_KEY)
    keys.record_test(info.id, KeyTestResult(KeyCheck.REJECTED, "401", 12.0))
    relabelled = keys.update(info.id, label="personal")
    assert (relabelled.label, relabelled.last_test_status) == ("personal", KeyCheck.REJECTED)
    rekeyed = keys.update(info.id, key="sk-new-key-000011112222")
    assert rekeyed.masked == "••••2222" and rekeyed.last_test_status is None
    assert rekeyed.updated_at is not None and rekeyed.updated_at > info.updated_at  # type: ignore[operator]
    assert keys.secret_by_id(info.id) == "sk-new-key-000011112222"


def test_update_to_a_taken_label_and_unknown_ids_are_rejected(keys: KeyStore) -> None:
    keys.add("openai", "a", OPENAI_KEY)
    second = keys.add("openai", "b", OPENAI_KEY + "b")
    with pytest.raises(InvalidKeyInputError, match="already exists"):
        keys.update(second.id, label="a")
    with pytest.raises(InvalidKeyInputError, match="no stored key with id 999"):
        keys.update(999, label="c")
    with pytest.raises(InvalidKeyInputError, match="no stored key"):
        keys.delete("nonsense")
    assert keys.secret_by_id(str(second.id)) == OPENAI_KEY + "b"  # a numeric string from a form works


def test_delete_removes_the_key(keys: KeyStore) -> None:
    info = keys.add("openai", "work", OPENAI_KEY)
    keys.delete(info.id)
    assert keys.list() == []
    assert keys.secret_for("openai") is None


def test_env_keys_are_listed_read_only_and_cannot_be_edited(db: Database, tmp_path: Path) -> None:
    keys = KeyStore(db, load_fernet(None, tmp_path), env_keys={"openai": OPENAI_KEY}, known_providers=PROVIDERS)
    keys.add("openai", "work", ANTHROPIC_KEY)
    listed = keys.list("openai")
    assert [(k.source, k.id) for k in listed] == [("stored", listed[0].id), ("env", "env:openai")]
    env = listed[1]
    assert env.read_only and env.label == "OPENAI_API_KEY" and env.masked == "••••WXYZ"
    with pytest.raises(InvalidKeyInputError, match="comes from the environment; change OPENAI_API_KEY"):
        keys.update("env:openai", label="x")
    with pytest.raises(InvalidKeyInputError, match="comes from the environment"):
        keys.delete("env:openai")
    assert keys.secret_by_id("env:openai") == OPENAI_KEY


def test_secret_for_prefers_newest_stored_key_not_rejected_then_env(db: Database, tmp_path: Path) -> None:
    keys = KeyStore(db, load_fernet(None, tmp_path), env_keys={"openai": "sk-env-key-123456789"},
                    known_providers=PROVIDERS)
    assert keys.secret_for("openai") == "sk-env-key-123456789"
    old = keys.add("openai", "old", "sk-old-key-123456789")
    new = keys.add("openai", "new", "sk-new-key-123456789")
    assert keys.secret_for("openai") == "sk-new-key-123456789"
    keys.record_test(new.id, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 30.0))
    assert keys.secret_for("openai") == "sk-old-key-123456789"
    keys.record_test(old.id, KeyTestResult(KeyCheck.REJECTED, "401 invalid key", 30.0))
    assert keys.secret_for("openai") == "sk-env-key-123456789"
    assert keys.secret_for("mistral") is None


def test_rejected_is_true_only_when_the_key_a_call_would_use_failed_its_last_test(db: Database,
                                                                                  tmp_path: Path) -> None:
    keys = KeyStore(db, load_fernet(None, tmp_path), env_keys={"google": "g-env-key-123456789"},
                    known_providers=PROVIDERS)
    assert not keys.rejected("openai")  # no key at all is "no key", not "rejected"
    first = keys.add("openai", "first", "sk-first-key-123456789")
    keys.record_test(first.id, KeyTestResult(KeyCheck.REJECTED, "401", 10.0))
    assert keys.rejected("openai")
    second = keys.add("openai", "second", "sk-second-key-123456789")
    assert not keys.rejected("openai")  # the untested key is the one a call uses
    keys.record_test(second.id, KeyTestResult(KeyCheck.UNVERIFIED, "timeout", 10.0))
    assert not keys.rejected("openai")
    assert not keys.rejected("google")
    keys.record_test("env:google", KeyTestResult(KeyCheck.REJECTED, "403", 10.0))
    assert keys.rejected("google")


def test_record_test_is_stored_for_stored_keys_and_kept_in_memory_for_env_keys(db: Database, tmp_path: Path) -> None:
    keys = KeyStore(db, load_fernet(None, tmp_path), env_keys={"google": "AIza-env-key-123456"},
                    known_providers=PROVIDERS)
    info = keys.add("openai", "work", OPENAI_KEY)
    tested_at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    keys.record_test(info.id, KeyTestResult(KeyCheck.OK, "Key accepted; 12 models listed.", 81.5, tested_at))
    keys.record_test("env:google", KeyTestResult(KeyCheck.UNVERIFIED, "timeout", 2000.0, tested_at))
    fresh = KeyStore(db, keys.fernet, env_keys={"google": "AIza-env-key-123456"}, known_providers=PROVIDERS)
    stored = fresh.list("openai")[0]
    assert (stored.last_test_status, stored.last_test_latency_ms) == (KeyCheck.OK, 81.5)
    assert stored.last_tested_at == tested_at
    assert stored.last_test_detail == "Key accepted; 12 models listed."
    assert keys.list("google")[0].last_test_status == KeyCheck.UNVERIFIED
    assert fresh.list("google")[0].last_test_status is None  # env results live only in that process


def test_secret_file_is_created_with_mode_0600_and_reused(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the file's mode
    try:
        first = load_fernet(None, tmp_path)
    finally:
        os.umask(old_umask)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = path.read_bytes()
    token = first.encrypt(b"hello")
    assert load_fernet(None, tmp_path).decrypt(token) == b"hello"
    assert path.read_bytes() == saved  # reused, not rewritten


def test_without_a_folder_the_key_file_goes_to_data(tmp_path: Path) -> None:
    token = load_fernet(None, None).encrypt(b"x")  # e.g. PostgreSQL: no SQLite folder to put it beside
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_fernet(None, None).decrypt(token) == b"x"


def test_secret_key_setting_accepts_a_fernet_key_or_a_passphrase(tmp_path: Path) -> None:
    fernet_key = Fernet.generate_key().decode()
    assert Fernet(fernet_key.encode()).decrypt(load_fernet(fernet_key, tmp_path).encrypt(b"a")) == b"a"
    token = load_fernet("correct horse battery staple", None).encrypt(b"b")
    assert load_fernet("correct horse battery staple", None).decrypt(token) == b"b"  # derived the same way
    assert not (tmp_path / "secret.key").exists()  # a configured secret never writes a key file


def test_wrong_secret_raises_secret_key_error_but_list_still_works(db: Database, tmp_path: Path) -> None:
    KeyStore(db, load_fernet("first secret", None), known_providers=PROVIDERS).add("openai", "work", OPENAI_KEY)
    wrong = KeyStore(db, load_fernet("second secret", None), known_providers=PROVIDERS)
    with pytest.raises(SecretKeyError, match="cannot be decrypted with this secret; set ORCHESTRATOR_SECRET_KEY"):
        wrong.verify_secret()
    with pytest.raises(SecretKeyError):
        wrong.secret_for("openai")
    with pytest.raises(SecretKeyError):
        wrong.secret_by_id(wrong.list()[0].id)
    assert [k.masked for k in wrong.list()] == ["•••• (cannot decrypt)"]  # visible, so it can be deleted
    KeyStore(db, load_fernet("first secret", None), known_providers=PROVIDERS).verify_secret()


def test_corrupt_secret_file_raises_secret_key_error(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("not a key")
    with pytest.raises(SecretKeyError, match="is not a valid key"):
        load_fernet(None, tmp_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_secret_file_readable_by_group_or_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    load_fernet(None, tmp_path)  # made 0600
    path = tmp_path / "secret.key"
    path.chmod(mode)
    with pytest.raises(SecretKeyError, match=f"mode {mode:04o}") as info:
        load_fernet(None, tmp_path)
    assert f"chmod 600 {path}" in info.value.message
    path.chmod(0o600)
    load_fernet(None, tmp_path)  # the fix it names works


@pytest.mark.parametrize(("char", "kind"), [
    ("\x00", "control"), ("\x7f", "control"), ("\x1b", "control"), ("\u200b", "invisible"), ("\ufeff", "invisible"),
    ("\u2028", "space or a line break"), ("\u00a0", "space or a line break"), ("\u3000", "space or a line break"),
    ("\ue000", "invisible"), ("\U000e0001", "invisible"), ("\U0010fffe", "invisible"), ("é", "non-ASCII"),
])
def test_key_with_a_control_invisible_or_non_ascii_character_is_refused_on_add_and_update(
    keys: KeyStore, char: str, kind: str
) -> None:
    bad = OPENAI_KEY[:10] + char + OPENAI_KEY[10:]
    with pytest.raises(InvalidKeyInputError, match=kind) as info:
        keys.add("openai", "work", bad)
    assert OPENAI_KEY[:10] not in info.value.message and OPENAI_KEY[10:] not in info.value.message
    assert keys.list() == []
    stored = keys.add("openai", "work", OPENAI_KEY)
    with pytest.raises(InvalidKeyInputError, match=kind):
        keys.update(stored.id, key=bad)
    assert keys.secret_for("openai") == OPENAI_KEY


@pytest.mark.parametrize("label", ["sk-proj-AbCdEf0123456789GhIjKl0123456789", "work AIzaSyD4f3k3yF0rT3stsXXXXXXXXXXXXXXX1",
                                   "gsk_0123456789abcdefghij0123456789abcd"])
def test_a_label_that_looks_like_a_key_is_refused_and_not_repeated(keys: KeyStore, label: str) -> None:
    with pytest.raises(InvalidKeyInputError, match="looks like an API key") as info:
        keys.add("openai", label, "sk-the-real-key-0123456789abcdef")
    assert label not in info.value.message
    stored = keys.add("openai", "work", "sk-the-real-key-0123456789abcdef")
    with pytest.raises(InvalidKeyInputError, match="looks like an API key"):
        keys.update(stored.id, label=label)
    assert [k.label for k in keys.list("openai") if not k.read_only] == ["work"]


@pytest.mark.parametrize("label", ["default", "work account 2024", "prod-eu-west-1-primary-team-billing-key",
                                   "PERSONAL_BACKUP_KEY_FOR_WEEKEND_EXPERIMENTS"])
def test_ordinary_labels_are_kept(keys: KeyStore, label: str) -> None:
    assert keys.add("openai", label, "sk-the-real-key-0123456789abcdef").label == label


def test_the_key_itself_as_its_label_is_refused(keys: KeyStore) -> None:
    with pytest.raises(InvalidKeyInputError, match="the key itself") as info:
        keys.add("openai", "sk-short-key-123", "sk-short-key-123")
    assert "sk-short-key-123" not in info.value.message
