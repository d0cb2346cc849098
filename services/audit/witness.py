"""The witness: a second key, held by someone other than the hub, that cosigns a checkpoint only
after checking that it extends the last one it cosigned.

A hub that rewrites its history can re-sign it with its own key; it cannot make the witness
cosign it, because the witness keeps its own copy of the last checkpoint it vouched for and
checks the consistency proof itself. Cosignatures follow C2SP tlog-cosignature (cosignature/v1):
an extra signed-note line whose Ed25519 signature covers "cosignature/v1", the time and the
checkpoint body, so any transparency-log client can check them too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from safehub.errors import ConfigError
from safehub.services.audit.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    TreeHead,
    key_seed,
    parse_note,
)
from safehub.services.audit.merkle import ProofError, verify_consistency

COSIGNATURE_ALG = b"\x04"  # signed-note algorithm byte of cosignature/v1
COSIGNATURE_BLOB = 4 + 8 + 64  # key hash, timestamp, Ed25519 signature


class WitnessRefusal(Exception):
    """The witness will not cosign: the message says which check failed."""


@dataclass(frozen=True, slots=True)
class Cosignature:
    name: str
    key_hash: bytes
    timestamp: int  # seconds since the epoch, as the witness's clock said
    signature: bytes

    def line(self) -> str:
        blob = self.key_hash + self.timestamp.to_bytes(8, "big") + self.signature
        return f"\u2014 {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True, slots=True)
class CosignedCheckpoint:
    checkpoint: SignedCheckpoint  # the hub's signature
    cosignatures: tuple[Cosignature, ...]

    def note(self) -> str:
        return self.checkpoint.note() + "".join(c.line() for c in self.cosignatures)


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_ALG + public_key).digest()[:4]


def signed_message(head: TreeHead, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + head.body()


def cosign(checkpoint: SignedCheckpoint, key: SigningKey, name: str,
           timestamp: int) -> Cosignature:
    if not name or any(c.isspace() for c in name):
        raise ConfigError("a witness name is one word without spaces")
    signature = key.sign(signed_message(checkpoint.head, timestamp)).signature
    return Cosignature(name, key_hash(name, bytes(key.verify_key)), timestamp, signature)


def parse_cosigned(text: str) -> CosignedCheckpoint:
    """A checkpoint with the hub's signature line first and any number of cosignature lines
    after it; lines of other signers (another blob length) are kept out, not refused."""
    body, sep, sigpart = text.partition("\n\n")
    lines = sigpart.rstrip("\n").split("\n") if sep else []
    if not lines or not lines[0]:
        raise CheckpointError("a cosigned checkpoint starts with the hub's signature line")
    checkpoint = parse_note(f"{body}\n\n{lines[0]}\n")
    cosignatures = []
    for line in lines[1:]:
        if not line.startswith("\u2014 ") or len(line[2:].split(" ")) != 2:
            raise CheckpointError("a cosignature line is an em dash, a name and a signature")
        name, blob_text = line[2:].split(" ")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CheckpointError("cosignature base64 is invalid") from exc
        if len(blob) == COSIGNATURE_BLOB:
            cosignatures.append(Cosignature(name, blob[:4], int.from_bytes(blob[4:12], "big"),
                                            blob[12:]))
    return CosignedCheckpoint(checkpoint, tuple(cosignatures))


def verify_cosignature(cosigned: CosignedCheckpoint, witness: VerifyKey) -> Cosignature:
    """The cosignature `witness` made over this very head; CheckpointError if there is none."""
    for c in cosigned.cosignatures:
        if c.key_hash != key_hash(c.name, bytes(witness)):
            continue
        try:
            witness.verify(signed_message(cosigned.checkpoint.head, c.timestamp), c.signature)
        except (BadSignatureError, CryptoError):
            continue
        return c
    raise CheckpointError(f"the checkpoint of size {cosigned.checkpoint.head.size} carries no "
                          f"valid cosignature by the witness key {bytes(witness).hex()[:16]}...")


def check_extension(previous: SignedCheckpoint | None, new: SignedCheckpoint,
                    proof: Sequence[bytes] | None) -> str:
    """What the witness checked before cosigning `new`, or WitnessRefusal. `proof` is the
    consistency proof from `previous` to `new` as the log served it (None: the log served none).
    Both checkpoints' hub signatures are checked by the caller."""
    if previous is None:
        return (f"first checkpoint witnessed (size {new.head.size}): nothing earlier to "
                "compare with")
    a, b = previous.head, new.head
    if a.origin != b.origin:
        raise WitnessRefusal(f"the checkpoint is for log {b.origin}, the witness follows "
                             f"{a.origin}")
    if b.size < a.size:
        raise WitnessRefusal(f"rollback: the checkpoint has size {b.size}, the witness already "
                             f"cosigned size {a.size}")
    if b.size == a.size:
        if b.root != a.root:
            raise WitnessRefusal(f"fork: a second root for size {a.size}, which the witness "
                                 "cosigned with another root")
        return f"size {b.size} already cosigned with this root"
    if proof is None:
        raise WitnessRefusal(f"no consistency proof from size {a.size} to {b.size}")
    try:
        verify_consistency(a.size, b.size, a.root, b.root, proof)
    except ProofError as exc:
        raise WitnessRefusal(f"fork: size {b.size} is not a consistent extension of the "
                             f"cosigned size {a.size}: {exc}") from exc
    return f"size {b.size} extends the cosigned size {a.size} (consistency proof verified)"


def load_witness_key(path: Path) -> SigningKey:
    """The witness's Ed25519 seed in hex, from a file only its owner can read."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the witness key file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the witness key file {path} must be readable by its owner only "
                          "(chmod 600)")
    return SigningKey(key_seed(text, f"the witness key file {path}"))


def save_state(path: Path, cosigned: CosignedCheckpoint) -> None:
    """Replace the witness's state in one step (a crash leaves the old or the new, never half),
    readable by the witness only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cosigned.note())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
