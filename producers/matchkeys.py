"""Match keys MK1-MK3 and the linkage block: a keyed PRF over normalised identifiers.

Each key is PRF(epoch, domain tag | fields), the PRF being the key service's OPRF or, while
deployments migrate, version 1's HMAC (see keying.py). The domain tag keeps the keys
apart (an NHS number can never collide with a name key); the epoch selects the key, so keys of
different epochs never coincide. Fields are joined with a unit separator, which normalisation
guarantees never occurs inside a field, so ("AB", "C") and ("A", "BC") hash differently.

MK4 (surname + date of birth + postcode) is no longer derived. The correlator never links on
it (twins and siblings share it: services/correlation/linking.py), so deriving it only put
one more quasi-identifier key on the topics, and with the key service it cost a quarter of
every event's elliptic-curve work. The schema keeps the field (null), so events of earlier
producers still decode, and their mk4 is carried and ignored as before.

MK2 is the phonetic first name + date of birth + postcode (version 2 of the key, its own domain
tag). Version 1 was the exact first name + surname + date of birth, which linked nothing that
mk3 (the same fields' phonetic codes) did not: every exact match is a phonetic one. The new
mk2 links the records mk3 misses for a surname error (a typo, a step-parent's or a
double-barrelled surname) when the first name and the address agree; twins share surname,
birth date and postcode but not a first name, so it never links them (linkage_bench.py: recall
0.950 -> 0.964, precision unchanged, no twin merged). A record without a postcode makes no mk2.
Still three keys per record: the key service's work per event is unchanged (issue 19).

MK3 uses NYSIIS phonetic codes (jellyfish): designed for personal names, it maps common
misspellings and variants (JESSICA/JESICA/JESSIKA, MOHAMMED/MUHAMMAD, KATIE/KATY) to one code
while staying more precise than Soundex, and jellyfish is a maintained, widely used
implementation with a fixed algorithm, which every agency must share byte for byte.

The linkage block is a keyed bucket of the date of birth only: all of a child's match keys share
it (a typo in a name or a missing NHS number does not move the child), and with 4096 buckets each
holds a handful of birth dates, so the hub learns nothing useful from it. It is derived under
the block key (epoch 0), which is not rotated with the match keys: a rotation never moves a
child's events to another block, partition or worker.

`derive` evaluates a whole batch of identities with one PRF call per few thousand distinct
inputs: with the key service each call is a round trip, and each distinct input costs an
elliptic-curve blind and unblind, so repeated inputs (a child's many records, shared birth
dates) are evaluated once.

Pure apart from the PRF it is handed: no clock, no randomness, no I/O of its own.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import jellyfish

from safehub.producers.keying import BLOCK_EPOCH, SEP, Keying, as_keying
from safehub.producers.linkagekey import LinkageKey
from safehub.producers.normalisation import NormalisedIdentity
from safehub.schemas.frozen import quick_init
from safehub.schemas.records import EpochKeys, MatchKeys

BLOCK_COUNT = 4096
_SEP = SEP
_TAG_MK1 = b"safehub/mk1/nhs-number/v1"
_TAG_MK2 = b"safehub/mk2/phonetic-first-dob-postcode/v2"
_TAG_MK3 = b"safehub/mk3/phonetic-names-dob/v1"
_TAG_BLOCK = b"safehub/linkage-block/dob/v1"


def _input(tag: bytes, *fields: str) -> bytes:
    return _SEP.join((tag, *(f.encode("ascii") for f in fields)))


def phonetic(name: str) -> str:
    """NYSIIS code of an already normalised name; digits (rare, but folded in) are dropped."""
    letters = "".join(ch for ch in name if ch.isalpha())
    return jellyfish.nysiis(letters) if letters else ""


def key_inputs(identity: NormalisedIdentity) -> tuple[bytes | None, ...]:
    """The PRF inputs of MK1-MK3, None for a key the identity cannot make."""
    dob = identity.date_of_birth.isoformat()
    first_code, surname_code = phonetic(identity.first_name), phonetic(identity.surname)
    return (
        _input(_TAG_MK1, identity.nhs_number) if identity.nhs_number else None,
        _input(_TAG_MK2, first_code, dob, identity.postcode)
        if first_code and identity.postcode else None,
        _input(_TAG_MK3, first_code, surname_code, dob) if first_code and surname_code
        else None,
    )


def block_input(identity: NormalisedIdentity) -> bytes:
    return _input(_TAG_BLOCK, identity.date_of_birth.isoformat())


def block_of(output: bytes) -> int:
    return int.from_bytes(output[:8], "big") % BLOCK_COUNT


@quick_init
@dataclass(frozen=True, slots=True)
class DerivedKeys:
    """One identity's keys: under the current epoch, under the transition epoch if any, and its
    linkage block."""

    match_keys: MatchKeys
    key_epoch: int
    transition_keys: EpochKeys | None
    linkage_block: int


def _evaluate_unique(keying: Keying, epoch: int, inputs: Sequence[bytes]) -> dict[bytes, bytes]:
    distinct = list(dict.fromkeys(inputs))
    return dict(zip(distinct, keying.evaluate(epoch, distinct), strict=True))


def derive(identities: Sequence[NormalisedIdentity], keying: Keying) -> list[DerivedKeys]:
    """Every identity's keys, in order, in as few PRF calls as the batch size allows."""
    key_in = [key_inputs(i) for i in identities]
    flat = [x for row in key_in for x in row if x is not None]
    blocks = _evaluate_unique(keying, BLOCK_EPOCH, [block_input(i) for i in identities])
    current = _evaluate_unique(keying, keying.epoch, flat)
    other = (
        _evaluate_unique(keying, keying.transition_epoch, flat)
        if keying.transition_epoch is not None else None
    )

    def keys_of(row: tuple[bytes | None, ...], table: dict[bytes, bytes]) -> MatchKeys:
        mk1, mk2, mk3 = (None if x is None else table[x] for x in row)
        return MatchKeys(mk1=mk1, mk2=mk2, mk3=mk3)

    out = []
    for identity, row in zip(identities, key_in, strict=True):
        transition = (
            EpochKeys(keying.transition_epoch, keys_of(row, other))
            if other is not None and keying.transition_epoch is not None else None
        )
        out.append(DerivedKeys(keys_of(row, current), keying.epoch, transition,
                               block_of(blocks[block_input(identity)])))
    return out


def match_keys(identity: NormalisedIdentity, key: LinkageKey | Keying) -> MatchKeys:
    """One identity's match keys under the current epoch (a batch: see `derive`)."""
    keying = as_keying(key)
    table = _evaluate_unique(keying, keying.epoch,
                             [x for x in key_inputs(identity) if x is not None])
    mk1, mk2, mk3 = (None if x is None else table[x] for x in key_inputs(identity))
    return MatchKeys(mk1=mk1, mk2=mk2, mk3=mk3)


def linkage_block(identity: NormalisedIdentity, key: LinkageKey | Keying) -> int:
    (output,) = as_keying(key).evaluate(BLOCK_EPOCH, [block_input(identity)])
    return block_of(output)


def message_key(block: int) -> bytes:
    """The Kafka message key of an ingress event: the block as 4-byte big-endian."""
    return struct.pack(">I", block)
