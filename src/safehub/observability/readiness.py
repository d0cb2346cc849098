"""The checks behind `/readyz`: the broker answers, the database answers, partitions held.

A dependency is asked on a `Probe`'s own thread, every few seconds, never on the HTTP request:
a kafka-python metadata call waits without a bound while the broker is down, and a probe must
answer in milliseconds. The check then says whether the last answer is recent: a call that
failed, or that has hung for longer than `stale_s`, is "not ready". Reasons are ours (the
error's class), never a library's message.

A call is never trusted to return. kafka-python 3.0.12's `topics()` waits on a metadata future
without a bound, and once (a clean-clone CI run) it had not returned 30 s after the broker was
back, so `/readyz` said "not ready" with the broker answering everyone else. Each call runs on
an asker thread with a client of its own; one that has not returned within `hung_s` is left
to finish (or not) by itself, and the next call goes to a new asker, with a new client.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from safehub.connection import KafkaConnection

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 2.0
DEFAULT_STALE_S = 6.0
# Past the probe's own request timeout and a reconnect: a call this old is stuck, not slow.
DEFAULT_HUNG_S = 15.0
# Askers left in hung calls, each with its client; past this many the probe waits on the last
# one instead of opening yet another client every `hung_s` for as long as the hang lasts.
MAX_ABANDONED = 3
# kafka-python's defaults (a request waits 30 s, reconnects back off to 30 s) let a probe that
# asked while the broker was down answer long after the broker is back.
PROBE_REQUEST_TIMEOUT_MS = 5_000
PROBE_BACKOFF_MAX_MS = 1_000


class _Asker:
    """A thread that runs `ask` each time it is told to; `close` (on this thread, since the
    clients are not thread-safe) when it is stopped, after the call it is in returns."""

    def __init__(self, name: str, ask: Callable[[], object],
                 close: Callable[[], object] | None) -> None:
        self._name = name
        self._ask = ask
        self._close = close
        self._todo: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while self._todo.get():
            try:
                self._ask()
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said by class
                self._done.put(type(exc).__name__)
            else:
                self._done.put(None)
        if self._close is not None:
            try:
                self._close()
            except Exception:  # noqa: BLE001 - closing a probe's client is best effort
                log.debug("%s's client did not close cleanly", self._name)

    def request(self) -> None:
        self._todo.put(True)

    def wait(self, within_s: float) -> tuple[bool, str | None]:
        """(whether the call returned within `within_s`, its error's class or None)."""
        try:
            return True, self._done.get(timeout=within_s)
        except queue.Empty:
            return False, None

    def stop(self) -> None:
        self._todo.put(False)

    def alive(self) -> bool:
        return self._thread.is_alive()


class Probe:
    """Calls `ask` every `every_s` on a daemon thread; `check()` says whether it answers."""

    def __init__(self, name: str, ask: Callable[[], object], every_s: float = DEFAULT_EVERY_S,
                 stale_s: float = DEFAULT_STALE_S,
                 clock: Callable[[], float] = time.monotonic,
                 close: Callable[[], object] | None = None,
                 hung_s: float = DEFAULT_HUNG_S) -> None:
        self.name = name
        self._ask = ask
        self._close = close
        self.every_s = every_s
        self.stale_s = stale_s
        self.hung_s = hung_s
        self._clock = clock
        self._last_ok: float | None = None
        self._last_error: str | None = None
        self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.abandoned = 0  # calls given up on: each left a thread and a client behind

    def once(self) -> None:
        """One call on the caller's thread (tests; the running probe asks on its asker)."""
        try:
            self._ask()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said by class
            self._record(type(exc).__name__)
            return
        self._record(None)

    def _record(self, error: str | None) -> None:
        self._last_error = error
        self._last_ok = None if error is not None else self._clock()

    def start(self) -> Probe:
        def loop() -> None:
            asker: _Asker | None = None
            stuck: list[_Asker] = []
            waiting = False
            while not self._stop.is_set():
                if asker is None:
                    asker = _Asker(f"probe-{self.name}-asker", self._ask, self._close)
                if not waiting:
                    asker.request()
                returned, error = asker.wait(self.hung_s)
                if returned:
                    self._record(error)
                    waiting = False
                    self._stop.wait(self.every_s)
                    continue
                # No answer is recorded: the last one grows stale and check() says so.
                stuck = [a for a in stuck if a.alive()]
                waiting = len(stuck) >= MAX_ABANDONED
                if not waiting:
                    self.abandoned += 1
                    log.warning("the %s probe's call has not returned in %.0f s; asking again "
                                "with a new client", self.name, self.hung_s)
                    asker.stop()
                    stuck.append(asker)
                    asker = None
            if asker is not None:
                asker.stop()

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
    """A metadata request (the topics this principal may see) on a client of the asker's own,
    made on the asker's thread: the service's own clients are not thread-safe."""
    # One client per asker thread: an asker abandoned in a hung call keeps its own.
    mine = threading.local()

    def ask() -> None:
        from safehub.bus import make_consumer  # kafka-python only where a broker is probed

        if getattr(mine, "client", None) is None:
            mine.client = make_consumer(kafka, None, client_id="safehub-health",
                                        request_timeout_ms=PROBE_REQUEST_TIMEOUT_MS,
                                        reconnect_backoff_max_ms=PROBE_BACKOFF_MAX_MS)
        mine.client.topics()

    def close() -> None:
        client, mine.client = getattr(mine, "client", None), None
        if client is not None:
            client.close()

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
