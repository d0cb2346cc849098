"""Replay: re-derive every alert from the ingress topics and compare with what was emitted.

The correlator journals one EVENT_ACCEPTED entry per event it feeds to `step`, in feeding order,
with the SHA-256 of the event's raw bytes. Replay walks those entries in the same order, finds
each event on its ingress topic by that digest (so an altered event is caught, not replayed),
feeds it to the same pure `step` with the same rules, and compares the alerts it gets with the
ones on `correlated`, on the routed topics and in inbox databases.

sharding.py runs this per group of linkage blocks, in parallel: blocks never meet in `step`.

Alerts are paired on what they decide: first by alert id, then by (cluster, tier, rule,
evidence) whatever the rules version, then by (cluster, tier). What is left is missing (replay
raises it, nobody emitted it) or unexpected (emitted, replay does not raise it).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TypeGuard

from safehub.errors import ValidationError
from safehub.schemas.records import (
    AuditEntry,
    CorrelatedAlert,
    IngressEvent,
    MissingEpisodeEvent,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import AuditAction
from safehub.services.correlation.core import (
    BlockState,
    block_full,
    initial_state,
    step,
    too_late,
)
from safehub.services.correlation.linking import block_key, subject_block
from safehub.services.correlation.rules import Rules

CORRELATOR = "correlator"
# Fields that name the rules rather than decide anything: with --rules they are expected to differ
# (the explanation quotes the rules' thresholds, and alerts of format 1 rules carry none).
_VERSION_FIELDS = {"alert_id", "rules_version", "explanation"}


_REPLAYED = (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_DEADLETTERED,
             AuditAction.BLOCK_STATE_RESET)


@dataclass(frozen=True, slots=True)
class Difference:
    # missing, unexpected, differing, altered-event, altered-entry, missing-event, routed, inbox
    kind: str
    message: str
    alert_id: str | None = None
    cluster_id: str | None = None


@dataclass(slots=True)
class ReplayReport:
    events_replayed: int = 0
    ingress_records: int = 0
    unaccounted_events: int = 0  # on ingress, never journalled (correlator behind?)
    rules_versions: list[str] = field(default_factory=list)
    replayed_alerts: int = 0
    emitted_alerts: int = 0
    matches: int = 0
    differences: list[Difference] = field(default_factory=list)
    # Blocks the correlator journalled as reset (their saved state unreadable): replayed from
    # empty at that point, as the worker went on; listed so an auditor sees history was lost.
    blocks_reset: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "events_replayed": self.events_replayed,
            "ingress_records": self.ingress_records,
            "unaccounted_events": self.unaccounted_events,
            "rules_versions": self.rules_versions, "replayed_alerts": self.replayed_alerts,
            "emitted_alerts": self.emitted_alerts, "matches": self.matches,
            "missing": self.count("missing"), "unexpected": self.count("unexpected"),
            "differing": self.count("differing"),
            "blocks_reset": self.blocks_reset,
            "differences": [
                {"kind": d.kind, "message": d.message, "alert_id": d.alert_id,
                 "cluster_id": d.cluster_id} for d in self.differences
            ],
        }


@dataclass(frozen=True, slots=True)
class Decoders:
    """The contract's decoders, handed in by the shell (sharding.py: safehub.schemas.codec), so
    that this core imports no Avro library. Each raises ValidationError on bytes that are not
    such a record."""

    audit_entry: Callable[[bytes | None], AuditEntry]
    alert: Callable[[bytes | None], CorrelatedAlert]
    event: Callable[[bytes | None], object]  # any record: replay checks it is an event


def correlator_entries(audit_values: Iterable[bytes], decoders: Decoders
                       ) -> tuple[list[AuditEntry], set[bytes]]:
    """The correlator's EVENT_ACCEPTED, EVENT_DEADLETTERED and BLOCK_STATE_RESET entries in
    journal order, and the digests of the alerts it journalled as emitted. Other records are
    skipped (verify reports undecodable ones)."""
    accepted = []
    emitted: set[bytes] = set()
    for raw in audit_values:
        try:
            entry = decoders.audit_entry(raw)
        except ValidationError:
            continue
        if entry.service != CORRELATOR:
            continue
        if entry.action in _REPLAYED:
            accepted.append(entry)
        elif entry.action == AuditAction.ALERT_EMITTED:
            emitted.add(entry.digest)
    return accepted, emitted


def choose_rules(emitted: Sequence[CorrelatedAlert], override: Rules | None,
                 lookup: Callable[[str], Rules], fallback: str) -> Callable[[int], Rules]:
    """Rules per linkage block: the override, else the version the block's own alerts name,
    else `fallback` (the version of the newest alert on `correlated`: a block that never
    alerted)."""
    if override is not None:
        return lambda _block: override
    cache: dict[str, Rules] = {}

    def get(version: str) -> Rules:
        if version not in cache:
            cache[version] = lookup(version)
        return cache[version]

    by_block: dict[int, str] = {}
    for alert in emitted:
        by_block.setdefault(alert.linkage_block, alert.rules_version)
    return lambda block: get(by_block.get(block, fallback))


def emitted_alerts(records: Iterable[tuple[str, bytes | None, bool]], report: ReplayReport,
                   decoders: Decoders) -> list[CorrelatedAlert]:
    """The alerts on `correlated`, given as (where, raw bytes, journalled); each must have the
    correlator's ALERT_EMITTED entry (journalled: its digest is one the correlator wrote)."""
    out = []
    for where, raw, journalled in records:
        try:
            alert = decoders.alert(raw)
        except ValidationError as exc:
            report.differences.append(Difference(
                "unexpected", f"record {where} is not an alert ({exc.field}: {exc.rule})"))
            continue
        if not journalled:
            report.differences.append(Difference(
                "unjournalled", f"alert {alert.alert_id} at {where} has no ALERT_EMITTED "
                "entry with its digest (altered, or not written by the correlator)",
                alert.alert_id, alert.cluster_id))
        out.append(alert)
    return out


