"""The key service running as `safehub keyservice serve` over HTTPS on 127.0.0.1, as its own
Kafka principal on the real secure broker: the RFC 9497 vectors through it (key file from the
vectors' seed and info, blinds injected by the client), bearer secrets, and quotas refused,
audited on the broker and not spilling onto another agency."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from safehub.connection import write_secret
from safehub.deploy.kafka.certificates import ensure_certificates
from safehub.deploy.registry import Kind, Party, Registry, Service, validate
from safehub.schemas.codec import decode
from safehub.schemas.records import AuditEntry
from safehub.schemas.vocabulary import AuditAction, Sector
from safehub.services.audit.reading import read_all
from safehub.services.keyservice import oprf
from safehub.services.keyservice.client import KeyServiceClient, KeyServiceError
from safehub.services.keyservice.keys import key_path, write_key_file
from safehub.services.keyservice.server import refusal_subject
from safehub.shutdown import terminate
from tests.conftest import SERVICES, Namespace

pytestmark = pytest.mark.integration

VECTORS = json.loads((Path(__file__).parents[1] / "unit" / "rfc9497_vectors.json").read_text())
POLICE, HEALTH = "police-x", "health-y"
HEALTH_PER_MINUTE = 5
START_TIMEOUT_S = 60.0


@dataclass
class Running:
    url: str
    ns: Namespace
    folder: Path
    ca_file: Path
    proc: subprocess.Popen[bytes]

    def secret(self, agency: str) -> Path:
        return self.folder / "agency-side" / f"{agency}.secret"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, agency: str) -> KeyServiceClient:
        return KeyServiceClient(self.url, self.secret(agency), self.ca_file, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, ca_file: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"key service exited {proc.returncode}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            tls = ssl.create_default_context(cafile=str(ca_file))
            if httpx.get(f"{url}/healthz", verify=tls, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"key service not healthy in {START_TIMEOUT_S} s")


@pytest.fixture
def keyservice(secure_namespace: Callable[..., Namespace], tmp_path: Path) -> Iterator[Running]:
    parties = (Party(POLICE, Kind.AGENCY, Sector.POLICE),
               Party(HEALTH, Kind.AGENCY, Sector.HEALTH),
               *SERVICES, Party(Service.KEYSERVICE, Kind.SERVICE))
    ns = secure_namespace(registry=Registry(validate(parties, "key service test")))
    keys = tmp_path / "keys"
    write_key_file(keys, 1, bytes.fromhex(VECTORS["Seed"]), bytes.fromhex(VECTORS["KeyInfo"]))
    write_key_file(keys, 0)
    for agency in (POLICE, HEALTH):
        secret = f"{agency}-{os.urandom(16).hex()}"
        write_secret(tmp_path / "clients" / f"{agency}.secret", secret)
        write_secret(tmp_path / "agency-side" / f"{agency}.secret", secret)
    write_secret(tmp_path / "operator.secret", "operator-" + os.urandom(16).hex())
    quota = tmp_path / "quota.toml"
    quota.write_text("[default]\nper_minute = 10000\nper_day = 100000\n"
                     f"[agencies.{HEALTH}]\nper_minute = {HEALTH_PER_MINUTE}\n")
    tls = ensure_certificates(tmp_path / "tls")  # a CA and a certificate for 127.0.0.1
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, **ns.env(Service.KEYSERVICE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehub.cli", "keyservice", "serve",
         "--listen", f"127.0.0.1:{port}", "--keys", str(keys),
         "--clients", str(tmp_path / "clients"),
         "--operator-secret", str(tmp_path / "operator.secret"),
         "--tls-cert", str(tls.node_file), "--tls-key", str(tls.node_file),
         "--quota-config", str(quota), "--quota-state", str(tmp_path / "quota-state.json")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(url, tls.ca_file, proc)
        yield Running(url, ns, tmp_path, tls.ca_file, proc)
    finally:
        terminate(proc)


def test_rfc_vectors_through_the_running_service(keyservice: Running) -> None:
    vectors = VECTORS["vectors"]
    with keyservice.client(POLICE) as client:
        got = client.evaluate_full(1, [bytes.fromhex(v["Input"]) for v in vectors],
                                   blinds=[bytes.fromhex(v["Blind"]) for v in vectors])
        assert [g.blinded.hex() for g in got] == [v["BlindedElement"] for v in vectors]
        assert [g.evaluated.hex() for g in got] == [v["EvaluationElement"] for v in vectors]
        assert [g.output.hex() for g in got] == [v["Output"] for v in vectors]
        # With random blinds the 32-byte match keys are the first half of the same outputs.
        keys = client.evaluate(1, [bytes.fromhex(v["Input"]) for v in vectors])
        assert [k.hex() for k in keys] == [v["Output"][:64] for v in vectors]
        # Epoch 0 (the linkage-block key) is another key: other values for the same inputs.
        assert client.evaluate(0, [b"\x00"]) != keys[:1]
        # Above one batch: the client splits (512 per call, in worker processes), in order.
        inputs = [f"input {i}".encode() for i in range(4100)]
        many = client.evaluate(1, inputs)
    sk, _ = oprf.derive_key_pair(bytes.fromhex(VECTORS["Seed"]),
                                 bytes.fromhex(VECTORS["KeyInfo"]))
    assert many == [oprf.evaluate(sk, x)[:32] for x in inputs]


def test_a_wrong_bearer_secret_is_refused(keyservice: Running, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.secret"
    write_secret(wrong, "not-a-registered-secret")
    with KeyServiceClient(keyservice.url, wrong, keyservice.ca_file) as client, \
            pytest.raises(KeyServiceError) as info:
        client.evaluate(1, [b"x"])
    assert info.value.status == 401
    r = httpx.post(f"{keyservice.url}/v1/evaluate", json={"epoch": 1, "elements": []},
                   verify=keyservice.tls())
    assert r.status_code == 401


def test_destroyed_epoch_is_refused_at_once(keyservice: Running) -> None:
    with keyservice.client(POLICE) as client:
        assert len(client.evaluate(0, [b"x"])) == 1
        key_path(keyservice.folder / "keys", 0).unlink()
        with pytest.raises(KeyServiceError, match="destroyed") as info:
            client.evaluate(0, [b"x"])
        assert info.value.status == 404


def test_over_quota_is_refused_audited_and_others_are_served(keyservice: Running) -> None:
    with keyservice.client(HEALTH) as health, keyservice.client(POLICE) as police:
        # Fill HEALTH's minute; a minute boundary in between would reset it, so retry once.
        for _ in range(2):
            try:
                health.evaluate(1, [b"a"] * HEALTH_PER_MINUTE)
                health.evaluate(1, [b"b"])
            except KeyServiceError as exc:
                refused = exc
                break
        else:
            raise AssertionError("no quota refusal in two minutes' windows")
        refused_at_ms = time.time_ns() // 1_000_000
        assert refused.status == 429
        assert f"per-minute quota of {HEALTH_PER_MINUTE}" in str(refused)
        assert "resets at" in str(refused)
        assert len(police.evaluate(1, [b"c"] * 50)) == 50  # another agency is unaffected

    usage = httpx.get(f"{keyservice.url}/v1/usage", verify=keyservice.tls(),
                      headers={"Authorization": "Bearer " + (
                          keyservice.folder / "operator.secret").read_text().strip()})
    rows = {a["agency"]: a for a in usage.json()["agencies"]}
    assert rows[HEALTH]["minute"]["limit"] == HEALTH_PER_MINUTE
    assert rows[POLICE]["day"]["used"] >= 50
    saved = json.loads((keyservice.folder / "quota-state.json").read_text())
    assert saved[POLICE][3] == rows[POLICE]["day"]["used"]  # kept for a restart

    # The broker acknowledged the audit entry before the 429 was answered: it is there now.
    records = read_all(keyservice.ns.kafka, [keyservice.ns.audit])
    entries = [decode(r.value, AuditEntry) for r in records]
    refusals = [e for e in entries if e.action == AuditAction.KEY_QUOTA_REFUSED]
    assert len(refusals) == 1, entries
    entry = refusals[0]
    assert (entry.service, entry.actor) == (Service.KEYSERVICE, HEALTH)
    assert abs(entry.at - refused_at_ms) < 10_000
    assert entry.subject_id == refusal_subject(HEALTH, 1, entry.at)


def test_worker_processes_carry_refusals_and_outlive_a_dead_worker(keyservice: Running) -> None:
    """Calls of more than one batch run in worker processes (keyservice/workers.py): a refusal
    there reaches the caller with its status, and killed workers are replaced at the next call
    instead of breaking the client."""
    over = [f"h{i}".encode() for i in range(HEALTH_PER_MINUTE + 3)]
    with KeyServiceClient(keyservice.url, keyservice.secret(HEALTH), keyservice.ca_file,
                          batch_size=2, workers=2) as health, \
            pytest.raises(KeyServiceError) as info:
        health.evaluate(1, over)  # four calls of two: the third is over the minute's five
    assert info.value.status == 429 and "per-minute quota" in str(info.value)

    inputs = [f"input {i}".encode() for i in range(40)]
    sk, _ = oprf.derive_key_pair(bytes.fromhex(VECTORS["Seed"]),
                                 bytes.fromhex(VECTORS["KeyInfo"]))
    expected = [oprf.evaluate(sk, x)[:32] for x in inputs]
    with KeyServiceClient(keyservice.url, keyservice.secret(POLICE), keyservice.ca_file,
                          batch_size=8, workers=2) as police:
        assert police.evaluate(1, inputs) == expected
        workers = _worker_pids()
        assert workers, "the calls ran in worker processes"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        # Wait until they are dead, not merely signalled: a worker still being torn down looks
        # alive to the pool and fails the call it is given, which is the race this would
        # otherwise test by chance (CI saw it both ways).
        deadline = time.monotonic() + 10
        while not all(_dead(pid) for pid in workers):
            assert time.monotonic() < deadline, "killed workers still running"
            time.sleep(0.01)
        assert police.evaluate(1, inputs) == expected  # dead workers replaced, not reused
        assert set(_worker_pids()).isdisjoint(workers)


def _dead(pid: int) -> bool:
    """Exited: a zombie awaiting its parent, or gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _worker_pids() -> list[int]:
    """This process's key service workers (`python -m safehub.services.keyservice.workers`)."""
    mine = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == mine and b"safehub.services.keyservice.workers" in cmdline \
                and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids
