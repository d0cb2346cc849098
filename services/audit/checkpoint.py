"""Signed checkpoints: a tree head (origin, size, root) the audit sink vouches for with Ed25519.

The text is the transparency-log checkpoint body (origin line, decimal size, base64 root, each
ending in a newline), so any signed-note tool can read it; the signature line follows the
signed-note convention (an em dash, the key name, base64 of a 4-byte key hash and the signature).
The signature covers exactly the body, so a checkpoint is verified from its own bytes and the
auditor's copy of the public key, never from anything in the audited store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from safehub.errors import ConfigError
from safehub.services.audit.merkle import HASH_SIZE
from safehub.settings import AuditEnv, load

KEY_ENV = "SAFEHUB_AUDIT_SIGNING_KEY"
PUBLIC_KEY_ENV = "SAFEHUB_AUDIT_PUBLIC_KEY"
ED25519_ALG = b"\x01"  # signed-note algorithm byte for Ed25519


class CheckpointError(ValueError):
    """A checkpoint is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class TreeHead:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        """The canonical text the signature covers."""
        if not self.origin or any(c.isspace() for c in self.origin):
            raise CheckpointError("origin must be one word without spaces")
        if len(self.root) != HASH_SIZE or self.size < 0:
            raise CheckpointError("a tree head needs a 32-byte root and a size >= 0")
        return (f"{self.origin}\n{self.size}\n"
                f"{base64.b64encode(self.root).decode()}\n").encode()


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    head: TreeHead
    key_hash: bytes  # 4 bytes: which key signed
    signature: bytes  # 64 bytes Ed25519

    def note(self) -> str:
        """The whole signed note: body, blank line, signature line."""
        sig = base64.b64encode(self.key_hash + self.signature).decode()
        return self.head.body().decode() + f"\n\u2014 {self.head.origin} {sig}\n"


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALG + public_key).digest()[:4]


def sign(head: TreeHead, key: SigningKey) -> SignedCheckpoint:
    body = head.body()
    signature = key.sign(body).signature
    return SignedCheckpoint(head, key_hash(head.origin, bytes(key.verify_key)), signature)


def verify(checkpoint: SignedCheckpoint, public_key: VerifyKey) -> None:
    """Raise CheckpointError unless the signature is by `public_key` over this very head."""
    if checkpoint.key_hash != key_hash(checkpoint.head.origin, bytes(public_key)):
        raise CheckpointError(
            f"checkpoint of size {checkpoint.head.size} is signed by an unknown key")
    try:
        public_key.verify(checkpoint.head.body(), checkpoint.signature)
    except (BadSignatureError, CryptoError) as exc:
        raise CheckpointError(
            f"checkpoint of size {checkpoint.head.size} has a bad signature") from exc


def parse_note(text: str) -> SignedCheckpoint:
    """Read a signed note back; raises CheckpointError on anything but the exact form."""
    body, sep, sigpart = text.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) != 3:
        raise CheckpointError("a checkpoint has three body lines and a signature line")
    origin, size_text, root_text = lines
    sig_lines = sigpart.rstrip("\n").split("\n")
    if len(sig_lines) != 1 or not sig_lines[0].startswith("\u2014 "):
        raise CheckpointError("a checkpoint has exactly one signature line")
    parts = sig_lines[0][2:].split(" ")
    if len(parts) != 2 or parts[0] != origin:
        raise CheckpointError("the signature line names another origin")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError("tree size is not a canonical decimal")
    try:
        root = base64.b64decode(root_text, validate=True)
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError("checkpoint base64 is invalid") from exc
    if len(blob) != 4 + 64:
        raise CheckpointError("signature blob is not a key hash and an Ed25519 signature")
    checkpoint = SignedCheckpoint(TreeHead(origin, int(size_text), root), blob[:4], blob[4:])
    if checkpoint.note() != text:
        raise CheckpointError("checkpoint text is not canonical")
    return checkpoint


def key_seed(text: str, what: str) -> bytes:
    """An Ed25519 seed (32 bytes) written in hex: the sink's and the witness's keys."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{what} is not hex") from exc
    if len(raw) != 32:
        raise ConfigError(f"{what} must be 32 bytes (64 hex characters)")
    return raw


def load_signing_key(path: Path | None, environ: dict[str, str] | None = None) -> SigningKey:
    """The sink's key: an Ed25519 seed in hex, from a file or SAFEHUB_AUDIT_SIGNING_KEY."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read audit signing key file {path}: {exc}") from exc
        return SigningKey(key_seed(text, f"signing key file {path}"))
    seed = load(AuditEnv, environ).signing_key
    if seed is not None:
        return SigningKey(key_seed(seed.reveal(), KEY_ENV))
    raise ConfigError(f"no audit signing key: set {KEY_ENV} or pass --key-file")


def load_public_key(value: str | None, environ: dict[str, str] | None = None) -> VerifyKey:
    """The auditor's key: hex, or a file holding hex, or SAFEHUB_AUDIT_PUBLIC_KEY."""
    text = value if value is not None else load(AuditEnv, environ).public_key
    if not text:
        raise ConfigError(f"no audit public key: set {PUBLIC_KEY_ENV} or pass --public-key")
    path = Path(text)
    if len(text) != 64 and path.is_file():
        text = path.read_text()
    return VerifyKey(key_seed(text, "audit public key"))
