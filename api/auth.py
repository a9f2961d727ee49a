"""Who may call the API: a gateway token (``Authorization: Bearer ...``) on every route but /api/health.

Scope ``chat`` may call /v1 and read /api; ``admin`` may also load, unload and reset, and read /metrics.
Failed token checks are counted per client address; past the limit that address gets 429 with
retry-after until the window has passed, whatever token it sends (guessing stops paying off).
The count lives in this process: with N workers an address gets N times the tries (see README "API").
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from orchestrator_core.errors import GatewayAccessError, TokenScopeError, TooManyTokenFailuresError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store.tokens import Scope, TokenInfo

HOW_TO_GET_ONE = ("create one on the console's API keys page (Gateway tokens) or with "
                  "'python -m orchestrator_core tokens create NAME', and send it as 'Authorization: Bearer <token>'")
bearer = HTTPBearer(auto_error=False, description="A gateway token: python -m orchestrator_core tokens create NAME")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class FailureLimiter:
    """Failed checks per client address in a sliding window; over the limit the address must wait."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def locked_for(self, address: str) -> float:
        """Seconds this address must wait before its next check; 0 when it may try."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return 0.0
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if not times:
                del self._failures[address]
                return 0.0
            return times[0] + self.window_s - now if len(times) >= self.limit else 0.0

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._failures.setdefault(address, deque())
            self._failures.move_to_end(address)
            times.append(self._clock())
            while len(times) > self.limit:
                times.popleft()
            while len(self._failures) > self.max_addresses:  # a flood of addresses cannot grow memory
                self._failures.popitem(last=False)


def require(scope: Scope) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency that lets a request through with a valid token of this scope (or admin)."""

    async def check(request: Request, credentials: Credentials) -> TokenInfo:
        token = credentials.credentials if credentials is not None else ""
        return await authorize(request.app.state.backend, _address(request), token, scope)

    return check


async def authorize(backend: Any, address: str, token: str, scope: Scope) -> TokenInfo:
    """The token's info when it may call a route of this scope; else the error saying why (401, 403, 429)."""
    _not_locked(backend.token_failures, address)
    orch: Orchestrator | None = backend.orchestrator_if_built()
    info = orch.tokens.cached(token) if orch is not None and token else None
    if info is None:  # not checked lately: the database read runs on a worker thread
        info = await anyio.to_thread.run_sync(_check_token, backend, address, token)
    return _in_scope(info, scope)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, "" for none; exactly what HTTPBearer reads."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return ""
    return credentials


def _not_locked(limiter: FailureLimiter, address: str) -> None:
    wait = limiter.locked_for(address)
    if wait > 0:
        raise TooManyTokenFailuresError(
            f"Too many wrong gateway tokens from {address}; try again in {wait:.0f} s.", retry_after=wait)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_token(backend: Any, address: str, token: str) -> TokenInfo:
    limiter: FailureLimiter = backend.token_failures
    if not token:
        raise GatewayAccessError(f"This API needs a gateway token: {HOW_TO_GET_ONE}.")
    info: TokenInfo | None = backend.orchestrator().tokens.verify(token)
    if info is None:
        limiter.failed(address)
        raise GatewayAccessError(f"The gateway token is wrong or revoked: {HOW_TO_GET_ONE}.")
    return info


def _in_scope(info: TokenInfo, scope: Scope) -> TokenInfo:
    if scope == "admin" and info.scope != "admin":
        raise TokenScopeError(f"The token {info.name!r} has scope {info.scope!r}; this route needs an 'admin' "
                              "token (python -m orchestrator_core tokens create NAME --scope admin).")
    return info


chat_token = require("chat")
admin_token = require("admin")
ChatToken = Annotated[TokenInfo, Depends(chat_token)]
AdminToken = Annotated[TokenInfo, Depends(admin_token)]
