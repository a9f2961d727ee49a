"""A database the console cannot use stops start-up with a message that says what to fix, never a traceback.

Every case is checked twice: in-process (``Orchestrator.from_settings`` raises the documented class)
and end to end (``python -m orchestrator_core status`` exits 2 with the message and no "Traceback").
The CLI runs are started together once per module, so the interpreter start-ups overlap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from orchestrator_core.errors import DatabaseError, SecretKeyError
from orchestrator_core.orchestrator import Orchestrator
from tests.faults.conftest import running_threads
from tests.helpers import settings

REPO = Path(__file__).resolve().parents[2]
SECRET_A = "the-right-secret-for-these-keys"
SECRET_B = "a-different-secret-entirely"
STORED_KEY = "sk-stored-under-secret-a-0123456789"
DATABASE_CASES = ["read-only-file", "read-only-folder", "missing-folder", "corrupt-file", "corrupt-table",
                  "path-is-a-folder"]
# An interpreter start costs ~0.8 s of CPU here, so the CLI runs once per kind of problem, not per case.
CLI_CASES = ("read-only-file", "missing-folder", "corrupt-table", "wrong-secret")


@dataclass
class Case:
    url: str
    says: str  # the message names the problem and its fix
    error: type[Exception] = DatabaseError
    secret: str | None = None
    process: subprocess.Popen[str] | None = None
    output: tuple[str, str] = ("", "")

    def cli(self) -> tuple[int, str, str]:
        """Exit code, stdout, stderr of `python -m orchestrator_core status` on this database."""
        assert self.process is not None
        if self.process.returncode is None:
            self.output = self.process.communicate(timeout=30)
        return self.process.returncode, *self.output


def make_read_only(path: Path) -> Callable[[], None]:
    """Make a file or folder unwritable, also for root (chattr +i); returns the undo."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        return lambda: path.chmod(mode)
    # Root ignores permission bits; the immutable flag stops root too.
    subprocess.run(["chattr", "+i", str(path)], check=True)
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def corrupt_table(path: Path, table: str) -> None:
    """Overwrite the root page of one table with junk; the header and the migration table stay intact."""
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page_size : root * page_size] = b"\x5a" * page_size
    path.write_bytes(bytes(data))


