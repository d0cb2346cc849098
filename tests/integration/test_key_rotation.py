"""A key rotation on the real, secure broker with the real key service: a child's events before
the rotation (epoch 1), during the transition (epochs 1 and 2) and after it (epoch 2 only, the
epoch 1 key destroyed) end in one cluster with one alert history. A second child, with no new
event in the transition, is bridged by the police re-sending its record with both epochs.

Everything runs as it would in production: `safehub keyservice serve` over HTTPS as its own
principal, `safehub publish` with --keyservice as each agency's principal, and `safehub
correlator` as the correlator principal (tests/integration/test_correlator_golden.py).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from safehub import cli
from safehub.connection import write_secret
from safehub.deploy.kafka.certificates import ensure_certificates
from safehub.deploy.registry import Kind, Party, Registry, Service, validate
from safehub.producers.pseudonymisation import event_id
from safehub.schemas.codec import decode
from safehub.schemas.records import CorrelatedAlert, IngressEvent, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Tier
from safehub.services.audit.reading import read_all
from safehub.services.keyservice.keys import key_path, write_key_file
from safehub.shutdown import terminate
from tests.conftest import SERVICES, Namespace
from tests.fixtures.correlator import HUBS, PARTITIONS, Correlator, accepted_count, wait_until
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
POLICE, HEALTH = "police-rot", "health-rot"
MAPPING = """sector = "{sector}"
date_format = "ISO"
time_format = "ISO"
timezone = "UTC"

[columns]
record_ref = "ref"
first_name = "first"
surname = "surname"
date_of_birth = "dob"
nhs_number = "nhs"
postcode = "postcode"
local_authority = "la"
occurred_at = "at"
indicator = "code"

