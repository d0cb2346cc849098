"""The processes that blind and finalize for every key service client in this process.

Blinding and finalizing are libsodium calls that release the interpreter's lock, but between
them each element takes a dozen short Python steps that must take the lock back, and in a
publishing agency another thread (Avro encoding, the Kafka client) holds it for up to the
switch interval every time. Measured on this machine: 3,000 elements blinded, evaluated and
finalized in 0.48 s alone and in 2.79 s beside one busy Python thread. In worker processes the
elliptic-curve work runs on every core whatever the publisher's threads do.

One pool per process, shared by every client (a process that publishes for many agencies, one
after another, starts its workers once: a worker takes about half a second to start). Each
task names the service and the agency's secret file, and a worker keeps one HTTPS client per
pair. Workers are spawned, not forked: the publisher has threads (the Kafka client's), which a
fork would copy mid-flight.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from safehub.services.keyservice.client import Evaluation, KeyServiceClient

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a worker needs to open its own client: paths, never the secret itself."""

    base_url: str
    secret_file: Path
    ca_file: Path
    timeout: float
    batch_size: int


_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _shared(size: int) -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_settle, initargs=(os.getpid(),))
        return _pool


def start(size: int) -> None:
    """Start the pool's workers now, in the background, not at the first large call."""
    pool = _shared(size)
    for _ in range(size):
        pool.submit(_ready)


def evaluate(size: int, endpoint: Endpoint, epoch: int,
             jobs: Sequence[tuple[Sequence[bytes], Sequence[bytes] | None]],
             on_broken: Callable[[], Exception]) -> list[list[Evaluation]]:
    """Each job (inputs, blinds or None) evaluated in a worker, in order. A dead worker
    breaks the pool: it is dropped (the next call starts a new one) and `on_broken()` raised."""
    global _pool
    pool = _shared(size)
    try:
        return list(pool.map(_evaluate, [endpoint] * len(jobs), [epoch] * len(jobs),
                             *zip(*jobs, strict=True)))
    except BrokenProcessPool:
        with _lock:
            if _pool is pool:
                _pool = None
        raise on_broken() from None


# -- in the worker ------------------------------------------------------------------------
_clients: dict[Endpoint, KeyServiceClient] = {}


def _settle(parent: int) -> None:
    """Ctrl-C is the parent's to handle (a worker would print a traceback for each press);
    and a worker whose parent was killed has nobody to work for, so it leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _ready() -> bool:
    return True


def _evaluate(endpoint: Endpoint, epoch: int, chunk: Sequence[bytes],
              chosen: Sequence[bytes] | None) -> list[Evaluation]:
    from safehub.services.keyservice.client import KeyServiceClient

    client = _clients.get(endpoint)
    if client is None:
        client = _clients[endpoint] = KeyServiceClient(
            endpoint.base_url, endpoint.secret_file, endpoint.ca_file, endpoint.timeout,
            batch_size=endpoint.batch_size, workers=1)
    return client.evaluate_chunk(epoch, chunk, chosen)
