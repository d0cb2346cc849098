"""Match keys MK1-MK4 and the linkage block: keyed hashes of normalised identifiers.

Each key is HMAC-SHA256(linkage key, domain tag | epoch | fields). The domain tag keeps the
four keys apart (an NHS number can never collide with a name key), and the epoch keeps keys made
under different linkage keys apart when keys are rotated. Fields are joined with a unit
separator, which normalisation guarantees never occurs inside a field, so ("AB", "C") and
("A", "BC") hash differently.

MK3 uses NYSIIS phonetic codes (jellyfish): designed for personal names, it maps common
misspellings and variants (JESSICA/JESICA/JESSIKA, MOHAMMED/MUHAMMAD, KATIE/KATY) to one code
while staying more precise than Soundex, and jellyfish is a maintained, widely used
implementation with a fixed algorithm, which every agency must share byte for byte.

The linkage block is a keyed bucket of the date of birth only: all of a child's match keys share
it (a typo in a name or a missing NHS number does not move the child), and with 4096 buckets each
holds a handful of birth dates, so the hub learns nothing useful from it.

Pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import hmac
import struct

import jellyfish

from safehub.producers.linkagekey import LinkageKey
from safehub.producers.normalisation import NormalisedIdentity
from safehub.schemas.records import MatchKeys

BLOCK_COUNT = 4096
_SEP = b"\x1f"
_TAG_MK1 = b"safehub/mk1/nhs-number/v1"
_TAG_MK2 = b"safehub/mk2/names-dob/v1"
_TAG_MK3 = b"safehub/mk3/phonetic-names-dob/v1"
_TAG_MK4 = b"safehub/mk4/surname-dob-postcode/v1"
_TAG_BLOCK = b"safehub/linkage-block/dob/v1"


def _keyed(key: LinkageKey, tag: bytes, *fields: str) -> bytes:
    message = _SEP.join((tag, str(key.epoch).encode(), *(f.encode("ascii") for f in fields)))
    return hmac.digest(key.secret, message, "sha256")


def phonetic(name: str) -> str:
    """NYSIIS code of an already normalised name; digits (rare, but folded in) are dropped."""
    letters = "".join(ch for ch in name if ch.isalpha())
    return jellyfish.nysiis(letters) if letters else ""


def match_keys(identity: NormalisedIdentity, key: LinkageKey) -> MatchKeys:
    dob = identity.date_of_birth.isoformat()
    mk1 = _keyed(key, _TAG_MK1, identity.nhs_number) if identity.nhs_number else None
    mk2 = _keyed(key, _TAG_MK2, identity.first_name, identity.surname, dob)
    first_code, surname_code = phonetic(identity.first_name), phonetic(identity.surname)
    mk3 = (
        _keyed(key, _TAG_MK3, first_code, surname_code, dob)
        if first_code and surname_code else None
    )
    mk4 = (
        _keyed(key, _TAG_MK4, identity.surname, dob, identity.postcode)
        if identity.postcode else None
    )
    return MatchKeys(mk1=mk1, mk2=mk2, mk3=mk3, mk4=mk4)


def linkage_block(identity: NormalisedIdentity, key: LinkageKey) -> int:
    digest = _keyed(key, _TAG_BLOCK, identity.date_of_birth.isoformat())
    return int.from_bytes(digest[:8], "big") % BLOCK_COUNT


def message_key(block: int) -> bytes:
    """The Kafka message key of an ingress event: the block as 4-byte big-endian."""
    return struct.pack(">I", block)