def replay_events(entries: Sequence[AuditEntry],
                  ingress: Mapping[bytes, tuple[bytes, bytes | None]],
                  rules_for: Callable[[int], Rules], report: ReplayReport,
                  decoders: Decoders) -> list[CorrelatedAlert]:
    """Feed the journalled events to `step` in journal order, per linkage block.

    `ingress` maps the SHA-256 of each ingress record's value to its (value, key). A
    dead-lettered entry is not fed; one that names an event (an event refused as beyond the
    history limit, not a broken contract) is checked: it must be too late where it stands."""
    states: dict[int, BlockState] = {}
    alerts: list[CorrelatedAlert] = []
    for entry in entries:
        if entry.action == AuditAction.BLOCK_STATE_RESET:
            _reset(entry, states, report)
            continue
        if entry.action == AuditAction.EVENT_DEADLETTERED:
            _check_refusal(entry, ingress, states, rules_for, report, decoders)
            continue
        found = ingress.get(entry.digest)
        if found is None:
            report.differences.append(missing_event(entry))
            continue
        raw, key = found
        try:
            event = decoders.event(raw)
        except ValidationError as exc:
            report.differences.append(Difference(
                "altered-event", f"event {entry.subject_id}: journalled bytes do not decode "
                f"({exc.field}: {exc.rule})"))
            continue
        if not _is_event(event, entry.subject_id):
            report.differences.append(Difference(
                "altered-event", f"journal entry names event {entry.subject_id} but its bytes "
                "carry another event id"))
            continue
        block = event.subject.linkage_block
        if key != block_key(block):
            # The correlator refuses an event not keyed by its block, so this record is not
            # the one it accepted (and replay would file it under the wrong block).
            report.differences.append(Difference(
                "altered-event", f"event {entry.subject_id}: its ingress record's key is not "
                "its linkage block"))
            continue
        state = states.get(block) or initial_state()
        states[block], raised = step(rules_for(block), state, event)
        alerts.extend(raised)
        report.events_replayed += 1
    return alerts


