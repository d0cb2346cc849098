"""A key service on this machine: for `safehub demo`, the publish benchmark and tests.

`prepare(folder, agencies)` lays out everything `safehub keyservice serve` needs in one folder
and keeps it across runs (a new key would unlink every pseudonym made before it):

    keys/epoch-0.json, keys/epoch-1.json   the linkage-block key and the first match-key epoch
                                           (made as `safehub keyservice keygen` makes them)
    clients/<agency>.secret                the service's copy of each agency's bearer secret
    agency-side/<agency>.secret            the agency's own copy (what its publisher reads)
    operator.secret                        for GET /v1/usage
    tls/                                   a CA and a certificate for 127.0.0.1, from the
                                           launcher's local CA code
    quota-state.json                       the quota counters, kept across restarts

All secret files are 0600. `LocalKeyService.argv()` is the `safehub` command line that serves
it; the caller runs it (as a supervised service, or a subprocess: `serving`) with the
`keyservice` Kafka principal's settings in its environment, then waits with `wait_ready`.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from safehub.connection import read_secret, write_secret
from safehub.deploy.kafka.certificates import Certificates, ensure_certificates
from safehub.errors import ConfigError, SafehubError
from safehub.services.keyservice.client import KeyServiceClient
from safehub.services.keyservice.keys import LINKAGE_BLOCK_EPOCH, key_path, write_key_file
from safehub.shutdown import terminate

FIRST_MATCH_EPOCH = 1
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class LocalKeyService:
    folder: Path
    port: int
    quota_config: Path | None = None

    def __repr__(self) -> str:
        return f"LocalKeyService({self.url})"

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def keys(self) -> Path:
        return self.folder / "keys"

    @property
    def tls(self) -> Certificates:
        return Certificates(self.folder / "tls")

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def operator_secret(self) -> Path:
        return self.folder / "operator.secret"

    def secret_file(self, agency: str) -> Path:
        """The agency's own copy of its bearer secret: what its publisher authenticates with."""
        return self.folder / "agency-side" / f"{agency}.secret"

    def argv(self) -> tuple[str, ...]:
        """`safehub keyservice serve ...` (without `safehub`) for this folder and port."""
        cert = str(self.tls.node_file)  # key and chain in one PEM file
        argv: tuple[str, ...] = ("keyservice", "serve", "--listen", f"{HOST}:{self.port}",
                "--keys", str(self.keys), "--clients", str(self.folder / "clients"),
                "--operator-secret", str(self.operator_secret),
                "--tls-cert", cert, "--tls-key", cert,
                "--quota-state", str(self.folder / "quota-state.json"))
        if self.quota_config is not None:
            argv += ("--quota-config", str(self.quota_config))
        return argv

    def client(self, agency: str, *, batch_size: int = 512, workers: int | None = None,
               timeout: float = 30.0) -> KeyServiceClient:
        return KeyServiceClient(self.url, self.secret_file(agency), self.ca_file, timeout,
                                batch_size=batch_size, workers=workers)

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_ready(self, check: Callable[[], None], timeout: float = 60.0) -> list[int]:
        """Block until the service answers /healthz; returns the epochs it serves. `check`
        raises if the service process has died (its log says why)."""
        deadline = time.monotonic() + timeout
        while True:
            check()
            try:
                r = httpx.get(f"{self.url}/healthz", verify=self._tls(), timeout=2)
                if r.status_code == 200:
                    return [int(e) for e in r.json()["epochs"]]
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SafehubError(f"the key service at {self.url} did not answer within "
                                   f"{timeout:.0f} s")
            time.sleep(0.2)

    def usage(self) -> dict[str, Any]:
        """The operator's view: each agency's elements this UTC minute and day."""
        secret = read_secret(self.operator_secret, "operator bearer secret")
        try:
            r = httpx.get(f"{self.url}/v1/usage", verify=self._tls(), timeout=10,
                          headers={"Authorization": f"Bearer {secret}"})
        except httpx.HTTPError as exc:
            raise SafehubError(f"key service usage: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise SafehubError(f"key service usage: HTTP {r.status_code}")
        doc: dict[str, Any] = r.json()
        return doc


def prepare(folder: Path, agencies: Iterable[str], port: int,
            epochs: Iterable[int] = (LINKAGE_BLOCK_EPOCH, FIRST_MATCH_EPOCH),
            quota: tuple[int, int] | None = None) -> LocalKeyService:
    """The folder for a local key service, reusing whatever an earlier run made: key files
    for `epochs`, a bearer secret per agency (both copies), the operator's secret, TLS.
    `quota` = (per minute, per day) for every agency, else the service's defaults."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    for epoch in epochs:
        if not key_path(folder / "keys", epoch).exists():
            write_key_file(folder / "keys", epoch)
    for agency in agencies:
        service_side = folder / "clients" / f"{agency}.secret"
        agency_side = folder / "agency-side" / f"{agency}.secret"
        if service_side.exists() and agency_side.exists():
            if read_secret(service_side, "bearer secret") != read_secret(
                    agency_side, "bearer secret"):
                raise ConfigError(f"{service_side} and {agency_side} differ")
            continue
        token = secrets.token_urlsafe(32)
        write_secret(service_side, token)
        write_secret(agency_side, token)
    operator = folder / "operator.secret"
    if not operator.exists():
        write_secret(operator, secrets.token_urlsafe(32))
    ensure_certificates(folder / "tls")
    quota_config = None
    if quota is not None:
        quota_config = folder / "quota.toml"
        quota_config.write_text(f"[default]\nper_minute = {quota[0]}\nper_day = {quota[1]}\n")
    return LocalKeyService(folder, port, quota_config)


@contextmanager
def serving(service: LocalKeyService, env: Mapping[str, str], log: Path,
            timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """`safehub keyservice serve` for `service` as a child process (its output in `log`) until
    the block ends; `env` is the whole environment (the `keyservice` principal's settings and
    SAFEHUB_TOPIC_PREFIX). Ready when entered; stopped with SIGTERM when left."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "safehub.cli", *service.argv()],
                                env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)

    def alive() -> None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SafehubError(f"the key service exited with code {proc.returncode}: {tail}")

    try:
        service.wait_ready(alive, timeout)
        yield proc
    finally:
        terminate(proc)
