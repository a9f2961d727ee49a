"""Persistence: one migrated database holding models, encrypted API keys, call metrics and failures.

    db = Database.open(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s)
    keys = KeyStore(db, load_fernet(settings.secret_key, db.dir), env_keys=settings.env_keys)
    recorder = MetricsRecorder(db); recorder.record(MetricRow(...)); recorder.flush()
    metrics.model_stats(db, since=time.time() - 3600)

The metrics module (the recorder, the rollups and the chart queries) is imported on first use: a
command such as ``status`` never records nor charts, and its start-up should not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .db import Database
from .failures import FailureCache, FailureEntry
from .keys import KeyInfo, KeyStore, load_fernet
from .logins import Attempt, SignInLimiter
from .registry import ModelEntry, ModelRegistry
from .tokens import NewToken, TokenInfo, TokenStore

if TYPE_CHECKING:
    from . import metrics
    from .metrics import MetricRow, MetricsRecorder, ModelStats

_FROM_METRICS = ("MetricRow", "MetricsRecorder", "ModelStats")


def __getattr__(name: str) -> Any:
    if name == "metrics" or name in _FROM_METRICS:
        # import_module, not "from . import metrics": that would ask this __getattr__ again.
        module = importlib.import_module(f"{__name__}.metrics")
        return module if name == "metrics" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attempt",
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
    "NewToken",
    "SignInLimiter",
    "TokenInfo",
    "TokenStore",
    "load_fernet",
    "metrics",
]
