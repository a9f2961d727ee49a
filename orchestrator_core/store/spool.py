"""The metrics spool: rows that could not be written at exit wait in a file until the next start.

When the database stays locked (or the disk is full) while a process exits, ``MetricsRecorder``
writes its unwritten rows to one new file per exit, beside the SQLite database
(``orchestrator.db.metrics-spool.<pid>.<ns>.jsonl``) or, for a server database, in the data folder
that holds ``secret.key`` (``metrics-spool-<hash of the URL>.<pid>.<ns>.jsonl``). The next recorder
on that database claims every such file by renaming it (only one process can win the rename), queues
its rows, and deletes the file once they are written: a row is never written twice. A line that does
not parse is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the status command checks for spool files without SQLAlchemy (readonly.py)
    from .db import Database

log = logging.getLogger("orchestrator_core.metrics")

_CLAIMED = ".replaying-"


@dataclass(frozen=True)
class Spool:
    """Where one database's spool files live: folder / prefix*.jsonl."""

    folder: Path
    prefix: str

    @classmethod
    def for_database(cls, db: Database) -> Spool | None:
        """The spool of a database; None for in-memory SQLite (nothing survives the process anyway)."""
        if db.dir is not None:
            return cls.for_sqlite_file(db.dir / Path(db.url.database or "db").name)
        if db.dialect == "sqlite":
            return None
        from .secret import default_key_dir  # noqa: PLC0415 - keys imports spool's users: a cycle at import time

        where = db.url.render_as_string(hide_password=True)
        return cls(default_key_dir(), f"metrics-spool-{hashlib.sha256(where.encode()).hexdigest()[:12]}")

    @classmethod
    def for_sqlite_file(cls, path: Path) -> Spool:
        """The spool of a SQLite file: beside it."""
        return cls(path.parent, f"{path.name}.metrics-spool")

    def write(self, rows: Iterable[dict[str, Any]]) -> Path:
        """Save rows (MetricRow values) to a new spool file; returns its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}.{os.getpid()}.{time.time_ns()}.jsonl"
        text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n" for row in rows)
        temporary = path.with_name(path.name + ".partial")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # whole files only: a reader never sees half a spool
        return path

    def pending(self) -> bool:
        """Whether any spool file waits (a cheap check at start-up)."""
        try:
            return any(self.folder.glob(f"{self.prefix}.*.jsonl*"))
        except OSError:
            return False

    def claim(self) -> list[Path]:
        """Take every spool file of this database for this process (renamed, so no other process replays it)."""
        claimed = []
        for path in sorted(self.folder.glob(f"{self.prefix}.*.jsonl*")):
            if path.name.endswith(".partial") or not _claimable(path):
                continue
            target = path.with_name(path.name.split(_CLAIMED)[0] + f"{_CLAIMED}{os.getpid()}")
            try:
                os.replace(path, target)
            except OSError:
                continue  # another process claimed it first
            claimed.append(target)
        return claimed


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a claimed spool file; a line that does not parse is skipped with a warning."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        log.warning("Metrics: cannot read the spool file %s (%s); its rows stay in it.", path, exc.strerror)
        return []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.warning("Metrics: skipped line %d of the spool file %s: it is not a metric row (%s).",
                        number, path, exc)
            continue
        rows.append(row)
    return rows


def _claimable(path: Path) -> bool:
    """Unclaimed, or claimed by a process that no longer runs (it died while replaying)."""
    if _CLAIMED not in path.name:
        return True
    owner = path.name.rsplit(_CLAIMED, 1)[1]
    if not owner.isdigit() or int(owner) == os.getpid():
        return False
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
