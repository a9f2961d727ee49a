"""Process exit on SIGTERM and SIGHUP: end the way Ctrl-C does, so every queued metric row is kept.

``install()`` runs once per process, from the main thread, when an Orchestrator opens. For a signal
whose action is the default (terminate), the handler raises ``SignalExit`` in the main thread, as
Ctrl-C raises KeyboardInterrupt: finally blocks run (a streamed chat records its cancelled attempt),
the CLI closes its Orchestrator, atexit closes every MetricsRecorder (rows written, or spooled when
the database stays busy), and then the process ends by the same signal, so a parent or systemd sees
"killed by SIGTERM" exactly as before. A handler someone installed earlier (a server's graceful
shutdown) is chained: queued rows are flushed, then that handler runs. An ignored signal (``nohup``)
stays ignored.

Every exit-time wait is bounded, and the exit as a whole too: once an exit has begun (Ctrl-C in the
CLI, SIGTERM, SIGHUP), a watchdog ends the process EXIT_DEADLINE_S later, saying what had not
finished and spooling the metric rows not yet written. The CLI (``__main__``) also takes Ctrl-C
itself: a second one ends the process at once (rows spooled), and ``leave()`` does not let the
interpreter join a background thread that is still running (concurrent.futures joins its workers at
exit without a timeout): it says which, and exits without them. An interrupted CLI skips the
interpreter's teardown too, once the atexit handlers ran.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# The longest an exit may take once it has begun; the bounded waits inside it (metrics: EXIT_WAIT_S and
# the busy wait, the failure cache: CLOSE_WAIT_S) normally end well before.
EXIT_DEADLINE_S = 20.0
# After the deadline: if even the watchdog thread cannot run (the interpreter is finalizing), faulthandler
# prints every thread's stack and ends the process this much later.
FINAL_GRACE_S = 10.0
POOL_WAIT_S = 2.0  # Orchestrator.close() waits this long for the background tasks still running

_installed = False
_received: int | None = None
_exiting: float | None = None  # monotonic time the exit began
_exit_code = 0
_interrupts = 0


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
        begin_exit(128 + signum)
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


# -- a bounded exit -------------------------------------------------------------------------------------------
def begin_exit(code: int) -> None:
    """The process is ending: arm the watchdog that ends it EXIT_DEADLINE_S from now whatever still runs."""
    global _exiting, _exit_code
    if _exiting is not None:
        return
    _exiting, _exit_code = time.monotonic(), code
    deadline = EXIT_DEADLINE_S
    threading.Thread(target=_watch, args=(deadline,), name="orchestrator-exit-watchdog", daemon=True).start()
    # Python threads stop running once the interpreter finalizes; faulthandler's is a C thread. Without a
    # standard error to write to (pythonw) the watchdog thread is all there is.
    with contextlib.suppress(AttributeError, ValueError, OSError):
        faulthandler.dump_traceback_later(deadline + FINAL_GRACE_S, exit=True, file=sys.__stderr__ or sys.stderr)


def _watch(deadline: float) -> None:
    time.sleep(deadline)
    running = _unfinished()
    _say(f"the exit did not finish within {deadline:.0f} s (still running: {', '.join(running) or 'the exit itself'}); "
         "ending now.")
    _end(_abandon())


def handle_interrupts() -> None:
    """For the CLI: the first Ctrl-C unwinds (KeyboardInterrupt), a second one ends the process at once."""
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupts
    _interrupts += 1
    if _interrupts == 1:
        begin_exit(130)
        _say("Interrupted: cleaning up (press Ctrl-C again to exit at once).", prefix="")
        raise KeyboardInterrupt
    _say("Interrupted again: exiting now.", prefix="")
    _end(_abandon(), 130)


def leave(main: Callable[[], int]) -> NoReturn:
    """Run the CLI's main and end the process; background threads still running are left, not joined."""
    try:
        code = main()
    except SystemExit as stop:  # SignalExit: the signal's exit status, then _resignal at exit
        code = stop.code if isinstance(stop.code, int) else 1
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # what can be kept is kept by now: Ctrl-C ends it at once
    running = _unfinished()
    if not running and _exiting is None:
        sys.exit(code)
    # Interrupted, or threads the interpreter would join: skip its teardown. Its final collection of the heap
    # took seconds of CPU on a loaded machine, and nothing there can be interrupted or watched from Python.
    begin_exit(code)
    if running:
        _say(f"left unfinished at exit: {', '.join(running)}.")
    atexit._run_exitfuncs()  # the recorders' close() and _resignal; only the join of those threads is skipped
    _end(0, code)


def shutdown_pool(pool: ThreadPoolExecutor, timeout: float = POOL_WAIT_S) -> list[str]:
    """Cancel a pool's queued tasks and wait at most timeout for the running ones; the names of those left."""
    pool.shutdown(wait=False, cancel_futures=True)
    until = time.monotonic() + timeout
    for thread in list(pool._threads):
        thread.join(max(0.0, until - time.monotonic()))
    return [t.name for t in pool._threads if t.is_alive()]


def _unfinished() -> list[str]:
    """Non-daemon threads other than this one: the interpreter would wait for each of them at exit."""
    me = threading.current_thread()
    return sorted(t.name for t in threading.enumerate()
                  if t.is_alive() and not t.daemon and t is not me and t is not threading.main_thread())


def _abandon() -> int:
    """Spool what the metric recorders hold; how many rows were saved."""
    metrics = sys.modules.get(f"{__package__}.store.metrics")
    if metrics is None:
        return 0
    saved: int = metrics.abandon_all()
    return saved


def _end(saved: int, code: int | None = None) -> NoReturn:
    """End the process now, by the signal that began the exit if one did (as its default action would)."""
    if saved:
        _say(f"{saved} metric row(s) were saved to the spool and are written on the next start.")
    for stream in _streams():
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if _received is not None and threading.current_thread() is threading.main_thread():
        signal.signal(_received, signal.SIG_DFL)  # only the main thread may; the watchdog exits 128 + signum
        os.kill(os.getpid(), _received)
    os._exit(_exit_code if code is None else code)


def _streams() -> Iterable[Any]:
    return (s for s in (sys.stdout, sys.stderr) if s is not None)


def _say(text: str, prefix: str = "orchestrator_core: ") -> None:
    # Closed, or (RuntimeError) the signal arrived inside another write to standard error.
    with contextlib.suppress(OSError, ValueError, RuntimeError, AttributeError):
        sys.stderr.write(prefix + text + "\n")
        sys.stderr.flush()
