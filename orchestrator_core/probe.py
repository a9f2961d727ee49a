"""Test a connection: reachability, the model count and the key check, with one request to it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .connections import Connection, ConnectionTest
from .errors import AuthenticationError, MissingKeyError, OrchestratorError
from .providers.base import LocalHost
from .types import KeyCheck

if TYPE_CHECKING:
    from .clients import ProviderFactory


def probe_connection(connection: Connection, factory: ProviderFactory) -> ConnectionTest:
    """List the connection's models with its current key: the cheapest call that answers all three questions."""
    provider = factory.get(connection.name, "status")
    has_key = bool(provider.api_key)
    started = time.perf_counter()
    try:
        count = len(provider.host_models() if isinstance(provider, LocalHost) else provider.list_models())
    except MissingKeyError as exc:
        return ConnectionTest(connection.name, False, None, None, exc.message, _ms(started))
    except AuthenticationError as exc:
        return ConnectionTest(connection.name, True, None, KeyCheck.REJECTED, exc.message, _ms(started))
    except OrchestratorError as exc:
        detail = exc.message
        if isinstance(provider, LocalHost):
            detail += f" To use it, {type(provider).start_hint}."
        return ConnectionTest(connection.name, False, None, KeyCheck.UNVERIFIED if has_key else None, detail,
                              _ms(started))
    key = KeyCheck.OK if has_key else None
    word = "accepted" if has_key else ("not needed" if not connection.provider_class.needs_key else "missing")
    detail = f"{connection.shown_url} answered: {count} models; key {word}."
    if not connection.enabled:
        detail += " The connection is disabled: enable it to use these models."
    return ConnectionTest(connection.name, True, count, key, detail, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
