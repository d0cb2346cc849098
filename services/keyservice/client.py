"""The agency side of the key service: blind, one HTTPS call per batch, finalize.

`KeyServiceClient.evaluate(epoch, inputs)` returns one 32-byte value per input: the first 32
bytes of RFC 9497's 64-byte output. Truncation is fine: the output is SHA-512 of the unblinded
element, so any 32 bytes of it are a uniformly random 256-bit PRF value; match keys and the
linkage block are 32-byte values everywhere else in safehub, and 256 bits leave collisions at
2^-128 for any realistic population. The service sees only blinded elements, never an input.

Batches of more than one call run in worker processes (workers.py says why).
"""

from __future__ import annotations

import binascii
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from safehub.connection import read_secret
from safehub.errors import ConfigError, SafehubError, ValidationError
from safehub.services.keyservice import oprf
from safehub.services.keyservice import workers as pool
from safehub.services.keyservice.server import MAX_BATCH

MATCH_KEY_BYTES = 32
# One worker more than cores: a worker waiting on the service leaves its core to another.
DEFAULT_WORKERS = (os.cpu_count() or 1) + 1


class KeyServiceError(SafehubError):
    """The key service could not be reached, refused a request, or answered wrongly.
    `status` is the HTTP status when there was one (429: over quota, 404: epoch destroyed)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[KeyServiceError], tuple[str, int | None]]:
        # Raised in a worker process and pickled back: keep the status (429 is a quota).
        return (KeyServiceError, (str(self), self.status))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything one input went through: for tests against the RFC's vectors."""

    blinded: bytes
    evaluated: bytes
    output: bytes  # the full 64-byte RFC 9497 output


class KeyServiceClient:
    def __init__(self, base_url: str, secret_file: Path, ca_file: Path,
                 timeout: float = 30.0, *, batch_size: int = 512,
                 workers: int | None = None, keep_alive: bool = True) -> None:
        """`batch_size` elements per call (at most the service's 4096); up to `workers`
        calls in flight (default: cores + 1), each in a worker process, so that blinding and
        finalizing overlap each other and the service's work. `workers=1`: everything in
        this process."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise ConfigError(f"key service batch size must be 1..{MAX_BATCH}")
        self.batch_size = batch_size
        self.workers = max(1, DEFAULT_WORKERS if workers is None else workers)
        if not base_url.startswith("https://"):
            raise ConfigError(f"key service URL must be https://, got {base_url!r}")
        if not ca_file.is_file():
            raise ConfigError(f"key service CA: no certificate at {ca_file}")
        self.base_url = base_url.rstrip("/")
        self._endpoint = pool.Endpoint(self.base_url, secret_file, ca_file, timeout, batch_size)
        context = ssl.create_default_context(cafile=str(ca_file))
        secret = read_secret(secret_file, "key service bearer secret")
        # keep_alive=False: a connection per call, closed after it (a worker process's client
        # lives as long as the worker and would otherwise hold an idle connection that the
        # service, when it stops, waits for until TLS's 30 s shutdown timeout).
        self._http = httpx.Client(base_url=self.base_url, verify=context, timeout=timeout,
                                  headers={"Authorization": f"Bearer {secret}"},
                                  limits=httpx.Limits(max_keepalive_connections=(
                                      None if keep_alive else 0)))

    def __repr__(self) -> str:
        return f"KeyServiceClient({self.base_url})"

    def __enter__(self) -> KeyServiceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def start_workers(self) -> None:
        """Start the worker processes now, in the background: a publisher calls this when it
        opens, so that they are ready by its first batch."""
        if self.workers > 1:
            pool.start(self.workers)

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        """One 32-byte PRF value per input, in order, under the epoch's key."""
        return [e.output[:MATCH_KEY_BYTES] for e in self.evaluate_full(epoch, inputs)]

    def evaluate_full(self, epoch: int, inputs: Sequence[bytes],
                      blinds: Sequence[bytes] | None = None) -> list[Evaluation]:
        """As evaluate, keeping the protocol's values; `blinds` only to reproduce vectors."""
        if blinds is not None and len(blinds) != len(inputs):
            raise ValueError("one blind per input")
        starts = range(0, len(inputs), self.batch_size)
        jobs = [(inputs[i:i + self.batch_size],
                 None if blinds is None else blinds[i:i + self.batch_size]) for i in starts]
        # One call's worth stays here unless the workers run anyway: then it goes to them
        # too, away from this process's other threads.
        if self.workers <= 1 or (len(jobs) <= 1 and not pool.started()):
            done = [self.evaluate_chunk(epoch, chunk, chosen) for chunk, chosen in jobs]
        else:
            done = pool.evaluate(self.workers, self._endpoint, epoch, jobs, lambda why: (
                KeyServiceError(f"{why}; nothing of this batch was derived")))
        return [evaluation for chunk in done for evaluation in chunk]

    def evaluate_chunk(self, epoch: int, chunk: Sequence[bytes],
                       chosen: Sequence[bytes] | None) -> list[Evaluation]:
        """One call's worth, here: blind, one HTTPS call, finalize."""
        pairs = [oprf.blind(data, None if chosen is None else chosen[i])
                 for i, data in enumerate(chunk)]
        evaluated = self._call(epoch, [blinded for _, blinded in pairs])
        try:
            outputs = oprf.finalize_batch(chunk, [b for b, _ in pairs], evaluated)
        except ValidationError as exc:
            raise KeyServiceError(f"key service answered an invalid element: {exc}") from None
        return [Evaluation(blinded, element, output) for (_, blinded), element, output
                in zip(pairs, evaluated, outputs, strict=True)]

    def _call(self, epoch: int, blinded: list[bytes]) -> list[bytes]:
        body = {"epoch": epoch,
                "elements": [binascii.b2a_base64(b, newline=False).decode() for b in blinded]}
        try:
            response = self._http.post("/v1/evaluate", json=body)
        except httpx.HTTPError as exc:
            raise KeyServiceError(f"key service at {self.base_url} unreachable: "
                                  f"{exc.__class__.__name__}: {exc}") from None
        if response.status_code != 200:
            raise KeyServiceError(
                f"key service at {self.base_url} refused epoch {epoch} "
                f"({response.status_code}): {_detail(response)}", response.status_code)
        try:
            doc = response.json()
            evaluated = [binascii.a2b_base64(e, strict_mode=True) for e in doc["evaluated"]]
            answered_epoch = doc["epoch"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyServiceError(f"key service at {self.base_url}: malformed answer") from None
        if answered_epoch != epoch or len(evaluated) != len(blinded):
            raise KeyServiceError(f"key service at {self.base_url}: answered epoch "
                                  f"{answered_epoch} with {len(evaluated)} elements for "
                                  f"epoch {epoch} and {len(blinded)}")
        return evaluated


def _detail(response: httpx.Response) -> str:
    try:
        doc: Any = response.json()
        return str(doc.get("detail", doc)) if isinstance(doc, dict) else str(doc)
    except ValueError:
        return response.text[:200]
