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
pair.

A worker is `python -m safehub.services.keyservice.workers`, speaking length-prefixed pickles
on its stdin and stdout, rather than a multiprocessing pool: multiprocessing starts a child by
importing the parent's main module again (spawn and forkserver alike), so an agency's own
script without an `if __name__ == "__main__"` guard would start workers without end, and a fork
would copy the Kafka client's threads mid-flight. Both ends are this package, so pickle carries
only our own values. A worker ignores Ctrl-C (the parent's to handle) and leaves when its stdin
closes, which happens when the parent exits however it exits.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safehub.services.keyservice.client import Evaluation, KeyServiceClient

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a worker needs to open its own client: paths, never the secret itself."""

    base_url: str
    secret_file: Path
    ca_file: Path
    timeout: float
    batch_size: int


class WorkerDied(Exception):
    """The worker process exited or broke its side of the conversation."""


def _write(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safehub.services.keyservice.workers"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy())

    def ask(self, job: tuple[Endpoint, int, Sequence[bytes], Sequence[bytes] | None]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _write(self.proc.stdin, job)
            ok, value = _read(self.proc.stdout)
        except Exception as exc:  # noqa: BLE001 - a broken pipe, EOF, or half an answer
            self.proc.kill()
            self.proc.wait()
            raise WorkerDied(f"key service worker {self.proc.pid} died "
                             f"({type(exc).__name__})") from None
        if not ok:
            raise value
        return value

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the worker's signal to leave
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """`size` workers, each used by one thread at a time; a dead one is replaced when next
    needed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(size):
            self._idle.put(None)  # started on first use
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="keyservice-worker")
        self._started: list[_Worker] = []

    def _new(self) -> _Worker:
        worker = _Worker()
        self._started.append(worker)
        return worker

    def pids(self) -> list[int]:
        self._started = [w for w in self._started if w.alive()]
        return [w.proc.pid for w in self._started]

    def start(self) -> None:
        for _ in range(self.size):
            self._threads.submit(self._warm)

    def _warm(self) -> None:
        worker = self._idle.get()
        if worker is None or not worker.alive():
            worker = self._new()
        self._idle.put(worker)

    def run(self, job: tuple[Endpoint, int, Sequence[bytes], Sequence[bytes] | None]) -> Any:
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive():
                worker = self._new()
            return worker.ask(job)
        except WorkerDied:
            worker = None
            raise
        finally:
            self._idle.put(worker)

    def map(self, jobs: Sequence[tuple[Endpoint, int, Sequence[bytes], Sequence[bytes] | None]]
            ) -> list[Any]:
        return list(self._threads.map(self.run, jobs))


_pool: _Pool | None = None
_lock = threading.Lock()


def _shared(size: int) -> _Pool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = _Pool(size)
        return _pool


def start(size: int) -> None:
    """Start the pool's workers now, in the background, not at the first large call."""
    _shared(size).start()


def started() -> bool:
    """Whether this process has a pool (a publisher starts one when it opens)."""
    return _pool is not None


def pids() -> list[int]:
    """The live workers' process ids (for accounting: a benchmark adds their CPU to the
    agency's)."""
    with _lock:
        return [] if _pool is None else _pool.pids()


def evaluate(size: int, endpoint: Endpoint, epoch: int,
             jobs: Sequence[tuple[Sequence[bytes], Sequence[bytes] | None]],
             on_died: Callable[[str], Exception]) -> list[list[Evaluation]]:
    """Each job (inputs, blinds or None) evaluated by a worker, in order. A worker that dies
    costs this call (`on_died(why)` is raised) and is replaced at the next."""
    try:
        return _shared(size).map([(endpoint, epoch, chunk, chosen) for chunk, chosen in jobs])
    except WorkerDied as exc:
        raise on_died(str(exc)) from None


# -- the worker process ---------------------------------------------------------------------
def _serve() -> None:
    from safehub.services.keyservice.client import KeyServiceClient

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    clients: dict[Endpoint, KeyServiceClient] = {}
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the answer stream
    while True:
        try:
            endpoint, epoch, chunk, chosen = _read(requests)
        except EOFError:
            return  # the parent closed our stdin or has exited
        try:
            client = clients.get(endpoint)
            if client is None:
                client = clients[endpoint] = KeyServiceClient(
                    endpoint.base_url, endpoint.secret_file, endpoint.ca_file,
                    endpoint.timeout, batch_size=endpoint.batch_size, workers=1,
                    keep_alive=False)
            answer: tuple[bool, object] = (True, client.evaluate_chunk(epoch, chunk, chosen))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = (False, _as_refusal(exc))
        _write(answers, answer)


def _as_refusal(exc: Exception) -> Exception:
    """What the caller gets: a KeyServiceError as it is (its status travels); our own errors'
    messages (which never quote an input); for anything else, only its class."""
    from safehub.errors import SafehubError
    from safehub.services.keyservice.client import KeyServiceError

    if isinstance(exc, KeyServiceError):
        return exc
    if isinstance(exc, SafehubError):
        return KeyServiceError(str(exc))
    return KeyServiceError(f"key service worker failed: {type(exc).__name__}")


if __name__ == "__main__":
    _serve()