def database_with_key(folder: Path, secret: str) -> Path:
    path = folder / "keys.db"
    with Orchestrator.from_settings(settings(f"sqlite:///{path}", secret_key=secret)) as orch:
        orch.keys.add("openai", "work", STORED_KEY)
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[dict[str, Case]]:
    root = tmp_path_factory.mktemp("bad-databases")
    undo: list[Callable[[], None]] = []
    for name in ("ro-file", "ro-folder", "corrupt-table", "wrong-secret"):
        (root / name).mkdir()
    shutil.copy(template_db, root / "ro-file" / "test.db")
    undo.append(make_read_only(root / "ro-file" / "test.db"))
    shutil.copy(template_db, root / "ro-folder" / "test.db")
    undo.append(make_read_only(root / "ro-folder"))
    (root / "corrupt.db").write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    shutil.copy(template_db, root / "corrupt-table" / "test.db")
    corrupt_table(root / "corrupt-table" / "test.db", "api_keys")
    keys_db = database_with_key(root / "wrong-secret", SECRET_A)
    found = {
        "read-only-file": Case(f"sqlite:///{root / 'ro-file' / 'test.db'}", "is read-only; make it writable"),
        "read-only-folder": Case(f"sqlite:///{root / 'ro-folder' / 'test.db'}", "is read-only; make it writable"),
        "missing-folder": Case(f"sqlite:///{root / 'no-such-folder' / 'test.db'}", "does not exist; create it"),
        "corrupt-file": Case(f"sqlite:///{root / 'corrupt.db'}", "not a SQLite database or is corrupt"),
        "corrupt-table": Case(f"sqlite:///{root / 'corrupt-table' / 'test.db'}", "corrupt; move it aside"),
        "path-is-a-folder": Case(f"sqlite:///{root / 'ro-file'}", "is a folder, not a file"),
        "wrong-secret": Case(f"sqlite:///{keys_db}", "stored keys cannot be decrypted with this secret",
                             SecretKeyError, SECRET_B),
    }
    work = root / "cwd"
    work.mkdir()
    for case in (found[name] for name in CLI_CASES):
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "DATABASE_URL": case.url,
               "HOME": str(work), "LOCAL_HOSTS": ""}
        if case.secret:
            env["ORCHESTRATOR_SECRET_KEY"] = case.secret
        case.process = subprocess.Popen([sys.executable, "-m", "orchestrator_core", "status"], cwd=work, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield found
    for name in CLI_CASES:
        found[name].cli()
    for step in undo:
        step()


@pytest.mark.parametrize("name", DATABASE_CASES)
def test_unusable_database_stops_start_up_with_what_to_fix(name: str, cases: dict[str, Case]) -> None:
    case = cases[name]
    path = Path(case.url.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    baseline = running_threads()
    with pytest.raises(DatabaseError) as info:
        Orchestrator.from_settings(settings(case.url))
    assert type(info.value) is DatabaseError
    assert case.says.lower() in info.value.message.lower()
    assert str(path.parent) in info.value.message or str(path) in info.value.message  # says which file
    assert [t.name for t in threading.enumerate() if t not in baseline] == []  # no metrics writer started
    if before is not None:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # nothing was written to it


@pytest.mark.parametrize("name", [n for n in CLI_CASES if n in DATABASE_CASES])
def test_cli_status_on_unusable_database_exits_2_with_the_message_and_no_traceback(
    name: str, cases: dict[str, Case]
) -> None:
    case = cases[name]
    code, out, err = case.cli()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and case.says.lower() in err.lower()
    assert "Traceback" not in err and "Traceback" not in out


def test_read_only_database_is_really_unwritable(cases: dict[str, Case]) -> None:
    # Guards the guard: if the read-only trick silently failed, the cases above would test nothing.
    path = Path(cases["read-only-file"].url.removeprefix("sqlite:///"))
    with pytest.raises(PermissionError):
        path.open("ab").close()


def test_wrong_secret_is_a_clear_error_and_never_drops_keys(cases: dict[str, Case]) -> None:
    case = cases["wrong-secret"]
    engine = create_engine(case.url)
    with engine.connect() as conn:
        stored_before = conn.execute(text("SELECT id, encrypted_key FROM api_keys")).all()
    assert len(stored_before) == 1

    with pytest.raises(SecretKeyError) as info:
        Orchestrator.from_settings(settings(case.url, secret_key=SECRET_B))
    assert "stored keys cannot be decrypted with this secret" in info.value.message.lower()
    assert "ORCHESTRATOR_SECRET_KEY" in info.value.message  # says what to set
    code, out, err = case.cli()
    assert code == 2 and "cannot be decrypted with this secret" in err and "Traceback" not in err + out

    with engine.connect() as conn:  # neither start dropped or re-encrypted anything
        assert conn.execute(text("SELECT id, encrypted_key FROM api_keys")).all() == stored_before
    engine.dispose()
    with Orchestrator.from_settings(settings(case.url, secret_key=SECRET_A)) as orch:
        assert orch.keys.secret_for("openai") == STORED_KEY  # the right secret works again


def test_generated_secret_file_is_private_and_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'app.db'}"
    (tmp_path / "data").mkdir()
    with Orchestrator.from_settings(settings(url)) as orch:
        orch.keys.add("openai", "work", STORED_KEY)
    key_file = tmp_path / "data" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with Orchestrator.from_settings(settings(url)) as orch:  # the next start reads the same file
        assert orch.keys.secret_for("openai") == STORED_KEY
    key_file.chmod(0o600)
    key_file.write_bytes(Fernet.generate_key())  # a valid key, but not the one the keys were saved with
    with pytest.raises(SecretKeyError, match="(?i)stored keys cannot be decrypted with this secret"):
        Orchestrator.from_settings(settings(url))
