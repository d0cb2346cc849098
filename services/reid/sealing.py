"""The identity an agency shares, sealed to the asking hub's key and bound to the request.

HPKE (RFC 9180), base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305, from
`cryptography` (pyca), which the project already uses for its certificates: one well-kept,
audited library for all of our public-key cryptography, and HPKE rather than a sealed box
because HPKE's `info` binds the ciphertext to the request. The info string holds the request
id, the alert, the hub and the agency, so a ciphertext moved to another request, alert, hub or
agency does not open: it cannot be replayed onto another alert.

A hub's key pair: the private key is a 0600 file only the hub's services read (raw 32 bytes,
hex); its public key is published to the agencies as `<hub>.pub` (hex) in a folder every
agency's re-identification service is given, and an agency answers only to the key registered
there for the hub named in the request.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safehub.connection import read_secret, write_secret
from safehub.errors import ConfigError, SafehubError

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_INFO_TAG = b"safehub/reid-response/v1"
KEY_BYTES = 32
MAX_IDENTITY_BYTES = 16 * 1024


class SealError(SafehubError):
    """A sealed identity that does not open for this request (tampered, moved or not ours)."""


@dataclass(frozen=True, slots=True)
class SharedIdentity:
    """The child as the answering agency's own system holds them. Never logged, never stored
    in plaintext at the hub; `repr` hides everything but the record count."""

    first_name: str
    surname: str
    date_of_birth: str  # ISO date, as the agency holds it
    nhs_number: str | None
    postcode: str | None
    record_refs: tuple[str, ...]  # the agency's own references for the records behind the alert

    def __repr__(self) -> str:
        return f"SharedIdentity(<hidden>, {len(self.record_refs)} record(s))"

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SharedIdentity:
        try:
            raw = json.loads(data)
            return cls(
                first_name=str(raw["first_name"]), surname=str(raw["surname"]),
                date_of_birth=str(raw["date_of_birth"]),
                nhs_number=None if raw["nhs_number"] is None else str(raw["nhs_number"]),
                postcode=None if raw["postcode"] is None else str(raw["postcode"]),
                record_refs=tuple(str(r) for r in raw["record_refs"]))
        except (ValueError, KeyError, TypeError):
            raise SealError("the opened identity is not in the expected form") from None


def binding(request_id: str, alert_id: str, hub_id: str, agency_id: str) -> bytes:
    """HPKE `info`: what the ciphertext is bound to. Length-prefixed parts, so no two splits
    of the same characters bind alike."""
    out = bytearray(_INFO_TAG)
    for part in (request_id, alert_id, hub_id, agency_id):
        data = part.encode("ascii")
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def seal(identity: SharedIdentity, hub_public_key: bytes, info: bytes) -> bytes:
    try:
        public = X25519PublicKey.from_public_bytes(hub_public_key)
    except ValueError:
        raise SealError("the hub's public key is not an X25519 key") from None
    return _SUITE.encrypt(identity.to_bytes(), public, info)


def open_sealed(sealed: bytes, private_key: X25519PrivateKey, info: bytes) -> SharedIdentity:
    if len(sealed) > MAX_IDENTITY_BYTES:
        raise SealError(f"sealed identity is over {MAX_IDENTITY_BYTES} bytes")
    try:
        return SharedIdentity.from_bytes(_SUITE.decrypt(sealed, private_key, info))
    except (InvalidTag, ValueError):
        raise SealError("the sealed identity does not open with this hub's key for this "
                        "request (tampered, or made for another request, alert or hub)") from None


# --- hub key files ------------------------------------------------------------------------------


def private_key_path(folder: Path, hub_id: str) -> Path:
    return folder / f"{hub_id}.key"


def public_key_path(folder: Path, hub_id: str) -> Path:
    return folder / f"{hub_id}.pub"


def ensure_hub_key(private_folder: Path, public_folder: Path, hub_id: str) -> bytes:
    """The hub's public key, making the key pair first if the hub has none (private 0600)."""
    path = private_key_path(private_folder, hub_id)
    if not path.exists():
        key = X25519PrivateKey.generate()
        write_secret(path, key.private_bytes_raw().hex())
    public = load_private_key(private_folder, hub_id).public_key().public_bytes_raw()
    public_folder.mkdir(parents=True, exist_ok=True)
    public_key_path(public_folder, hub_id).write_text(public.hex() + "\n")
    return public


def load_private_key(folder: Path, hub_id: str) -> X25519PrivateKey:
    what = f"hub {hub_id}'s re-identification key"
    text = read_secret(private_key_path(folder, hub_id), what)
    try:
        return X25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    except ValueError:
        raise ConfigError(f"{what}: not 32 bytes of hex") from None


def load_public_key(folder: Path, hub_id: str) -> bytes:
    """A hub's registered public key, as the agencies hold it."""
    path = public_key_path(folder, hub_id)
    try:
        data = bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise ConfigError(f"no registered key for hub {hub_id} ({path}: {exc.strerror})") from exc
    except ValueError:
        raise ConfigError(f"registered key of hub {hub_id} ({path}) is not hex") from None
    if len(data) != KEY_BYTES:
        raise ConfigError(f"registered key of hub {hub_id} ({path}) is not {KEY_BYTES} bytes")
    return data