def _reset(entry: AuditEntry, states: dict[int, BlockState], report: ReplayReport) -> None:
    block = subject_block(entry.subject_id)
    if block is None:
        report.differences.append(Difference(
            "altered-entry", f"BLOCK_STATE_RESET entry {entry.entry_id} names no "
            f"linkage block ({entry.subject_id!r})"))
        return
    states.pop(block, None)
    report.blocks_reset.append(block)


def _check_refusal(entry: AuditEntry, ingress: Mapping[bytes, tuple[bytes, bytes | None]],
                   states: Mapping[int, BlockState], rules_for: Callable[[int], Rules],
                   report: ReplayReport, decoders: Decoders) -> None:
    found = ingress.get(entry.digest)
    if found is None:
        return
    raw, key = found
    try:
        event = decoders.event(raw)
    except ValidationError:
        return  # a broken contract: nothing the core decides
    if not _is_event(event, entry.subject_id):
        return  # a broken contract names the bytes' digest, not the event
    block = event.subject.linkage_block
    if key != block_key(block):
        return
    state = states.get(block) or initial_state()
    rules = rules_for(block)
    # Refused as beyond the history limit, or as taking a full block past the core's caps.
    if not (too_late(rules, state, event) or block_full(rules, state, event)):
        report.differences.append(Difference(
            "wrongly-refused", f"event {entry.subject_id}: dead-lettered as beyond the history "
            "limit or its block's caps, but replay finds it within them"))


def _is_event(record: object, event_id: str) -> TypeGuard[IngressEvent]:
    """Whether a decoded record is the ingress event the journal entry names."""
    return (isinstance(record, WarningSignEvent | MissingEpisodeEvent)
            and record.event_id == event_id)


def missing_event(entry: AuditEntry) -> Difference:
    return Difference("altered-event", f"event {entry.subject_id}: no ingress record has the "
                      "bytes the correlator journalled (altered or removed)")


def _evidence_key(a: CorrelatedAlert) -> tuple[str, ...]:
    return tuple(sorted(e.event_id for e in a.evidence))


def _differing_fields(a: CorrelatedAlert, b: CorrelatedAlert, ignore: set[str]) -> list[str]:
    return [f.name for f in fields(CorrelatedAlert)
            if f.name not in ignore and getattr(a, f.name) != getattr(b, f.name)]


def _describe(fields_: list[str], replayed: CorrelatedAlert, emitted: CorrelatedAlert) -> str:
    parts = []
    for name in fields_:
        if name == "evidence":
            r = {e.event_id: e.weight for e in replayed.evidence}
            m = {e.event_id: e.weight for e in emitted.evidence}
            only_r = sorted(set(r) - set(m))
            only_m = sorted(set(m) - set(r))
            reweighted = sorted(k for k in set(r) & set(m) if r[k] != m[k])
            parts.append(f"evidence (replay only: {only_r}, emitted only: {only_m}, "
                         f"weights differ: {reweighted})")
        elif name in ("score", "tier", "rule"):
            parts.append(f"{name} {getattr(emitted, name)} -> {getattr(replayed, name)}")
        else:
            parts.append(name)
    return ", ".join(parts)


