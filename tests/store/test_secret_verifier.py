"""One secret per database: the first process records a verifier, a process with another secret refuses to start.

This is the shared-PostgreSQL case (each folder made its own secret.key) reproduced with two key
folders on one SQLite file; tests/real runs it on PostgreSQL when a server is available.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from orchestrator_core.errors import SecretKeyError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import Database, KeyStore, load_fernet
from tests.helpers import settings


def store(db: Database, folder: Path) -> KeyStore:
    """The key store of a process whose data folder (and so secret.key) is folder, with no ORCHESTRATOR_SECRET_KEY."""
    return KeyStore(db, load_fernet(None, folder))


def test_a_second_folder_with_its_own_secret_is_refused_even_before_any_key_is_stored(
    db: Database, tmp_path: Path
) -> None:
    store(db, tmp_path / "first").verify_secret()
    with pytest.raises(SecretKeyError) as info:
        store(db, tmp_path / "second").verify_secret()
    message = info.value.message
    assert "ORCHESTRATOR_SECRET_KEY" in message and "secret.key" in message and "same" in message


def test_copying_the_first_secret_key_makes_the_second_folder_work(db: Database, tmp_path: Path) -> None:
    first = store(db, tmp_path / "first")
    first.verify_secret()
    (tmp_path / "second").mkdir()
    shutil.copy(tmp_path / "first" / "secret.key", tmp_path / "second" / "secret.key")
    second = store(db, tmp_path / "second")
    second.verify_secret()
    second.add("openai", "work", "sk-shared-0123456789abcdef")
    assert first.secret_for("openai") == "sk-shared-0123456789abcdef"


def test_the_same_passphrase_everywhere_is_accepted(db: Database) -> None:
    KeyStore(db, load_fernet("one passphrase for every process", None)).verify_secret()
    KeyStore(db, load_fernet("one passphrase for every process", None)).verify_secret()


def test_two_processes_starting_at_once_with_different_secrets_agree_on_one(db: Database, tmp_path: Path) -> None:
    stores = [store(db, tmp_path / f"folder-{i}") for i in range(2)]
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def verify(keys: KeyStore) -> None:
        start.wait()
        try:
            keys.verify_secret()
            outcomes.append("ok")
        except SecretKeyError:
            outcomes.append("refused")

    threads = [threading.Thread(target=verify, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["ok", "refused"]


def test_an_orchestrator_with_another_secret_refuses_to_start(db_url: str) -> None:
    with Orchestrator.from_settings(settings(db_url, secret_key="the-first-secret", local_hosts=())):
        pass
    with pytest.raises(SecretKeyError):
        Orchestrator.from_settings(settings(db_url, secret_key="another-secret", local_hosts=()))
