"""The witness cosigns (C2SP cosignature/v1) only a consistent extension of what it cosigned
before, checking the proof itself; verify accepts a cosignature only by the witness's key."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from safehub.errors import ConfigError
from safehub.services.audit.checkpoint import CheckpointError, SignedCheckpoint, TreeHead, sign
from safehub.services.audit.merkle import MerkleTree, leaf_hash
from safehub.services.audit.witness import (
    CosignedCheckpoint,
    WitnessRefusal,
    check_extension,
    cosign,
    load_witness_key,
    parse_cosigned,
    save_state,
    signed_message,
    verify_cosignature,
)

HUB = SigningKey(hashlib.sha256(b"hub key").digest())
WITNESS = SigningKey(hashlib.sha256(b"witness key").digest())
NAME = "witness.test/w1"
TREE = MerkleTree(leaf_hash(f"entry {i}".encode()) for i in range(20))
FORK = MerkleTree(leaf_hash(f"forged {i}".encode()) for i in range(20))


def head(size: int, tree: MerkleTree = TREE) -> SignedCheckpoint:
    return sign(TreeHead("safehub.test/audit", size, tree.root(size)), HUB)


def test_a_cosignature_is_a_cosignature_v1_note_line() -> None:
    cp = head(12)
    c = cosign(cp, WITNESS, NAME, 1_700_000_000)
    note = CosignedCheckpoint(cp, (c,)).note()
    assert note.startswith(cp.note())
    line = note[len(cp.note()):]
    assert line.startswith(f"\u2014 {NAME} ")
    blob = base64.b64decode(line.split(" ")[-1])
    key_id = hashlib.sha256(NAME.encode() + b"\n\x04" + bytes(WITNESS.verify_key)).digest()[:4]
    assert blob[:4] == key_id and int.from_bytes(blob[4:12], "big") == 1_700_000_000
    message = b"cosignature/v1\ntime 1700000000\n" + cp.head.body()
    assert signed_message(cp.head, 1_700_000_000) == message
    WITNESS.verify_key.verify(message, blob[12:])
    parsed = parse_cosigned(note)
    assert parsed.checkpoint == cp and verify_cosignature(parsed, WITNESS.verify_key) == c


def test_only_the_witness_key_counts() -> None:
    cp = head(12)
    hub_made = CosignedCheckpoint(cp, (cosign(cp, HUB, NAME, 1),))  # the hub forging one
    with pytest.raises(CheckpointError, match="no valid cosignature by the witness key"):
        verify_cosignature(parse_cosigned(hub_made.note()), WITNESS.verify_key)
    other_head = cosign(head(13), WITNESS, NAME, 1)  # a real cosignature, of another head
    moved = CosignedCheckpoint(cp, (other_head,))
    with pytest.raises(CheckpointError):
        verify_cosignature(parse_cosigned(moved.note()), WITNESS.verify_key)
    with pytest.raises(CheckpointError):
        verify_cosignature(parse_cosigned(cp.note()), WITNESS.verify_key)


def test_the_witness_cosigns_extensions_only() -> None:
    assert "first checkpoint" in check_extension(None, head(5), None)
    assert "extends" in check_extension(head(5), head(12), TREE.consistency_proof(5, 12))
    assert "already cosigned" in check_extension(head(12), head(12), None)
    with pytest.raises(WitnessRefusal, match="rollback"):
        check_extension(head(12), head(5), None)
    with pytest.raises(WitnessRefusal, match="fork: a second root for size 12"):
        check_extension(head(12), head(12, FORK), None)
    with pytest.raises(WitnessRefusal, match="not a consistent extension"):
        check_extension(head(5), head(12, FORK), FORK.consistency_proof(5, 12))
    forged = TREE.consistency_proof(5, 12)
    forged[0] = bytes(32)
    with pytest.raises(WitnessRefusal, match="not a consistent extension"):
        check_extension(head(5), head(12), forged)
    with pytest.raises(WitnessRefusal, match="no consistency proof"):
        check_extension(head(5), head(12), None)


def test_the_witness_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "witness.key"
    path.write_text(bytes(WITNESS).hex())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_witness_key(path)
    path.chmod(0o600)
    assert bytes(load_witness_key(path)) == bytes(WITNESS)


def test_state_is_replaced_whole_and_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cp = head(12)
    cosigned = CosignedCheckpoint(cp, (cosign(cp, WITNESS, NAME, 2),))
    save_state(state, cosigned)
    assert state.stat().st_mode & 0o777 == 0o600
    assert parse_cosigned(state.read_text()) == cosigned
    assert not list(tmp_path.glob("*.tmp"))
