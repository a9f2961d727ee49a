"""Where .env, the default database and secret.key live: the project folder or ORCHESTRATOR_HOME, never the cwd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator_core.config import DEFAULT_DATABASE_URL, PROJECT_DIR, Settings, home_dir, load_env_file
from orchestrator_core.store import Database, load_fernet

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process starts in a folder that is not its home, holding a decoy .env and data/."""
    home, start = tmp_path / "home", tmp_path / "start"
    home.mkdir()
    (start / "data").mkdir(parents=True)
    (start / ".env").write_text("CONSOLE_PASSWORD=from-the-current-folder\n")
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(home))
    monkeypatch.chdir(start)
    return home


def test_the_project_folder_is_home_when_orchestrator_home_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_HOME")
    assert PROJECT_DIR == REPO_ROOT
    assert home_dir() == REPO_ROOT
    assert home_dir({"ORCHESTRATOR_HOME": "  "}) == REPO_ROOT


def test_orchestrator_home_wins_over_the_project_folder(tmp_path: Path) -> None:
    assert home_dir({"ORCHESTRATOR_HOME": str(tmp_path)}) == tmp_path


def test_dotenv_is_read_from_home_not_from_the_current_folder(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "")  # registers an undo for what load_env_file sets
    monkeypatch.delenv("CONSOLE_PASSWORD")
    (elsewhere / ".env").write_text("CONSOLE_PASSWORD=from-home\n")
    load_env_file()
    assert os.environ["CONSOLE_PASSWORD"] == "from-home"


def test_settings_read_the_dotenv_of_home(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILURE_COOLDOWN_S", "")
    monkeypatch.delenv("FAILURE_COOLDOWN_S")
    (elsewhere / ".env").write_text("FAILURE_COOLDOWN_S=7\n")
    assert Settings.from_env().failure_cooldown_s == 7.0


def test_the_default_database_is_made_under_home_not_the_current_folder(elsewhere: Path) -> None:
    db = Database.open(DEFAULT_DATABASE_URL)
    try:
        assert db.dir == elsewhere / "data"
        assert (elsewhere / "data" / "orchestrator.db").is_file()
        assert not (Path.cwd() / "data" / "orchestrator.db").exists()
    finally:
        db.dispose()


def test_any_relative_sqlite_path_is_taken_from_home(elsewhere: Path) -> None:
    (elsewhere / "db").mkdir()
    db = Database.open("sqlite:///db/other.db")
    try:
        assert db.url.database == str(elsewhere / "db" / "other.db")
        assert not (Path.cwd() / "db").exists()
    finally:
        db.dispose()


def test_secret_key_without_a_database_folder_lives_under_home(elsewhere: Path) -> None:
    load_fernet(None, None)
    assert (elsewhere / "data" / "secret.key").is_file()
    assert not (Path.cwd() / "data" / "secret.key").exists()
