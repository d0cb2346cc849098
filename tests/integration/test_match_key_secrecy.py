"""No key, no match key: an insider with every topic and all of an agency's files still needs the
key service to compute a chosen child's match keys or linkage block.

Set-up, on the real secure broker: `safehub keyservice serve` over HTTPS on 127.0.0.1 as its
own process (key files for epochs 0 and 1, a bearer secret per agency); two agencies publish
through it with their real publishers, the health agency a set of target children and the
police other children. The attacker is an insider at the police: it holds the police's whole
state folder (its vault database, its export file, its key service bearer secret, the CA
certificate, its Kafka password), and every topic the auditor can read (all of them). Only the
key service's key files are out of its reach. It knows each target child's identity (name,
date of birth, NHS number, postcode) and wants the child's match keys or linkage block, which
would find the child's events on the topics.

What the test shows:
1. No derivation it can run offline reproduces any of a target's 32-byte match keys or
   the 32-byte PRF value its linkage block is taken from: HMAC-SHA256 under every piece of
   key-like material in those files and topics (whole files, every cell of the vault, every
   token of 16 or more characters as text and hex- or base64-decoded, every value and every
   match key on the topics), both as the PRF input alone and in version 1's message layout
   with the epoch written in; unkeyed hashes (SHA-256, SHA-512, BLAKE2b, SHA3-256, MD5) of the
   PRF inputs, of the normalised fields and of the fields joined; and RFC 9497's OPRF itself
   under random keys and under every 32-byte candidate used as a seed (with the service's
   default info strings) or as a secret scalar.
2. The service, asked with the police's own bearer secret, does give the targets' match keys
   and blocks: they equal those on the health agency's events (so the values compared against
   in 1 are the right ones, and the service is what makes them).
3. Once the key files are deleted (the epochs destroyed), the service answers 404 and the
   police cannot compute them either.

What it cannot show: that no other derivation exists. That rests on the OPRF's security (the
one-more gap Diffie-Hellman assumption in ristretto255, RFC 9497 section 7) and on the key
files staying on the key service's host; a test can only try the derivations an insider would
plausibly try, which is what 1 does. It does not stop an insider who holds the bearer secret
from asking the service about chosen identities: quotas bound how many per minute and day and
refusals are audited (tests/integration/test_keyservice.py), but a handful of look-ups within
quota are possible, and are visible only in the service's per-agency usage. The linkage block
is compared as its 32-byte PRF value, not as the 12-bit block number: any guess hits a block
number one time in 4,096 by chance. And the agency's own children are not the question: it
knows their match keys because it published them (its vault may even hold one as the
person key), which is why the targets are another agency's children.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import hashlib
import hmac
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehub.bus import make_producer
from safehub.deploy.kafka.launcher import free_port
from safehub.deploy.registry import Kind, Party, Registry, Service, validate
from safehub.errors import SafehubError
from safehub.producers.keying import SEP, Keying, OprfPRF
from safehub.producers.matchkeys import block_input, block_of, key_inputs
from safehub.producers.pseudonymisation import event_id, normalise_identity
from safehub.producers.publisher import DeliveryReport, Publisher
from safehub.producers.records import ChildIdentity, SignRecord
from safehub.producers.vault import Vault
from safehub.samples.children import children, sign_records
from safehub.schemas import codec
from safehub.schemas.records import WarningSignEvent
from safehub.schemas.vocabulary import Sector
from safehub.services.audit.reading import read_all
from safehub.services.keyservice import local, oprf
from safehub.services.keyservice.client import KeyServiceError
from safehub.services.keyservice.keys import key_path
from tests.conftest import SERVICES, Namespace

pytestmark = pytest.mark.integration

POLICE, HEALTH = "police-x", "health-y"
TARGETS, OTHERS = 12, 30
_TOKEN = re.compile(rb"[A-Za-z0-9+/=_\-:.]{16,}")
_HEX = re.compile(rb"^[0-9a-fA-F]+$")


@dataclass
class World:
    ns: Namespace
    service: local.LocalKeyService
    police_folder: Path
    targets: list[ChildIdentity]
    target_events: dict[str, WarningSignEvent]  # record_ref -> the health agency's event
    target_records: list[SignRecord]
    topic_values: list[bytes]
    topic_match_keys: set[bytes]


def _publish(ns: Namespace, service: local.LocalKeyService, agency: str, sector: Sector,
             records: list[SignRecord], vault_url: str) -> list[DeliveryReport]:
    vault = Vault.open(vault_url)
    producer = make_producer(ns.connection(agency), f"secrecy-{agency}")
    try:
        with service.client(agency) as client:
            publisher = Publisher(producer, vault, Keying(client, epoch=1), agency, sector,
                                  ns.prefix)
            outcomes = publisher.publish_many(records)
    finally:
        producer.close()
        vault.close()
    assert all(isinstance(o, DeliveryReport) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, DeliveryReport)]


@pytest.fixture
def world(secure_namespace: Callable[..., Namespace], tmp_path: Path) -> Iterator[World]:
    parties = (Party(POLICE, Kind.AGENCY, Sector.POLICE),
               Party(HEALTH, Kind.AGENCY, Sector.HEALTH),
               *SERVICES, Party(Service.KEYSERVICE, Kind.SERVICE))
    ns = secure_namespace(registry=Registry(validate(parties, "match key secrecy test")))
    service = local.prepare(tmp_path / "keyservice", [POLICE, HEALTH], free_port())
    with local.serving(service, {**os.environ, **ns.env(Service.KEYSERVICE)},
                       tmp_path / "keyservice.log"):
        kids = children(TARGETS + OTHERS, seed=19)
        targets, others = kids[:TARGETS], kids[TARGETS:]
        target_records = sign_records(targets, "HEALTH")
        _publish(ns, service, HEALTH, Sector.HEALTH, target_records,
                 f"sqlite:///{tmp_path / 'health-vault.sqlite'}")

        # Everything the police holds, in one folder: vault, export, secrets, CA.
        police = tmp_path / "police"
        police.mkdir()
        police_records = sign_records(others, "POLICE")
        with (police / "export.csv").open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["record_ref", "first_name", "surname", "date_of_birth", "nhs_number",
                          "postcode", "person_ref"])
            for rec in police_records:
                i = rec.identity
                out.writerow([rec.record_ref, i.first_name, i.surname, i.date_of_birth,
                              i.nhs_number, i.postcode, rec.person_ref])
        _publish(ns, service, POLICE, Sector.POLICE, police_records,
                 f"sqlite:///{police / 'vault.sqlite'}")
        shutil.copy2(service.secret_file(POLICE), police / "keyservice.secret")
        shutil.copy2(service.ca_file, police / "keyservice-ca.pem")
        shutil.copy2(ns.connection(POLICE).password_file, police / "kafka.password")

        # Every topic, read as the auditor.
        topics = [ns.ingress(a) for a in (POLICE, HEALTH)] + [ns.audit]
        records = read_all(ns.connection("auditor"), topics)
        values = [r.value for r in records if r.value] + [r.key for r in records if r.key]
        events = {}
        for r in records:
            if ".ingress." in r.topic:
                event = codec.decode(r.value, WarningSignEvent)
                events[event.event_id] = event
        by_ref = {rec.record_ref: events[event_id(HEALTH, rec.record_ref)]
                  for rec in target_records}
        pseudonyms = {k for e in events.values() for k in (
            e.subject.match_keys.mk1, e.subject.match_keys.mk2, e.subject.match_keys.mk3,
            e.subject.match_keys.mk4) if k}
        yield World(ns, service, police, targets, by_ref, target_records, values, pseudonyms)


# -- what the insider holds, as candidate key material -------------------------------------------

def _decodings(token: bytes) -> Iterator[bytes]:
    yield token
    if _HEX.match(token) and len(token) % 2 == 0:
        yield bytes.fromhex(token.decode())
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            yield decode(token + b"=" * (-len(token) % 4))


def _material(blob: bytes) -> set[bytes]:
    found = {blob, blob.strip()}
    for token in _TOKEN.findall(blob):
        found.update(_decodings(token))
        for part in re.split(rb"[:.=]", token):  # "mk:<hex>", "a.b", "k=v"
            if len(part) >= 16:
                found.update(_decodings(part))
    return found


def _sqlite_cells(path: Path, tmp: Path) -> Iterable[bytes]:
    copy = tmp / ("copy-" + path.name)
    shutil.copy2(path, copy)  # read a copy: never checkpoint the agency's own file
    with sqlite3.connect(copy) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        yield cell
                    elif cell is not None:
                        yield str(cell).encode()


def key_material(world: World, tmp: Path) -> set[bytes]:
    found: set[bytes] = set()
    for path in sorted(world.police_folder.rglob("*")):
        if not path.is_file():
            continue
        found |= _material(path.read_bytes())
        if path.suffix == ".sqlite" and not path.name.endswith(("-wal", "-shm")):
            for cell in _sqlite_cells(path, tmp):
                found |= _material(cell)
    for value in world.topic_values:
        found |= _material(value)
    found |= world.topic_match_keys  # every pseudonym on the topics, the targets' included
    found.discard(b"")
    return found


# -- derivations available offline ---------------------------------------------------------------

def _v1_messages(data: bytes) -> Iterator[bytes]:
    """Version 1's HMAC message layout: the epoch written after the domain tag."""
    tag, _, rest = data.partition(SEP)
    for epoch in range(4):
        yield SEP.join((tag, str(epoch).encode(), rest))


