"""Persistence: one migrated database holding models, encrypted API keys, call metrics and failures.

    db = Database.open(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s)
    keys = KeyStore(db, load_fernet(settings.secret_key, db.dir), env_keys=settings.env_keys)
    recorder = MetricsRecorder(db); recorder.record(MetricRow(...)); recorder.flush()
    metrics.model_stats(db, since=time.time() - 3600)

Every name is imported on first use: importing a module of this package (``store.readonly``, which
the ``status`` command uses without SQLAlchemy) must not pay for the others, and a command such as
``status`` never records nor charts, so it never loads the metrics module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import metrics
    from .db import Database
    from .failures import FailureCache, FailureEntry
    from .keys import KeyInfo, KeyStore
    from .logins import Attempt, SignInLimiter
    from .metrics import MetricRow, MetricsRecorder, ModelStats
    from .registry import ModelEntry, ModelRegistry
    from .secret import load_fernet
    from .tokens import NewToken, TokenInfo, TokenStore

# Exported name -> the module of this package that defines it ("metrics" is the module itself).
_HOMES = {
    "Database": "db",
    "FailureCache": "failures", "FailureEntry": "failures",
    "KeyInfo": "keys", "KeyStore": "keys", "load_fernet": "secret",
    "Attempt": "logins", "SignInLimiter": "logins",
    "MetricRow": "metrics", "MetricsRecorder": "metrics", "ModelStats": "metrics", "metrics": "metrics",
    "ModelEntry": "registry", "ModelRegistry": "registry",
    "NewToken": "tokens", "TokenInfo": "tokens", "TokenStore": "tokens",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # import_module, not "from . import x": that would ask this __getattr__ again.
    module = importlib.import_module(f"{__name__}.{home}")
    return module if name == home else getattr(module, name)


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
