"""Verification of the audit log: pure findings from the stored rows, checkpoints and proofs.

The verifier trusts only what it checks itself:
- signed checkpoints (from the ledger and from the note each carries on `audit`): the log's
  head at a size, vouched for by the sink's key, which the auditor holds, not the store;
- anchors from outside the hub (a checkpoint the auditor pinned earlier, one a witness
  cosigned): the log's newest head must be a consistent extension of each, else the log was
  forked (rewritten) or rolled back, whatever the hub's own signatures say;
- per entry, the entry's bytes: the leaf hash is computed here, and the proof that puts it in
  a signed tree comes from a proof source (`proofs.py`) that is not trusted, so a forged proof
  or a row altered after it was signed fails;
- the topic (append-only, kept for ever): names which stored row was changed, removed, inserted
  or moved, where the checkpoints alone can only say in which interval the log went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

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
from safehub.services.audit.merkle import ProofError, leaf_hash, verify_consistency
from safehub.services.audit.merkle import verify_inclusion as check_inclusion
from safehub.services.audit.proofs import LedgerProofs, ProofSource

LISTED = 5  # failing rows named in one finding; the count says how many more


@dataclass(frozen=True, slots=True)
class TopicRecord:
    offset: int
    value: bytes
    checkpoint_note: str | None  # the sink's note header, on CHECKPOINT records


@dataclass(frozen=True, slots=True)
class Anchor:
    """A checkpoint trusted from outside the hub, already checked against the hub's key (and,
    for a witnessed one, the witness's)."""

    what: str  # "the pinned checkpoint", "the checkpoint the witness cosigned"
    checkpoint: SignedCheckpoint
    witnessed: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    # changed, removed, inserted, reordered, bad-signature, forked, rolled-back, truncated,
    # mismatch, unverified, unwitnessed, empty
    kind: str
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
    checks: list[str] = field(default_factory=list)  # what was verified against what
    accepted: SignedCheckpoint | None = None  # the head an OK report vouches for

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, message: str, seq: int | None = None,
            offset: int | None = None) -> None:
        self.findings.append(Finding(kind, message, seq, offset))

    def as_dict(self) -> dict[str, object]:
        head = None if self.accepted is None else {
            "size": self.accepted.head.size, "root": self.accepted.head.root.hex()}
        return {"ok": self.ok, "entries": self.entries, "topic_records": self.topic_records,
                "checkpoints": self.checkpoints, "inclusion_proofs": self.inclusion_proofs,
                "consistency_proofs": self.consistency_proofs,
                "accepted_head": head if self.ok else None, "checks": self.checks,
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


def _rows(rows: Sequence[int]) -> str:
    named = ", ".join(str(r) for r in rows[:LISTED])
    return named + (f" and {len(rows) - LISTED} more" if len(rows) > LISTED else "")


class _Chain:
    """Every stored entry proven, through the proof source, to be in the signed tree of the
    first checkpoint that covers it; each checkpoint proven to extend the one before."""

    def __init__(self, stored: Sequence[StoredEntry], proofs: ProofSource,
                 report: Report) -> None:
        self._stored = stored
        self._proofs = proofs
        self._report = report
        self.last_good = 0  # every entry below it is proven in a signed tree

    def include(self, start: int, size: int, root: bytes) -> bool:
        if start == size:
            return True  # a checkpoint at an earlier one's size: the consistency proof covers it
        failed: list[int] = []
        reasons: list[str] = []
        for index in range(start, size):
            try:
                proof = self._proofs.inclusion(index, size)
                check_inclusion(index, size, leaf_hash(self._stored[index].raw), proof, root)
            except (ProofError, ValueError) as exc:
                failed.append(self._stored[index].seq)
                reasons.append(str(exc))
                continue
            self._report.inclusion_proofs += 1
        if not failed:
            self._report.checks.append(
                f"stored rows {start}..{size - 1}: each one's bytes proven in the signed tree of"
                f" size {size} (inclusion proofs from the proof source, checked here)")
            return True
        first = self._stored[start].seq if start < len(self._stored) else start
        self._report.add(
            "mismatch", f"stored rows {first}..{first + size - start - 1}: {len(failed)} of "
            f"{size - start} inclusion proofs against the signed root of size {size} fail (rows "
            f"{_rows(failed)}; {reasons[0]}): an entry between {self.last_good} and {size - 1} "
            "differs from what was signed", failed[0])
        return False

    def extend(self, first: SignedCheckpoint, second: SignedCheckpoint) -> bool:
        a, b = first.head, second.head
        try:
            verify_consistency(a.size, b.size, a.root, b.root,
                               self._proofs.consistency(a.size, b.size))
        except (ProofError, ValueError) as exc:
            self._report.add("forked", f"the signed checkpoints of size {a.size} and {b.size}: "
                             f"the consistency proof served for them fails ({exc}): the "
                             f"checkpoint of size {b.size} is not shown to extend {a.size}")
            return False
        self._report.consistency_proofs += 1
        return True


def _check_anchor(anchor: Anchor, head: SignedCheckpoint | None, stored: int,
                  proofs: ProofSource, report: Report) -> None:
    """The log's newest signed head against a checkpoint trusted from outside the hub."""
    a = anchor.checkpoint.head
    what = f"{anchor.what} (size {a.size}, root {a.root.hex()[:16]}...)"
    if head is None or head.head.size < a.size:
        newest = "no signed checkpoint" if head is None else f"size {head.head.size}"
        report.add("rolled-back", f"{what}: the log's newest signed checkpoint has "
                   f"{newest} and the store holds {stored} entries: the log was rolled back "
                   "or truncated")
        return
    b = head.head
    if b.size == a.size:
        if b.root != a.root:
            report.add("forked", f"{what}: the log's signed checkpoint of the same size has "
                       f"root {b.root.hex()[:16]}...: the log was rewritten")
        else:
            report.checks.append(f"{what} is the log's newest signed head")
        return
    try:
        verify_consistency(a.size, b.size, a.root, b.root, proofs.consistency(a.size, b.size))
    except (ProofError, ValueError) as exc:
        report.add("forked", f"{what}: the log's newest signed head (size {b.size}) is not a "
                   f"consistent extension of it ({exc}): the log was rewritten")
        return
    report.consistency_proofs += 1
    report.checks.append(f"the log's newest signed head (size {b.size}) extends {what} "
                         "(consistency proof from the proof source, checked here)")


def verify_log(stored: Sequence[StoredEntry], stored_notes: Sequence[str],
               topic: Sequence[TopicRecord] | None, key: VerifyKey, *,
               proofs: ProofSource | None = None, anchors: Sequence[Anchor] = (),
               require_witness: bool = False, prior: Sequence[Finding] = ()) -> Report:
    """`proofs` defaults to proofs over the stored rows' leaf hashes (what the sink would
    serve); `require_witness`: the accepted head must be one a witness cosigned (an anchor
    with `witnessed`); `prior`: findings of the caller's own (an anchor that did not load)."""
    report = Report(entries=len(stored), topic_records=None if topic is None else len(topic),
                    findings=list(prior))
    for s in stored:
        if leaf_hash(s.raw) != s.leaf_hash:
            report.add("changed", f"stored row {s.seq} ({_label(s.entry_id)}): its bytes do not "
                       "give its stored leaf hash", s.seq, s.topic_offset)
    if topic is not None:
        compare_with_topic(stored, topic, report)
    checkpoints = _checkpoint_sources(stored_notes, topic, key, report)
    if not stored and not checkpoints and not anchors:
        report.add("empty", "nothing to verify: the store holds no entries and no signed "
                   "checkpoint, and an empty log proves nothing (pass --pin with a checkpoint "
                   "saved earlier to tell a wiped log from a new one)")
        return report
    if proofs is None:
        try:
            proofs = LedgerProofs(s.leaf_hash for s in stored)
        except ProofError as exc:
            report.add("unverified", f"no proofs can be served over the stored rows: {exc}")
            return report

    by_size: dict[int, list[SignedCheckpoint]] = {}
    for cp in checkpoints:
        roots = by_size.setdefault(cp.head.size, [])
        if all(c.head.root != cp.head.root for c in roots):
            roots.append(cp)
    for size, heads in sorted(by_size.items()):
        if len(heads) > 1:
            report.add("forked", f"{len(heads)} different signed roots for tree size {size}")

    chain = _Chain(stored, proofs, report)
    intact = True  # every checkpoint so far proven and extended by the next
    previous: list[SignedCheckpoint] = []
    newest: SignedCheckpoint | None = None
    for size, heads in sorted(by_size.items()):
        if size > len(stored):
            report.add("truncated", f"the signed checkpoint of size {size} covers {size} "
                       f"entries but the store holds only {len(stored)}: entries "
                       f"{len(stored)}..{size - 1} are missing")
            intact = False
            break
        start = previous[0].head.size if previous else 0
        included = all([chain.include(start, size, h.head.root) for h in heads])
        extended = included and all(chain.extend(p, h) for p in previous for h in heads)
        intact = intact and included and extended and len(heads) == 1
        if intact:
            chain.last_good = size
        previous, newest = heads, heads[0]
    if checkpoints and newest is not None and newest.head.size < len(stored):
        report.notes.append(f"{len(stored) - newest.head.size} stored entries after the newest "
                            f"signed checkpoint (size {newest.head.size}) are not signed yet")
    elif stored and not checkpoints:
        report.add("unverified", "no signed checkpoint covers the stored log")

    for anchor in anchors:
        _check_anchor(anchor, newest, len(stored), proofs, report)
    witnessed = [a.checkpoint for a in anchors if a.witnessed]
    if require_witness and not witnessed and all(f.kind != "unwitnessed" for f in prior):
        report.add("unwitnessed", "no head cosigned by the witness key: the log's head is "
                   "vouched for by the hub's key alone")
    report.accepted = max(witnessed, key=lambda c: c.head.size) if witnessed else newest
    if report.ok and witnessed and newest is not None and report.accepted is not None \
            and newest.head.size > report.accepted.head.size:
        report.notes.append(f"accepted head: size {report.accepted.head.size} (cosigned by the "
                            f"witness); the hub signed up to size {newest.head.size} since, not "
                            "yet cosigned")
    return report


def summary(report: Report) -> str:
    lines = [
        f"audit log: {report.entries} stored entries, {report.checkpoints} valid checkpoints, "
        f"{report.inclusion_proofs} inclusion proofs and {report.consistency_proofs} "
        f"consistency proofs verified"
        + ("" if report.topic_records is None
           else f", compared with {report.topic_records} topic records"),
    ]
    lines += [f"checked: {c}" for c in report.checks]
    lines += [f"note: {n}" for n in report.notes]
    if report.ok and report.accepted is not None:
        lines.append(f"OK: the log is intact up to the signed head of size "
                     f"{report.accepted.head.size} (root {report.accepted.head.root.hex()})")
    elif report.ok:
        lines.append("OK")
    else:
        lines.append(f"FAILED: {len(report.findings)} finding(s)")
        lines += [f"  [{f.kind}] {f.message}" for f in report.findings]
    return "\n".join(lines)
