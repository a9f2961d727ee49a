"""A throwaway PostgreSQL cluster for the test session: initdb, postgres on a free 127.0.0.1 port, stop, remove.

initdb refuses to run as root, so a root test run starts the cluster as an unprivileged system user
(``postgres`` when it exists, else ``orchestrator-tests``, created with useradd). Durability is off
(fsync, synchronous_commit, full_page_writes): the cluster lives for one session.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FALLBACK_USER = "orchestrator-tests"
_names = itertools.count()


class PostgresUnavailableError(Exception):
    """No PostgreSQL could be started; the message says why and what installs it."""


@dataclass
class PostgresServer:
    """A running cluster: a base URL without a database name, and a way to make fresh databases."""

    port: int
    root: Path
    user: str | None
    _pg_ctl: str
    _created: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new, empty (or copied from ``template``) database; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_names)}"
        clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}{clause}")  # type: ignore[arg-type]  # names are ours
        return self.url(name)

    def stop(self) -> None:
        _run_as(self.user, [self._pg_ctl, "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w"],
                check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> PostgresServer:
    """Start a cluster or raise PostgresUnavailableError saying why."""
    binaries = {name: _find(name) for name in ("initdb", "pg_ctl", "postgres")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        raise PostgresUnavailableError(f"{', '.join(missing)} not found on PATH (install the server: "
                                  "apt-get install postgresql)")
    user = _unprivileged_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
    try:
        if user:
            os.chown(root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        init = _run_as(user, [str(binaries["initdb"]), "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8", "--locale=C"])
        if init.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {_tail(init.stderr)}")
        return _start_on_a_free_port(str(binaries["pg_ctl"]), root, user)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start_on_a_free_port(pg_ctl: str, root: Path, user: str | None) -> PostgresServer:
    error = ""
    for _ in range(3):  # another process may take the free port between our probe and postgres's bind
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        done = _run_as(user, [pg_ctl, "start", "-D", str(root / "data"), "-w", "-t", "30", "-l",
                              str(root / "server.log"), "-o", options])
        if done.returncode == 0:
            return PostgresServer(port, root, user, pg_ctl)
        log = root / "server.log"
        error = _tail(log.read_text(errors="replace") if log.exists() else done.stderr)
    raise PostgresUnavailableError(f"postgres did not start: {error}")


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server binaries out of PATH, in /usr/lib/postgresql/<major>/bin.
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    return None


def _unprivileged_user() -> str:
    for name in ("postgres", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise PostgresUnavailableError(f"the run is root, initdb refuses root, and useradd {FALLBACK_USER} failed: "
                                  f"{_tail(made.stderr)}")
    return FALLBACK_USER


def _run_as(user: str | None, argv: list[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C", "LC_ALL": "C"}
    return subprocess.run(argv, user=user, capture_output=True, text=True, env=env, check=check, timeout=120,
                          cwd="/")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