def compare(replayed: Sequence[CorrelatedAlert], emitted: Sequence[CorrelatedAlert],
            report: ReplayReport, other_rules: bool) -> None:
    """Pair replayed with emitted alerts and record matches and differences."""
    ignore = _VERSION_FIELDS if other_rules else set()
    rep = list({a.alert_id: a for a in replayed}.values())
    emi = list({a.alert_id: a for a in emitted}.values())  # at-least-once: drop redeliveries
    report.replayed_alerts, report.emitted_alerts = len(rep), len(emi)
    passes: list[Callable[[CorrelatedAlert], object]] = [
        lambda a: a.alert_id,
        lambda a: (a.cluster_id, a.tier, a.rule, _evidence_key(a)),
        lambda a: (a.cluster_id, a.tier),
    ]
    for key in passes:
        pool: dict[object, list[CorrelatedAlert]] = defaultdict(list)
        for a in emi:
            pool[key(a)].append(a)
        left: list[CorrelatedAlert] = []
        # By identity: list.remove compares alerts field by field, quadratic in the alerts
        # (it was most of a 60,000-event replay's time).
        paired: set[int] = set()
        for a in rep:
            candidates = pool.get(key(a))
            if not candidates:
                left.append(a)
                continue
            b = candidates.pop(0)
            paired.add(id(b))
            diff = _differing_fields(a, b, ignore)
            if diff:
                report.differences.append(Difference(
                    "differing", f"alert {b.alert_id} (cluster {b.cluster_id}, {b.tier}): "
                    + _describe(diff, a, b), b.alert_id, b.cluster_id))
            else:
                report.matches += 1
        rep = left
        emi = [b for b in emi if id(b) not in paired]
    for a in rep:
        report.differences.append(Difference(
            "missing", f"replay raises {a.tier} alert {a.alert_id} for cluster {a.cluster_id} "
            f"({a.rule}, score {a.score:g}) that was not emitted", a.alert_id, a.cluster_id))
    for b in emi:
        report.differences.append(Difference(
            "unexpected", f"emitted {b.tier} alert {b.alert_id} for cluster {b.cluster_id} "
            f"({b.rule}, score {b.score:g}) is not raised by replay", b.alert_id, b.cluster_id))


def check_delivered(known: Mapping[str, str], delivered: Iterable[tuple[str, str]],
                    where: str, report: ReplayReport) -> None:
    """Every delivered alert (routed or in an inbox) must be one replay raises, unchanged.

    `known` and `delivered` hold (alert id, `alert_fingerprint`) pairs: of the replayed alerts,
    and of the delivered copies.
    """
    for alert_id, fingerprint in delivered:
        if alert_id not in known:
            report.differences.append(Difference(
                where, f"alert {alert_id} in {where} is not raised by replay", alert_id))
        elif known[alert_id] != fingerprint:
            report.differences.append(Difference(
                where, f"alert {alert_id} in {where} differs from the replayed alert", alert_id))


def alert_fingerprint(a: CorrelatedAlert) -> str:
    """What a delivered copy of an alert must agree on: the decision and its evidence."""
    return fingerprint(a.alert_id, a.rules_version, a.cluster_id, str(a.tier), a.rule, a.score,
                       [e.event_id for e in a.evidence])


def fingerprint(alert_id: str, rules_version: str, cluster_id: str, tier: str, rule: str,
                score: float, evidence_ids: Iterable[str]) -> str:
    text = "|".join([alert_id, rules_version, cluster_id, tier, rule, f"{score:.6f}",
                     *sorted(evidence_ids)])
    return hashlib.sha256(text.encode()).hexdigest()


def summary(report: ReplayReport, other_rules: bool) -> str:
    head = ("replay with other rules" if other_rules else "replay") + (
        f": {report.events_replayed} events replayed ({report.ingress_records} ingress "
        f"records read), {report.replayed_alerts} alerts replayed, {report.emitted_alerts} "
        f"emitted; {report.matches} match")
    lines = [head]
    if report.unaccounted_events:
        lines.append(f"note: {report.unaccounted_events} ingress record(s) were never "
                     "journalled by the correlator (not yet processed)")
    if report.blocks_reset:
        lines.append(f"note: the correlator reset {len(report.blocks_reset)} linkage block "
                     "state(s) it could not read (a quarantined changelog record: see the "
                     "dead-letter topic), and replay did the same at the same point, so alerts "
                     "after it do not count the history before it; blocks "
                     + ", ".join(str(b) for b in sorted(set(report.blocks_reset))))
    if report.ok:
        lines.append("OK: every emitted alert is re-derived exactly")
    else:
        kinds = sorted({d.kind for d in report.differences})
        lines.append("DIFFERENCES: " + ", ".join(f"{report.count(k)} {k}" for k in kinds))
        lines += [f"  [{d.kind}] {d.message}" for d in report.differences]
    return "\n".join(lines)
