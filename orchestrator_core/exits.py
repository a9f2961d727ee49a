"""Process exit on SIGTERM and SIGHUP: end the way Ctrl-C does, so every queued metric row is kept.

``install()`` runs once per process, from the main thread, when an Orchestrator opens. For a signal
whose action is the default (terminate), the handler raises ``SignalExit`` in the main thread, as
Ctrl-C raises KeyboardInterrupt: finally blocks run (a streamed chat records its cancelled attempt),
the CLI closes its Orchestrator, atexit closes every MetricsRecorder (rows written, or spooled when
the database stays busy), and then the process ends by the same signal, so a parent or systemd sees
"killed by SIGTERM" exactly as before. A handler someone installed earlier (a server's graceful
shutdown) is chained: queued rows are flushed, then that handler runs. An ignored signal (``nohup``)
stays ignored.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from types import FrameType
from typing import Any

_installed = False
_received: int | None = None


class SignalExit(SystemExit):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt, exit status 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def signals() -> tuple[signal.Signals, ...]:
    """The signals handled here (SIGHUP does not exist on Windows)."""
    names = ("SIGTERM", "SIGHUP")
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


def install() -> None:
    """Handle SIGTERM and SIGHUP once per process; a no-op outside the main thread."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    atexit.register(_resignal)  # registered before any recorder of this Orchestrator, so it runs after them
    for signum in signals():
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue
        signal.signal(signum, _handler(previous))


def _handler(previous: Any) -> Any:
    def handle(signum: int, frame: FrameType | None) -> None:
        global _received
        if callable(previous):
            _flush_recorders()
            previous(signum, frame)
            return
        if _received is not None:
            return  # already unwinding for the first signal: a second one must not cut the cleanup short
        _received = signum
        raise SignalExit(signum)

    return handle


def _flush_recorders() -> None:
    from .store.metrics import flush_all  # noqa: PLC0415 - the metrics module loads only if it was used

    flush_all(timeout=2.0)


def _resignal() -> None:
    """After the recorders closed: end by the signal that arrived, as its default action would."""
    if _received is None:
        return
    from .store.metrics import close_all  # noqa: PLC0415 - the metrics module loads only if it was used

    close_all()
    signal.signal(_received, signal.SIG_DFL)
    os.kill(os.getpid(), _received)