[codes]
OLDER = "ASSOCIATING_WITH_OLDER_ADULTS"
MH = "POOR_MENTAL_HEALTH"
GANG = "GANG_ASSOCIATION"
GIFTS = "UNEXPLAINED_GIFTS_OR_MONEY"
LD = "LEARNING_DISABILITY"
CAR = "FOUND_IN_CAR_WITH_UNKNOWN_ADULTS"
"""
# The fictional child as each agency records her: the police without her NHS number, health
# without a postcode. Both make the name keys (mk2, mk3).
AMIRA = {POLICE: {"first": "Amira", "surname": "Okonkwo-Reid", "dob": "2010-07-21",
                  "nhs": None, "postcode": "LS6 2QT"},
         HEALTH: {"first": "Amira", "surname": "Okonkwo Reid", "dob": "2010-07-21",
                  "nhs": "9935181901", "postcode": None}}
TYLER = {POLICE: {"first": "Tyler", "surname": "Haddock", "dob": "2008-11-02", "nhs": None,
                  "postcode": "BD7 1XY"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KeyService:
    def __init__(self, ns: Namespace, folder: Path) -> None:
        self.keys = folder / "keys"
        for epoch in (0, 1, 2):
            write_key_file(self.keys, epoch)
        for agency in (POLICE, HEALTH):
            secret = f"{agency}-{os.urandom(16).hex()}"
            write_secret(folder / "clients" / f"{agency}.secret", secret)
            write_secret(folder / "agency-side" / f"{agency}.secret", secret)
        write_secret(folder / "operator.secret", "operator-" + os.urandom(16).hex())
        tls = ensure_certificates(folder / "tls")
        self.ca_file = tls.ca_file
        self.url = f"https://127.0.0.1:{_free_port()}"
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safehub.cli", "keyservice", "serve",
             "--listen", self.url.removeprefix("https://"), "--keys", str(self.keys),
             "--clients", str(folder / "clients"),
             "--operator-secret", str(folder / "operator.secret"),
             "--tls-cert", str(tls.node_file), "--tls-key", str(tls.node_file)],
            env={**os.environ, **ns.env(Service.KEYSERVICE)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                context = ssl.create_default_context(cafile=str(self.ca_file))
                if httpx.get(f"{self.url}/healthz", verify=context, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "key service not healthy in 60 s"
            time.sleep(0.2)

    def secret(self, agency: str) -> Path:
        return self.folder / "agency-side" / f"{agency}.secret"

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture
def namespace(secure_namespace: Callable[..., Namespace]) -> Namespace:
    parties = (Party(POLICE, Kind.AGENCY, Sector.POLICE),
               Party(HEALTH, Kind.AGENCY, Sector.HEALTH),
               *(Party(h, Kind.HUB) for h in HUBS),
               *SERVICES, Party(Service.KEYSERVICE, Kind.SERVICE))
    registry = Registry(validate(parties, "key rotation test"))
    return secure_namespace(registry=registry, partitions=PARTITIONS)


@pytest.fixture
def keyservice(namespace: Namespace, tmp_path: Path) -> Iterator[KeyService]:
    service = KeyService(namespace, tmp_path / "keyservice")
    try:
        yield service
    finally:
        service.stop()


class Agency:
    """One agency publishing exports with `safehub publish`, as itself."""

    def __init__(self, agency: str, sector: Sector, ns: Namespace, ks: KeyService,
                 folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.agency, self.folder, self.ks, self.ns = agency, folder, ks, ns
        self.mapping = folder / f"{agency}.toml"
        self.mapping.write_text(MAPPING.format(sector=sector.value))
        self.monkeypatch = monkeypatch
        self.n = 0
        self.now = datetime.now(UTC).replace(microsecond=0)

    def publish(self, rows: list[tuple[str, int, str]], *epochs: str,
                child: dict[str, dict[str, str | None]] = AMIRA) -> int:
        """Rows of (ref, days ago, code); `epochs` are publish's flags for the key epochs."""
        self.n += 1
        export = self.folder / f"{self.agency}-{self.n}.jsonl"
        with export.open("w") as f:
            for ref, days_ago, code in rows:
                at = (self.now - timedelta(days=days_ago)).isoformat()
                f.write(json.dumps({"ref": ref, **child[self.agency], "la": "E08000035",
                                    "at": at, "code": code}) + "\n")
        for name, value in self.ns.env(self.agency).items():
            self.monkeypatch.setenv(name, value)
        self.monkeypatch.delenv("SAFEHUB_KAFKA_PRINCIPAL")
        self.monkeypatch.delenv("SAFEHUB_KAFKA_PASSWORD_FILE")
        for name in ("SAFEHUB_LINKAGE_KEY", "SAFEHUB_LINKAGE_KEY_FILE", "SAFEHUB_HMAC_EPOCHS"):
            self.monkeypatch.delenv(name, raising=False)
        self.monkeypatch.setenv("SAFEHUB_KEYSERVICE_SECRET_FILE",
                                str(self.ks.secret(self.agency)))
        self.monkeypatch.setenv("SAFEHUB_KEYSERVICE_CA_FILE", str(self.ks.ca_file))
        return cli.main(["publish", "--agency", self.agency, "--from", str(export),
                         "--mapping", str(self.mapping), "--keyservice", self.ks.url,
                         "--vault", f"sqlite:///{self.folder / (self.agency + '.db')}",
                         *epochs])