def _unkeyed(data: bytes) -> Iterator[bytes]:
    yield hashlib.sha256(data).digest()
    yield hashlib.sha512(data).digest()[:32]
    yield hashlib.sha512(data).digest()[32:]
    yield hashlib.blake2b(data, digest_size=32).digest()
    yield hashlib.sha3_256(data).digest()
    yield hashlib.md5(data).digest()  # an attacker's guess, not a use


def offline_outputs(inputs: list[bytes], fields: list[bytes], material: set[bytes],
                    seeds: Iterable[bytes]) -> Iterator[bytes]:
    messages = [m for x in inputs for m in (x, *_v1_messages(x))]
    for key in material:
        for message in messages:
            yield hmac.digest(key, message, "sha256")
    for data in (*messages, *fields, b"".join(fields), SEP.join(fields), b"|".join(fields)):
        yield from _unkeyed(data)
    infos = [b"safehub keyservice epoch 0", b"safehub keyservice epoch 1", b"safehub test", b""]
    for seed in seeds:
        for info in infos:
            try:
                prf = OprfPRF.from_seeds({0: seed}, info)
            except SafehubError:
                continue
            yield from prf.evaluate(0, inputs)
        try:
            as_scalar = [oprf.evaluate(seed, x)[:32] for x in inputs]
        except SafehubError:
            continue  # not a canonical scalar
        yield from as_scalar


