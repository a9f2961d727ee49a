"""``python -m orchestrator_core``: the command line."""

from . import exits
from .cli import main

exits.handle_interrupts()  # a second Ctrl-C exits at once
exits.leave(main)  # the exit never waits on a background thread that is still running
