"""The checks behind `/readyz`: the broker answers, the database answers, partitions held.

A dependency is asked on a `Probe`'s own thread, every few seconds, never on the HTTP request:
a kafka-python metadata call waits without a bound while the broker is down, and a probe must
answer in milliseconds. The check then says whether the last answer is recent: a call that
failed, or that has hung for longer than `stale_s`, is "not ready". Reasons are ours (the
error's class), never a library's message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from safehub.connection import KafkaConnection

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 2.0
DEFAULT_STALE_S = 6.0
# kafka-python's defaults (a request waits 30 s, reconnects back off to 30 s) let a probe that
# asked while the broker was down answer long after the broker is back.
PROBE_REQUEST_TIMEOUT_MS = 5_000
PROBE_BACKOFF_MAX_MS = 1_000


class Probe:
    """Calls `ask` every `every_s` on a daemon thread; `check()` says whether it answers."""

    def __init__(self, name: str, ask: Callable[[], object], every_s: float = DEFAULT_EVERY_S,
                 stale_s: float = DEFAULT_STALE_S,
                 clock: Callable[[], float] = time.monotonic,
                 close: Callable[[], object] | None = None) -> None:
        self.name = name
        self._ask = ask
        self._close = close
        self.every_s = every_s
        self.stale_s = stale_s
        self._clock = clock
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def once(self) -> None:
        try:
            self._ask()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said by class
            self._last_error = type(exc).__name__
            self._last_ok = None
            return
        self._last_error = None
        self._last_ok = self._clock()

    def start(self) -> Probe:
        def loop() -> None:
            while not self._stop.is_set():
                self.once()
                self._stop.wait(self.every_s)
            # Closed here, on the thread that uses it: the clients are not thread-safe.
            if self._close is not None:
                try:
                    self._close()
                except Exception:  # noqa: BLE001 - closing a probe's client is best effort
                    log.debug("%s probe's client did not close cleanly", self.name)

        self._thread = threading.Thread(target=loop, daemon=True, name=f"probe-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> str | None:
        if self._last_error is not None:
            return f"{self.name} unreachable ({self._last_error})"
        now = self._clock()
        if self._last_ok is None:
            if now - self._started <= self.stale_s:
                return f"{self.name} not yet answered"
            return f"{self.name} has not answered for {now - self._started:.0f} s"
        if now - self._last_ok > self.stale_s:
            return f"{self.name} has not answered for {now - self._last_ok:.0f} s"
        return None


def broker_probe(kafka: KafkaConnection, every_s: float = DEFAULT_EVERY_S,
                 stale_s: float = DEFAULT_STALE_S) -> Probe:
    """A metadata request (the topics this principal may see) on a client of its own, made on
    the probe's thread: the service's own clients are not thread-safe."""
    holder: dict[str, Any] = {}

    def ask() -> None:
        from safehub.bus import make_consumer  # kafka-python only where a broker is probed

        if "client" not in holder:
            holder["client"] = make_consumer(kafka, None, client_id="safehub-health",
                                             request_timeout_ms=PROBE_REQUEST_TIMEOUT_MS,
                                             reconnect_backoff_max_ms=PROBE_BACKOFF_MAX_MS)
        holder["client"].topics()

    def close() -> None:
        if "client" in holder:
            holder.pop("client").close()

    return Probe("broker", ask, every_s, stale_s, close=close).start()


def database_probe(engine: Any, every_s: float = DEFAULT_EVERY_S,
                   stale_s: float = DEFAULT_STALE_S) -> Probe:
    """`SELECT 1` on a pooled connection of the service's own SQLAlchemy engine."""
    from sqlalchemy import text

    def ask() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return Probe("database", ask, every_s, stale_s).start()


class Assignments:
    """How many partitions each consumer of the process holds, as its loop last saw them."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def expect(self, part: str) -> None:
        with self._lock:
            self._held.setdefault(part, 0)

    def saw(self, part: str, count: int) -> None:
        with self._lock:
            self._held[part] = count

    def check(self) -> str | None:
        with self._lock:
            empty = sorted(part for part, n in self._held.items() if n == 0)
        if empty:
            return f"no partitions assigned to {', '.join(empty)}"
        return None
