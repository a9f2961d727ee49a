"""Persistence: one migrated database holding models, encrypted API keys, call metrics and failures.

    db = Database.open(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s)
    keys = KeyStore(db, load_fernet(settings.secret_key, db.dir), env_keys=settings.env_keys)
    recorder = MetricsRecorder(db); recorder.record(MetricRow(...)); recorder.flush()
    metrics.model_stats(db, since=time.time() - 3600)
"""

from __future__ import annotations

from . import metrics
from .db import Database
from .failures import FailureCache, FailureEntry
from .keys import KeyInfo, KeyStore, load_fernet
from .metrics import MetricRow, MetricsRecorder, ModelStats
from .registry import ModelEntry, ModelRegistry

__all__ = [
    "Database",
    "FailureCache",
    "FailureEntry",
    "KeyInfo",
    "KeyStore",
    "MetricRow",
    "MetricsRecorder",
    "ModelEntry",
    "ModelRegistry",
    "ModelStats",
    "load_fernet",
    "metrics",
]
