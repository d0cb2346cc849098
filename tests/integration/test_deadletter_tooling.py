"""`safehub deadletter` on the real, secure broker (issue 22): an event is dead-lettered for a
reason an operator can fix, the fix is made, the operator replays it, and it is correlated once.

The reason: the agency's producer put the event on a partition other than the one Kafka's
default partitioner gives its key (a hand-rolled key-to-partition mapping), which the
correlator refuses (its block's state lives with the worker of the key's partition). Once the
agency's mapping is fixed, its new events land right; the one refused meanwhile is replayed,
and the replay, partitioned by its key, lands where it belongs. The correlator (`safehub
correlator`, its own principal) accepts it and raises its alert; a second replay is refused
unless --again, and with --again the correlator's per-event dedup keeps one event and one
alert. A second dead letter of the same refused record (as a consumer that stopped before
committing writes it) is listed as one record, "dead-lettered x2", and counts as replayed with
it. Each replay is in the audit log under the operator's principal. Every command runs as
an operator runs it: a `safehub deadletter` process as the `deadletter-operator` principal.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.bus import make_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.deploy.registry import Kind, Party, Registry, Service, validate
from safehub.errors import ValidationError
from safehub.schemas.codec import encode
from safehub.schemas.records import (
    AuditEntry,
    CorrelatedAlert,
    MatchKeys,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import AuditAction, Sector, SignificantIncident
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.processing import partition_for
from safehub.services.deadletters.letters import HEADER_REPLAY_OF
from tests.conftest import SERVICES, Namespace
from tests.fixtures.correlator import PARTITIONS, Correlator, wait_until
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
AGENCY = "police-x"
OPERATOR = Service.DEADLETTER_OPERATOR.value
BLOCK = 1234


def registry_toml(registry: Registry) -> str:
    out = []
    for p in registry.parties:
        out.append(f'[[party]]\nid = "{p.id}"\nkind = "{p.kind.value}"')
        if p.sector is not None:
            out.append(f'sector = "{p.sector.value}"')
        if p.kind is Kind.HUB:
            out.append(f"leads_for = {list(p.leads_for)!r}".replace("'", '"'))
    return "\n".join(out) + "\n"


def event() -> WarningSignEvent:
    at = int(time.time() * 1000) - 86_400_000
    subject = Subject(MatchKeys(mk1=hashlib.sha256(b"replayed child").digest()), 1, BLOCK, 14,
                      "E08000035", None, "b" * 32)
    return WarningSignEvent(hashlib.md5(b"replayed event").hexdigest(), AGENCY, Sector.POLICE,
                            at, at, subject, SignificantIncident.FOUND_IN_CAR_WITH_UNKNOWN_ADULTS)


class Operator:
    """`safehub deadletter ...` as the operator runs it."""

    def __init__(self, ns: Namespace, registry_file: Path) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")}
        self.env = {**inherited, **ns.env(OPERATOR), "SAFEHUB_REGISTRY": str(registry_file)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "safehub.cli", "deadletter", *args],
                              env=self.env, capture_output=True, text=True, timeout=90)


def ours(entries: list[AuditEntry], action: AuditAction, subject: str | None = None
         ) -> list[AuditEntry]:
    return [e for e in entries if e.action is action and subject in (None, e.subject_id)]


@pytest.mark.timeout(180)
def test_a_fixed_dead_letter_is_replayed_correlated_once_and_audited(
    secure_namespace: Callable[..., Namespace],
    correlator_factory: Callable[..., Correlator],
    tmp_path: Path,
) -> None:
    registry = Registry(validate((Party(AGENCY, Kind.AGENCY, Sector.POLICE),
                                  Party("csc-a", Kind.HUB), *SERVICES,
                                  Party(OPERATOR, Kind.SERVICE)), "test registry"))
    ns = secure_namespace(registry=registry, partitions=PARTITIONS)
    registry_file = tmp_path / "agencies.toml"
    registry_file.write_text(registry_toml(registry))
    operator = Operator(ns, registry_file)
    ingress, deadletter = ns.ingress(AGENCY), ns.deadletter

    ev = event()
    value = encode(ev)
    raised = step(load_rules(DEFAULT_RULES_PATH), initial_state(), ev)[1]
    assert raised, "a significant incident alone raises an alert"
    right = partition_for(block_key(BLOCK), PARTITIONS)

    correlator = correlator_factory(ns)
    correlator.start()
    audit = TopicReader(ns.kafka, ns.audit)
    correlated = TopicReader(ns.kafka, ns.correlated)
    letters = TopicReader(ns.kafka, deadletter)
    replayed_copies = TopicReader(ns.kafka, ingress)
    agency = make_producer(ns.connection(AGENCY), "test-agency")
    admin = make_producer(ns.kafka, "test-admin")
    try:
        # The agency's broken mapping puts the event on the wrong partition: refused.
        agency.send(ingress, key=block_key(BLOCK), value=value,
                    partition=(right + 1) % PARTITIONS).get(30)
        wait_until("the event dead-lettered", lambda: len(letters.poll()) == 1, 90, correlator)
        dl_offset = str(letters.records[0].offset)
        # Two records an operator must not replay: one refused from a topic the operator may
        # not write (a forged ack), and one without a dead letter's headers.
        DeadLetterSink(admin, deadletter).send(
            b"forged", b"k", ns.topic("alert-acks.csc-a"), 0, 7,
            ValidationError("agency_id", "differs from the hub of the topic"))
        admin.send(deadletter, value=b"not a dead letter").get(30)
        # The first refusal again, as a consumer that stopped before committing sends it.
        DeadLetterSink(admin, deadletter).send(
            value, block_key(BLOCK), ingress, (right + 1) % PARTITIONS, 0,
            ValidationError("partition", "is not the partition Kafka's default partitioner "
                                         "gives the record's key"))
        # Read their offsets back: the correlator dead-letters inside a transaction, whose
        # commit marker takes an offset of its own.
        wait_until("the records on deadletter", lambda: len(letters.poll()) == 4, 30,
                   correlator)
        offset_of = {r.value: str(r.offset) for r in letters.records[1:]}
        forged, foreign = offset_of[b"forged"], offset_of[b"not a dead letter"]

        listed = operator("list", "--summary")
        assert listed.returncode == 0, listed.stderr
        assert f"{ingress}[{(right + 1) % PARTITIONS}]@0" in listed.stdout
        assert "partition: is not the partition Kafka's default partitioner" in listed.stdout
        assert ("2 of 2 refused record(s) in 3 dead letter(s) (1 of those listed repeat a "
                "record already dead-lettered") in listed.stdout
        assert "0 replay marker(s); 1 other record(s)" in listed.stdout
        assert listed.stdout.count(f"{ingress}[") == 1 and "[dead-lettered x2]" in listed.stdout
        only = operator("list", "--source", ingress, "--reason", "PARTITION", "--since", "1h")
        assert only.stdout.count(ingress) == 1 and "1 of 2" in only.stdout, only.stdout

        shown = operator("show", dl_offset)
        assert shown.returncode == 0, shown.stderr
        assert hashlib.sha256(value).hexdigest() in shown.stdout
        assert value.hex()[:64] not in shown.stdout  # never the bytes unless asked
        raw = operator("show", dl_offset, "--raw")
        assert value.hex()[:64] in raw.stdout
        out = tmp_path / "letter.bin"
        assert operator("show", dl_offset, "--out", str(out)).returncode == 0
        assert out.read_bytes() == value and out.stat().st_mode & 0o777 == 0o600

        for args, says in [(["show", "99"], "no dead letter at 99"),
                           (["show", foreign], "not a safehub dead letter"),
                           (["replay", forged], "is not one a replay may write")]:
            refused = operator(*args)
            assert refused.returncode == 1 and says in refused.stderr, (args, refused.stderr)
        assert operator("replay").returncode == 2  # nothing chosen: a usage error

        # The mapping is fixed at the agency; the operator replays what was refused meanwhile.
        dry = operator("replay", "--source", ingress, "--reason", "partition", "--dry-run")
        assert dry.returncode == 0 and "1 dead letter(s) would be replayed" in dry.stdout
        first = operator("replay", dl_offset, "--by", "oncall-sam")
        assert first.returncode == 0, first.stderr
        wait_until("the replayed event accepted",
                   lambda: bool(ours(audit.decoded(AuditEntry), AuditAction.EVENT_ACCEPTED,
                                     ev.event_id)), 60, correlator)
        again = operator("replay", dl_offset)
        assert again.returncode == 1 and "already replayed 1 time(s)" in again.stderr
        # None left to replay: the repeat's record is the one replayed.
        assert operator("replay", "--source", ingress).returncode == 1
        repeat = operator("replay", offset_of[value])
        assert repeat.returncode == 1 and "already replayed 1 time(s)" in repeat.stderr
        forced = operator("replay", dl_offset, "--again", "--by", "oncall-sam")
        assert forced.returncode == 0, forced.stderr
        wait_until("the second copy processed",
                   lambda: len(ours(audit.decoded(AuditEntry), AuditAction.EVENT_ACCEPTED,
                                    ev.event_id)) == 2, 60, correlator)
        wait_until("the alert", lambda: len(correlated.poll()) >= len(raised), 30, correlator)
        time.sleep(1)  # an alert the second copy wrongly raised would be there by now
        listed = operator("list")
        assert "[replayed x2]" in listed.stdout and "2 replay marker(s)" in listed.stdout
        assert correlator.stop() == 0
        audit.read_to_end()
        alerts = correlated.read_to_end()
        copies = replayed_copies.read_to_end()
        entries = audit.decoded(AuditEntry)
        found = correlated.decoded(CorrelatedAlert)
    finally:
        agency.close()
        admin.close()
        for reader in (audit, correlated, letters, replayed_copies):
            reader.close()

    # Correlated once: the copy is the same event, whose journal entry (and id) is the same.
    accepted = ours(entries, AuditAction.EVENT_ACCEPTED, ev.event_id)
    assert len({e.entry_id for e in accepted}) == 1 and accepted[0].actor == AGENCY
    assert [a.alert_id for a in found] == [a.alert_id for a in raised]
    assert len(alerts) == len(raised)
    # The copies landed on the key's partition, marked as replays of the dead letter.
    replays = [r for r in copies if dict(r.headers or []).get(HEADER_REPLAY_OF)]
    assert len(replays) == 2 and {r.partition for r in replays} == {right}
    assert all(r.value == value and r.key == block_key(BLOCK) for r in replays)
    # Each replay audited under the operator's principal, by the operator named.
    audited = ours(entries, AuditAction.DEADLETTER_REPLAYED)
    assert len(audited) == 2 and len({e.subject_id for e in audited}) == 2
    assert {(e.service, e.actor) for e in audited} == {(OPERATOR, "oncall-sam")}
    assert {e.digest for e in audited} == {hashlib.sha256(value).digest()}
