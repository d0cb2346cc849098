"""The worker's correlation work, done in a child process on the machine's other core.

A faust worker runs on one thread: profiled at ~3,900 events/s, its main thread was busy
all the time and one core of two sat idle. faust's own per-message work (fetching, draining,
buffering, acking) cannot leave that thread, but decoding, validating, `step`, encoding alerts,
audit entries and block states can. So the worker sends each batch's raw messages to one child
process and, while the child works, buffers the next batch and sends the previous one's
results. The child is pure computation: it holds no Kafka client and sends nothing.

Block states. The child keeps blocks' decoded states between batches (decoding them per
batch would cost more than the step), within the worker's memory budget (residency.py: the
worker tells it which to drop). The worker's table stays the durable truth: for each
block of a batch, the worker ships the table's bytes to the child unless the table still holds
the very bytes object the child's state was last based on (`basis`): its own last write, or
what was last shipped. Bytes the table got any other way (recovery from the changelog after a
rebalance) are a different object, so they are shipped and the child starts again from them.

A poisoned state. Bytes the table holds that `snapshot.decode` cannot read (a corrupted or
foreign changelog record) used to fail the child, and so the worker, on every restart, since
recovery put the same bytes back in the table each time. The child now quarantines them: it
starts the block afresh, says which block in the reply (`quarantined`, with the decoding
error, never the bytes), journals a BLOCK_STATE_RESET entry ahead of the batch's own entries
(so that replay empties the block at the same point and re-derives the same alerts), and
returns the block's new state even when the batch changed nothing in it, so the batch's
transaction writes a readable state over the poisoned record and the next recovery finds that.
The worker reports it (app.py).

Messages, both ways, are pickled tuples of bytes, ints and small frozen dataclasses over a
private pipe between the worker and its own child; nothing read from Kafka is unpickled.
The child exits when the pipe closes, so it never outlives its worker, even one killed by
SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from safehub.consumers.deadletter import error_text
from safehub.errors import SafehubError, StoreError
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import BlockState, initial_state
from safehub.services.correlation.rules import Rules
from safehub.services.correlator.processing import (
    BatchProcessor,
    Incoming,
    Rejected,
    reset_entry,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the child made of one batch, ready to send."""

    states: dict[int, bytes]  # block -> encoded state, for the table and its changelog
    rejected: list[Rejected]
    alerts: list[tuple[bytes, bytes]]
    audit: list[bytes]
    accepted: int
    process_s: float  # the child's time on the batch
    quarantined: dict[int, str]  # block -> why its shipped state could not be read
    tiers: dict[str, int]  # alerts by tier


class ChildFailed(SafehubError):
    """The correlation child process died or reported an error."""


def serve(conn: Connection, rules: Rules, prefix: str, partitions: int | None = None) -> None:
    """The child: one request in, one reply out, in order, until the pipe closes."""
    processor = BatchProcessor(rules, prefix, partitions)
    states: dict[int, BlockState] = {}
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, ConnectionResetError):
            return  # the worker closed the pipe, or was killed: nothing is left to do
        try:
            now, shipped, batch, drop = pickle.loads(request)
            t0 = time.perf_counter()
            for block in drop:  # let go to keep within the worker's memory budget (residency.py)
                states.pop(block, None)
            quarantined: dict[int, str] = {}
            for block, raw in shipped.items():
                try:
                    if raw is None:
                        states.pop(block, None)  # empty: nothing to hold (`initial_state` below)
                    else:
                        states[block] = snapshot.decode(raw)
                except (StoreError, RecursionError, MemoryError) as exc:
                    # StoreError for unreadable bytes; the other two from json nesting or sizes
                    # written to exhaust the reader.
                    quarantined[block] = error_text(exc)
                    states[block] = initial_state()
            result = processor.process(batch, lambda b: states.get(b) or initial_state(), now)
            # First in the batch's journal: every event of the batch came after the reset.
            resets = [reset_entry(block, shipped[block] or b"", now) for block in quarantined]
            states.update(result.states)
            encoded = {block: snapshot.encode(state) for block, state in result.states.items()}
            for block in quarantined:
                if block not in encoded:
                    encoded[block] = snapshot.encode(states[block])
            reply = Reply(encoded, result.rejected, result.alerts, resets + result.audit,
                          result.accepted, time.perf_counter() - t0, quarantined, result.tiers)
        except Exception:  # a bug, not bad input (that is rejected above): the worker stops
            conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
            raise
        conn.send_bytes(pickle.dumps(("ok", reply), protocol=pickle.HIGHEST_PROTOCOL))


class Child:
    """The worker's side of the child process: `submit` a batch, await its reply.

    Replies come back in submission order. Requests are written by one thread and replies read
    by another, so a large batch never blocks the worker's event loop on a full pipe.
    """

    def __init__(self, rules: Rules, prefix: str, partitions: int | None = None) -> None:
        context = multiprocessing.get_context("spawn")  # the worker has threads: never fork
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=serve, args=(child_conn, rules, prefix, partitions), name="safehub-correlation",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="safehub-correlation-send")
        self._waiting: list[asyncio.Future[Reply]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="safehub-correlation-read",
                                        daemon=True)

    def submit(self, now: int, shipped: dict[int, bytes | None], batch: Sequence[Incoming],
               drop: Sequence[int] = ()) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._reader.start()
        future: asyncio.Future[Reply] = loop.create_future()
        with self._lock:
            self._waiting.append(future)
        data = pickle.dumps((now, shipped, list(batch), list(drop)),
                            protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.submit(self._send, data)
        return future

    def _send(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError as exc:
            code = self._process.exitcode  # usually known by now: a dead child broke the pipe
            self._fail(f"correlation child exited (code {code})" if code is not None
                       else f"correlation child not reachable: {exc}")

    def _read(self) -> None:
        while True:
            try:
                kind, payload = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                self._fail(f"correlation child exited (code {self._process.exitcode})")
                return
            if kind != "ok":
                self._fail(f"correlation child failed:\n{payload}")
                return
            with self._lock:
                future = self._waiting.pop(0)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, future, payload)

    def _fail(self, reason: str) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if self._loop is None:
            return
        for future in waiting:
            if self._closing:  # shutting down: the batches are simply not acked
                self._loop.call_soon_threadsafe(future.cancel)
            else:
                self._loop.call_soon_threadsafe(_reject, future, ChildFailed(reason))

    def close(self) -> None:
        self._closing = True
        self._conn.close()  # the child sees end of input and exits
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self._writer.shutdown(wait=False)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
