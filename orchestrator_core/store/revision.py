"""The newest schema revision this code ships, read from the migration files without Alembic or SQLAlchemy.

Importing Alembic costs more than the rest of a CLI start, and a database at the newest revision needs
none of it: ``head_revision`` reads the revision lines of the version files, and asks Alembic only when
the files do not name exactly one head (a merge migration with a tuple, an unusual layout).
"""

from __future__ import annotations

import re
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.+)$", re.MULTILINE)
_HEAD: str | None = None


def head_revision() -> str | None:
    """The newest migration shipped with this code (read once per process)."""
    global _HEAD
    if _HEAD is None:
        _HEAD = _head_from_files() or _head_from_alembic()
    return _HEAD


def _head_from_files() -> str | None:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            found = re.findall(r"[\"']([^\"']+)[\"']", value)
            (revisions if name == "revision" else parents).update(found)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _head_from_alembic() -> str | None:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - start-up cost: loaded only when needed

    from .db import alembic_config  # noqa: PLC0415 - db imports SQLAlchemy: only for an unusual layout

    head: str | None = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head