@pytest.mark.timeout(300)
def test_a_childs_history_survives_a_key_rotation(
    namespace: Namespace, keyservice: KeyService,
    correlator_factory: Callable[..., Correlator],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = namespace
    correlator = correlator_factory(ns)
    correlator.start()
    audit = TopicReader(ns.kafka, ns.audit)
    correlated = TopicReader(ns.kafka, ns.correlated)
    police = Agency(POLICE, Sector.POLICE, ns, keyservice, tmp_path, monkeypatch)
    health = Agency(HEALTH, Sector.HEALTH, ns, keyservice, tmp_path, monkeypatch)
    try:
        # Before: epoch 1 only. Two agencies' signs: escalating, (3 + 1) x 1.5 = 6.
        assert police.publish([("P1", 20, "OLDER")], "--key-epoch", "1") == 0
        assert health.publish([("H1", 19, "MH")], "--key-epoch", "1") == 0
        assert police.publish([("T1", 18, "OLDER")], "--key-epoch", "1", child=TYLER) == 0
        wait_until("before", lambda: accepted_count(audit) >= 3, 90, correlator)
        # The transition: keys under epoch 1 and epoch 2 (a vulnerability: no new alert).
        during = ("--key-epoch", "1", "--transition-epoch", "2")
        assert police.publish([("P2", 15, "GANG")], *during) == 0
        # Tyler has no new event now: the police re-send his record with both epochs.
        assert police.publish([("T1", 18, "OLDER")], *during, child=TYLER) == 0
        wait_until("during", lambda: accepted_count(audit) >= 5, 90, correlator)
        # After: the epoch 1 key is destroyed; the agencies use epoch 2 only. The incident
        # makes the child high, with the whole history as evidence.
        key_path(keyservice.keys, 1).unlink()
        assert health.publish([("H2", 12, "LD")], "--key-epoch", "2") == 0
        assert police.publish([("P3", 10, "CAR")], "--key-epoch", "2") == 0
        assert police.publish([("P4", 9, "OLDER")], "--key-epoch", "1") == 1  # refused: gone
        # Tyler's new event links to his old one: emerging, (3 + 2.5) = 5.5.
        assert police.publish([("T2", 8, "GIFTS")], "--key-epoch", "2", child=TYLER) == 0
        wait_until("after", lambda: accepted_count(audit) >= 8, 90, correlator)
        wait_until("the incident's alert",
                   lambda: any(decode(r.value, CorrelatedAlert).tier is Tier.HIGH
                               for r in correlated.poll()), 60, correlator)
        assert correlator.stop() == 0
        records = correlated.read_to_end()
        audit.read_to_end()
    finally:
        audit.close()
        correlated.close()

    ingress = read_all(ns.kafka, [ns.ingress(a) for a in (POLICE, HEALTH)])
    events: list[IngressEvent] = [decode(r.value, WarningSignEvent) for r in ingress]
    assert len(events) == 8  # P4 never left the agency; T1 went twice
    block_of = {e.subject.linkage_block for e in events}
    assert len(block_of) == 2  # one block per child, whatever the epoch
    tyler_ids = {event_id(POLICE, "T1"), event_id(POLICE, "T2")}
    amira = [e for e in events if e.event_id not in tyler_ids]
    assert len(amira) == 5
    epochs = [(e.subject.key_epoch, e.subject.transition_keys) for e in amira]
    assert sorted((k, t.key_epoch if t else 0) for k, t in epochs) == [
        (1, 0), (1, 0), (1, 2), (2, 0), (2, 0)]

    alerts = [decode(r.value, CorrelatedAlert)
              for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    about_amira = [a for a in alerts if a.evidence[0].event_id not in tyler_ids]
    # One child, one alert history: escalating before the rotation, high after it, one id.
    assert [(a.tier, a.rule) for a in about_amira] == [(Tier.ESCALATING, "score"),
                                                      (Tier.HIGH, "significant-incident")]
    assert len({a.cluster_id for a in about_amira}) == 1
    final = about_amira[-1]
    assert final.agencies == (HEALTH, POLICE)
    assert {e.event_id for e in final.evidence} == {e.event_id for e in amira}
    assert not final.identity_conflict
    # Tyler: his record from before the rotation and his event after it, in one alert.
    (about_tyler,) = [a for a in alerts if a.evidence[0].event_id in tyler_ids]
    assert about_tyler.tier is Tier.EMERGING
    assert {e.event_id for e in about_tyler.evidence} == tyler_ids
