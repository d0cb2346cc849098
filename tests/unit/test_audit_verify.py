"""The verifier holds only signed checkpoints and entries; proofs come from a source it does not
trust. A lying source, a rewritten or rolled-back log, an empty or truncated one: each fails."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from safehub.services.audit.checkpoint import CheckpointError, SignedCheckpoint, TreeHead, sign
from safehub.services.audit.ledger import StoredEntry
from safehub.services.audit.merkle import MerkleTree, leaf_hash
from safehub.services.audit.proofs import LedgerProofs
from safehub.services.audit.verifier import load_anchor
from safehub.services.audit.verify import Anchor, Finding, Report, summary, verify_log
from safehub.services.audit.witness import CosignedCheckpoint, cosign

KEY = SigningKey(hashlib.sha256(b"unit audit key").digest())
ORIGIN = "safehub.test/audit"
SIZES = (8, 16, 21)


def raws(n: int = 21, altered: int | None = None) -> list[bytes]:
    out = [f"entry {i}".encode() for i in range(n)]
    if altered is not None:
        out[altered] = b"forged " + out[altered]
    return out


def rows(values: Sequence[bytes]) -> list[StoredEntry]:
    return [StoredEntry(i, i, f"{i:032x}", v, leaf_hash(v)) for i, v in enumerate(values)]


def checkpoint(values: Sequence[bytes], size: int) -> SignedCheckpoint:
    return sign(TreeHead(ORIGIN, size, MerkleTree(leaf_hash(v) for v in values).root(size)), KEY)


def notes(values: Sequence[bytes], sizes: Sequence[int] = SIZES) -> list[str]:
    return [checkpoint(values, s).note() for s in sizes]


def run(stored: Sequence[StoredEntry], cps: Sequence[str], **kw: object) -> tuple[Report, str]:
    report = verify_log(stored, cps, None, KEY.verify_key, **kw)  # type: ignore[arg-type]
    return report, summary(report)


def kinds(report: Report) -> set[str]:
    return {f.kind for f in report.findings}


def test_an_intact_log_is_proven_entry_by_entry() -> None:
    report, out = run(rows(raws()), notes(raws()))
    assert report.ok, out
    assert report.inclusion_proofs == 21 and report.consistency_proofs == 2
    assert report.accepted is not None and report.accepted.head.size == 21
    assert "stored rows 8..15: each one's bytes proven in the signed tree of size 16" in out


class Forger:
    """A proof source that flips one byte of every proof it serves for `index`."""

    def __init__(self, honest: LedgerProofs, index: int | None = None,
                 consistency: bool = False) -> None:
        self._honest, self._index, self._consistency = honest, index, consistency

    def inclusion(self, index: int, size: int) -> list[bytes]:
        proof = list(self._honest.inclusion(index, size))
        if index == self._index:
            proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        return proof

    def consistency(self, first: int, second: int) -> list[bytes]:
        proof = list(self._honest.consistency(first, second))
        if self._consistency:
            proof[-1] = bytes(32)
        return proof


def test_a_forged_inclusion_proof_fails() -> None:
    values = raws()
    honest = LedgerProofs(leaf_hash(v) for v in values)
    report, out = run(rows(values), notes(values), proofs=Forger(honest, index=11))
    assert not report.ok
    assert kinds(report) == {"mismatch"}
    assert "1 of 8 inclusion proofs against the signed root of size 16 fail (rows 11;" in out


def test_a_forged_consistency_proof_fails() -> None:
    values = raws()
    honest = LedgerProofs(leaf_hash(v) for v in values)
    report, out = run(rows(values), notes(values), proofs=Forger(honest, consistency=True))
    assert kinds(report) == {"forked"}
    assert "the signed checkpoints of size 8 and 16: the consistency proof served" in out


def test_a_row_altered_after_it_was_signed_fails_whatever_the_source_serves() -> None:
    original, forged = raws(), raws(altered=5)
    # A source over the forged rows (leaf hashes rewritten to match, as a careful forger would).
    report, out = run(rows(forged), notes(original))
    assert kinds(report) == {"mismatch"} and "between 0 and 7" in out
    # A source that still serves the genuine tree: only the altered row fails, and is named.
    report, out = run(rows(forged), notes(original),
                      proofs=LedgerProofs(leaf_hash(v) for v in original))
    assert [f.seq for f in report.findings] == [5]
    assert "1 of 8 inclusion proofs against the signed root of size 8 fail (rows 5;" in out


def test_an_empty_log_is_nothing_to_verify() -> None:
    report, out = run([], [])
    assert not report.ok and kinds(report) == {"empty"}
    assert "nothing to verify" in out


def test_a_truncated_log_fails() -> None:
    values = raws()
    report, out = run(rows(values[:12]), notes(values))
    assert "truncated" in kinds(report)
    assert "the signed checkpoint of size 16 covers 16 entries but the store holds only 12" in out
    report, out = run([], notes(values))
    assert "truncated" in kinds(report)


def test_entries_past_the_newest_checkpoint_are_a_note() -> None:
    report, out = run(rows(raws()), notes(raws(), (8, 16)))
    assert report.ok, out
    assert "5 stored entries after the newest signed checkpoint (size 16)" in out


def pin(values: Sequence[bytes], size: int, witnessed: bool = False) -> Anchor:
    return Anchor("the pinned checkpoint", checkpoint(values, size), witnessed)


def test_a_log_that_extends_the_pin_verifies() -> None:
    values = raws()
    report, out = run(rows(values), notes(values), anchors=[pin(values[:12], 12)])
    assert report.ok, out
    assert "extends the pinned checkpoint (size 12" in out


def test_a_rewritten_log_of_the_same_size_is_a_fork() -> None:
    forged = raws(altered=3)
    report, out = run(rows(forged), notes(forged), anchors=[pin(raws(), 21)])
    assert kinds(report) == {"forked"}
    assert "the log's signed checkpoint of the same size has root" in out


def test_a_rewritten_longer_log_is_a_fork() -> None:
    forged = raws(30, altered=3)
    report, out = run(rows(forged), notes(forged, (8, 16, 30)), anchors=[pin(raws(), 21)])
    assert kinds(report) == {"forked"}
    assert "is not a consistent extension of it" in out


def test_a_shorter_log_than_the_pin_is_a_rollback() -> None:
    values = raws()
    report, out = run(rows(values[:16]), notes(values, (8, 16)), anchors=[pin(values, 21)])
    assert kinds(report) == {"rolled-back"}
    assert "newest signed checkpoint has size 16 and the store holds 16 entries" in out
    report, _ = run([], [], anchors=[pin(values, 21)])
    assert kinds(report) == {"rolled-back"}  # a wiped store with a pin is no longer "empty"


def test_a_required_witness_needs_a_witnessed_head() -> None:
    values = raws()
    report, out = run(rows(values), notes(values), require_witness=True)
    assert kinds(report) == {"unwitnessed"}
    report, out = run(rows(values), notes(values), require_witness=True,
                      anchors=[pin(values, 16, witnessed=True)])
    assert report.ok, out
    assert report.accepted is not None and report.accepted.head.size == 16
    assert "accepted head: size 16 (cosigned by the witness); the hub signed up to size 21" in out


@pytest.mark.parametrize("size", [0, 1, 2, 7, 8, 9, 21])
def test_every_pinned_prefix_is_extended(size: int) -> None:
    values = raws()
    report, out = run(rows(values), notes(values), anchors=[pin(values, size)])
    assert report.ok, out


def test_pins_and_witnessed_files_are_checked_against_their_keys(tmp_path: Path) -> None:
    values = raws()
    witness = SigningKey(hashlib.sha256(b"unit witness").digest())
    good = checkpoint(values, 21)
    path = tmp_path / "pin.txt"
    path.write_text(sign(good.head, SigningKey(bytes(32))).note())  # another hub's key
    with pytest.raises(CheckpointError, match="unknown key"):
        load_anchor(path, "the pinned checkpoint", KEY.verify_key)
    path.write_text(good.note())
    assert load_anchor(path, "the pinned checkpoint", KEY.verify_key).witnessed is False
    with pytest.raises(CheckpointError, match="no valid cosignature"):
        load_anchor(path, "the witnessed checkpoint", KEY.verify_key, witness.verify_key)
    path.write_text(CosignedCheckpoint(good, (cosign(good, witness, "w", 1),)).note())
    anchor = load_anchor(path, "the witnessed checkpoint", KEY.verify_key, witness.verify_key)
    assert anchor.witnessed and anchor.checkpoint == good


def test_a_caller_finding_fails_the_report_and_hides_the_accepted_head() -> None:
    values = raws()
    report, out = run(rows(values), notes(values), require_witness=True,
                      prior=[Finding("unwitnessed", "--witness-key needs --witnessed FILE")])
    assert [f.kind for f in report.findings] == ["unwitnessed"]
    assert "OK" not in out and report.as_dict()["accepted_head"] is None
