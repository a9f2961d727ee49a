"""Alembic migrations, applied automatically by ``store.Database.open`` (no alembic.ini needed).

Schema changes are new, append-only files in ``versions/``; never edit one that has been applied.
To write one by hand, copy the shape of ``versions/0001_initial.py`` and set ``down_revision``
to the newest existing revision.
"""
