"""How a long-running service is asked to stop: SIGINT or SIGTERM sets one `threading.Event`,
which the service's loops watch, so that it finishes the batch in hand, commits and closes its
clients instead of dying mid-write.

uvicorn (the web page, the officers' page) handles these signals itself while it serves, then
restores the handlers installed here and raises the signal again: ours turn that into a clean
exit 0 instead of death by SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """Make SIGINT and SIGTERM set `stop` (a new Event if none is given); return it."""
    event = stop if stop is not None else threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        event.set()

    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, on_signal)
    return event
