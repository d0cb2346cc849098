"""How a long-running service is asked to stop: SIGINT or SIGTERM sets one `threading.Event`,
which the service's loops watch, so that it finishes the batch in hand, commits and closes its
clients instead of dying mid-write. And how a parent stops a child it started (`terminate`):
SIGTERM first, SIGKILL only when the child outlives its grace.

uvicorn (the web page, the officers' page) handles these signals itself while it serves, then
restores the handlers installed here and raises the signal again: ours turn that into a clean
exit 0 instead of death by SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
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


def terminate(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> int:
    """SIGTERM `process` and wait `grace_s` for it; SIGKILL it if it is still there. Returns
    its exit code."""
    process.terminate()
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)
