"""Verification of the audit log: pure findings from the stored rows, the checkpoints and the topic.

What each source proves:
- signed checkpoints (from the ledger and from the note each carries on `audit`): the log's
  head at a size, vouched for by the sink's key, which the auditor holds, not the store;
- the stored rows: recomputed leaf hashes must give every checkpoint's root (inclusion proofs
  for each entry, consistency proofs between successive checkpoints);
- the topic (append-only, kept for ever): names which stored row was changed, removed, inserted
  or moved, where the checkpoints alone can only say in which interval the log went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise

from nacl.signing import VerifyKey

from safehub.errors import ValidationError
from safehub.schemas.codec import decode
from safehub.schemas.records import AuditEntry
from safehub.services.audit.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    parse_note,
    verify,
)
from safehub.services.audit.ledger import StoredEntry
from safehub.services.audit.merkle import MerkleTree, ProofError, leaf_hash, verify_consistency
from safehub.services.audit.merkle import verify_inclusion as check_inclusion


@dataclass(frozen=True, slots=True)
class TopicRecord:
    offset: int
    value: bytes
    checkpoint_note: str | None  # the sink's note header, on CHECKPOINT records


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # changed, removed, inserted, reordered, bad-signature, forked, mismatch, ...
    message: str
    seq: int | None = None
    topic_offset: int | None = None


@dataclass(slots=True)
class Report:
    entries: int = 0
    topic_records: int | None = None
    checkpoints: int = 0
    inclusion_proofs: int = 0
    consistency_proofs: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, message: str, seq: int | None = None,
            offset: int | None = None) -> None:
        self.findings.append(Finding(kind, message, seq, offset))

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "entries": self.entries, "topic_records": self.topic_records,
                "checkpoints": self.checkpoints, "inclusion_proofs": self.inclusion_proofs,
                "consistency_proofs": self.consistency_proofs,
                "findings": [asdict(f) for f in self.findings], "notes": self.notes}


def _label(entry_id: str | None) -> str:
    return f"entry {entry_id}" if entry_id else "an undecodable entry"


def _topic_label(value: bytes) -> str:
    """The entry a topic record holds, for findings about rows that are gone or moved."""
    try:
        return _label(decode(value, AuditEntry).entry_id)
    except ValidationError:
        return _label(None)


def compare_with_topic(stored: Sequence[StoredEntry], topic: Sequence[TopicRecord],
                       report: Report) -> None:
    """Name each stored row that differs from the record it claims to be."""
    by_offset = {r.offset: r.value for r in topic}
    offset_of_value: dict[bytes, int] = {}
    for r in topic:
        offset_of_value.setdefault(r.value, r.offset)
    stored_offsets = {s.topic_offset for s in stored}
    last_stored = max(stored_offsets, default=-1)
    for want, s in enumerate(stored):
        if s.seq != want:
            report.add("removed" if s.seq > want else "inserted",
                       f"stored row numbers jump from {want - 1} to {s.seq}", s.seq,
                       s.topic_offset)
            break
    previous = -1
    for s in stored:
        original = by_offset.get(s.topic_offset)
        if original is None:
            report.add("inserted", f"stored row {s.seq} ({_label(s.entry_id)}) claims offset "
                       f"{s.topic_offset}, which the audit topic does not have", s.seq,
                       s.topic_offset)
        elif original != s.raw:
            elsewhere = offset_of_value.get(s.raw)
            if elsewhere is not None:
                report.add("reordered", f"stored row {s.seq} holds the record of offset "
                           f"{elsewhere} ({_label(s.entry_id)}), not of offset "
                           f"{s.topic_offset} ({_topic_label(original)})", s.seq,
                           s.topic_offset)
            else:
                report.add("changed", f"stored row {s.seq} ({_label(s.entry_id)}) differs from "
                           f"the record at offset {s.topic_offset}", s.seq, s.topic_offset)
        if s.topic_offset <= previous:
            report.add("reordered", f"stored row {s.seq} (offset {s.topic_offset}) comes after "
                       f"offset {previous}", s.seq, s.topic_offset)
        previous = max(previous, s.topic_offset)
    tail = [r.offset for r in topic if r.offset > last_stored]
    for r in topic:
        if r.offset <= last_stored and r.offset not in stored_offsets:
            report.add("removed", f"the record at offset {r.offset} is missing from the store"
                       f" ({_topic_label(r.value)})", None, r.offset)
    if tail:
        # Indistinguishable from a sink that is a few records behind, so a note, not a
        # failure; a removed tail that a checkpoint covers is a failure below.
        report.notes.append(f"{len(tail)} record(s) at offsets {tail[0]}..{tail[-1]} are on "
                            "the audit topic but not yet in the store")


def _checkpoint_sources(stored_notes: Sequence[str], topic: Sequence[TopicRecord] | None,
                        key: VerifyKey, report: Report) -> list[SignedCheckpoint]:
    notes: dict[str, str] = {}
    for note in stored_notes:
        notes.setdefault(note, "the store")
    for r in topic or ():
        if r.checkpoint_note is not None:
            notes.setdefault(r.checkpoint_note, f"offset {r.offset} of the audit topic")
    good: list[SignedCheckpoint] = []
    for note, source in notes.items():
        try:
            cp = parse_note(note)
            verify(cp, key)
        except CheckpointError as exc:
            report.add("bad-signature", f"checkpoint from {source}: {exc}")
            continue
        good.append(cp)
    report.checkpoints = len(good)
    return sorted(good, key=lambda c: c.head.size)


def verify_log(stored: Sequence[StoredEntry], stored_notes: Sequence[str],
               topic: Sequence[TopicRecord] | None, key: VerifyKey) -> Report:
    report = Report(entries=len(stored), topic_records=None if topic is None else len(topic))
    for s in stored:
        if leaf_hash(s.raw) != s.leaf_hash:
            report.add("changed", f"stored row {s.seq} ({_label(s.entry_id)}): its bytes do not "
                       "give its stored leaf hash", s.seq, s.topic_offset)
    if topic is not None:
        compare_with_topic(stored, topic, report)
    tree = MerkleTree(leaf_hash(s.raw) for s in stored)
    checkpoints = _checkpoint_sources(stored_notes, topic, key, report)

    by_size: dict[int, set[bytes]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.head.size, set()).add(cp.head.root)
    for size, roots in sorted(by_size.items()):
        if len(roots) > 1:
            report.add("forked", f"{len(roots)} different signed roots for tree size {size}")

    matched: SignedCheckpoint | None = None
    last_good_size = 0
    for cp in checkpoints:
        size = cp.head.size
        if size > tree.size:
            report.add("removed", f"checkpoint of size {size} is signed but the store holds "
                       f"only {tree.size} entries")
            continue
        if tree.root(size) != cp.head.root:
            report.add("mismatch", f"stored entries do not reproduce the signed root of size "
                       f"{size}: an entry between {last_good_size} and {size - 1} was altered")
        else:
            last_good_size = size
            matched = cp
    for first, second in pairwise(checkpoints):
        a, b = first.head, second.head
        if a.size == b.size or b.size > tree.size or tree.root(b.size) != b.root:
            continue  # forks at equal size and unverifiable heads are reported above
        try:
            verify_consistency(a.size, b.size, a.root, b.root,
                               tree.consistency_proof(a.size, b.size))
            report.consistency_proofs += 1
        except ProofError as exc:
            report.add("forked", f"checkpoint of size {a.size} is not an ancestor of the "
                       f"checkpoint of size {b.size}: {exc}")
    if matched is not None:
        size, root = matched.head.size, matched.head.root
        for index, s in enumerate(stored[:size]):
            try:
                check_inclusion(index, size, leaf_hash(s.raw), tree.inclusion_proof(index, size),
                                root)
                report.inclusion_proofs += 1
            except (ProofError, ValueError) as exc:
                report.add("changed", f"stored row {s.seq} is not in the signed tree of size "
                           f"{size}: {exc}", s.seq, s.topic_offset)
    elif stored:
        report.add("unverified", "no signed checkpoint matches the stored log")
    return report


def summary(report: Report) -> str:
    lines = [
        f"audit log: {report.entries} stored entries, {report.checkpoints} valid checkpoints, "
        f"{report.inclusion_proofs} inclusion proofs and {report.consistency_proofs} "
        f"consistency proofs verified"
        + ("" if report.topic_records is None
           else f", compared with {report.topic_records} topic records"),
    ]
    lines += [f"note: {n}" for n in report.notes]
    if report.ok:
        lines.append("OK: the log is intact and consistent with every checkpoint")
    else:
        lines.append(f"FAILED: {len(report.findings)} finding(s)")
        lines += [f"  [{f.kind}] {f.message}" for f in report.findings]
    return "\n".join(lines)