def _fields(identity: ChildIdentity) -> list[bytes]:
    n = normalise_identity(identity)
    raw = [identity.first_name, identity.surname, identity.date_of_birth,
           identity.nhs_number or "", identity.postcode or ""]
    normal = [n.first_name, n.surname, n.date_of_birth.isoformat(), n.nhs_number or "",
              n.postcode or ""]
    return [f.encode() for f in (*raw, *normal) if f]


def test_no_offline_derivation_gives_a_chosen_childs_match_keys_or_block(
        world: World, tmp_path: Path) -> None:
    material = key_material(world, tmp_path)
    # The search is not vacuous: files, cells, tokens, topic values, pseudonyms.
    assert len(material) > 500, len(material)
    # The police's bearer secret and Kafka password are among the candidates.
    for secret in ("keyservice.secret", "kafka.password"):
        assert (world.police_folder / secret).read_text().strip().encode() in material
    candidate_seeds = sorted(m for m in material if len(m) == oprf.SEED_BYTES)
    random_seeds = [os.urandom(oprf.SEED_BYTES) for _ in range(8)]

    controls: list[tuple[list[bytes], set[bytes]]] = []
    with world.service.client(POLICE) as police:
        for record in world.target_records:
            identity = normalise_identity(record.identity)
            inputs = [x for x in key_inputs(identity) if x is not None]
            event = world.target_events[record.record_ref]
            mk = event.subject.match_keys
            assert mk.mk4 is None
            truth = {k for k in (mk.mk1, mk.mk2, mk.mk3) if k}
            assert len(truth) == len(inputs) == 3  # mk1, mk2, mk3 (mk4 is not derived)

            # 2. The service, with the police's credentials, gives exactly these.
            assert set(police.evaluate(1, inputs)) == truth
            (block_value,) = police.evaluate(0, [block_input(identity)])
            assert block_of(block_value) == event.subject.linkage_block
            truth.add(block_value)

            # 1. Nothing offline does. Seeds from the files only for the first target (the
            # OPRF costs ~0.1 ms an input): the material is the same for every target.
            seeds = random_seeds + (candidate_seeds if record is world.target_records[0]
                                    else [])
            hits = [out for out in offline_outputs([*inputs, block_input(identity)],
                                                   _fields(record.identity), material, seeds)
                    if out in truth]
            assert hits == [], f"an offline derivation reproduced a value of {record.record_ref}"
            controls.append(([*inputs, block_input(identity)], truth))

    # Positive control: the same search, handed the key service's own key files, finds every
    # value: what keeps the insider out is the key files, not a weakness of the search.
    inputs, truth = controls[0]
    leaked = set().union(*(_material(key_path(world.service.keys, epoch).read_bytes())
                           for epoch in (0, 1)))
    found = {out for out in offline_outputs(inputs, [], set(),
                                            sorted(m for m in leaked if len(m) == 32))
             if out in truth}
    assert found == truth


def test_destroyed_epochs_cannot_be_computed_by_the_agency(world: World) -> None:
    record = world.target_records[0]
    identity = normalise_identity(record.identity)
    inputs = [x for x in key_inputs(identity) if x is not None]
    with world.service.client(POLICE) as police:
        assert len(police.evaluate(1, inputs)) == 3
        for epoch in (1, 0):
            key_path(world.service.keys, epoch).unlink()
        for epoch, data in ((1, inputs), (0, [block_input(identity)])):
            with pytest.raises(KeyServiceError) as refused:
                police.evaluate(epoch, data)
            assert refused.value.status == 404
