"""Linking pseudonyms into child clusters within one linkage block.

Strong evidence only. Two events are about the same child when they share a *strong* key: the
NHS number (mk1), a name key (mk2: the first name's phonetic code + date of birth + postcode;
mk3: the first name's and surname's phonetic codes + date of birth; see producers/matchkeys.py),
or the sending agency's own handle for the child (kind 5, `AGENCY_PERSON`). An agency's vault
gives each child one random handle per person reference in the agency's own system
(producers/vault.py), so two of its events with one handle are about one child by the agency's
own record, whatever typo one of them carries in a name (session 23: linkage recall 0.964 ->
0.974 in bench/linkage_bench.py, precision unchanged, no twin merged: twins have two person
references). The key is the hash of (agency, handle): a handle links only that agency's
events, so no agency can pull another's events into a child by copying its handle. An agency
without a person reference gets a handle per strongest match key, which links nothing those
keys do not already link. One handle over two NHS numbers is a conflict like any other.
A child is a connected component of strong keys (union-find, kept as one
key set per cluster because a block holds only a handful of children: joining an event unites
every cluster that shares a key with it).

The surname + date of birth + postcode key (mk4) is weak: twins, and siblings whose birth dates
collide through a data-entry error, share it, so it never links. Where both records carry name
keys, they either share one (a strong link already) or disagree (different first names: two
children, not even flagged, as nothing suggests one child). A record with no name key (some
other source's; the producer always derives mk3) is linked only by its NHS number: which child
its mk4 could mean would depend on which records arrived before it, and every arrival order
must give the same children (core.py). mk4 stays in the clusters' keys, unused for linking.

Key epochs. A key is (kind, epoch, prefix): keys made under different epochs (linkage keys)
never compare equal. An event's keys are its keys under every epoch it carries: its
`match_keys` under `key_epoch` and, during a key rotation, its `transition_keys` under the new
epoch. Such an event shares keys with the child's old-epoch history and with its new-epoch
events alike, so a rotation joins them into one cluster instead of starting the child afresh.
The linkage block is derived under a key that is not rotated, so all of them are in one block.

NHS-number conflicts: two different mk1 values of one epoch in one cluster mean two different
children whose name keys collide. Such clusters are not merged; they are flagged as an identity
conflict, and every alert about them says so, so a practitioner checks identity before acting.
The rule applies per epoch: the same NHS number gives different mk1 values under two epochs,
which is not a conflict. Limitation: a conflict between NHS numbers seen only under different
epochs cannot be seen (no key compares them); transition-period events, which carry both
epochs, are where it shows.

A date-of-birth typo does not link, even when the NHS number agrees (decision, issue 20). The
linkage block, the Kafka key that sends all of a child's events to one worker, is a keyed
bucket of the date of birth (producers/matchkeys.py), so a record with a mistyped or day/month
swapped birth date lands in another block, almost always on another partition, and never meets
the child's other records in `step`: its signs count towards a separate picture of the child
(under-counting, never merging two children). Linking it would need the record to reach the
child's block: either the block made from the NHS number when there is one (which splits a
child whose agencies do not all hold it, the common case this hub exists for), or a second,
cross-block stage keyed by mk1 that notices one mk1 in two blocks and forwards the minority
block's events to the majority's (with a replay-visible journal entry so the auditors' replay
follows it). Neither is built; bench/linkage_bench.py counts what the typo costs in recall.

Match keys are stored by a 16-byte prefix: within a block (children sharing a date-of-birth
bucket) 128 bits cannot collide by chance, and it halves the state kept per child.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from safehub.schemas.frozen import quick_init
from safehub.schemas.records import IngressEvent, MatchKeys

KEY_BYTES = 16

# (kind number, key epoch, key prefix); kind 1 (NHS number) sorts first, so a cluster's
# smallest key is its NHS-number key whenever it has one, and the oldest epoch's among those.
Key = tuple[int, int, bytes]


def _add(keys: set[Key], m: MatchKeys, epoch: int) -> None:
    # Spelled out: this runs for every event, and a loop over `present()` cost twice as much.
    if m.mk1 is not None:
        keys.add((1, epoch, m.mk1[:KEY_BYTES]))
    if m.mk2 is not None:
        keys.add((2, epoch, m.mk2[:KEY_BYTES]))
    if m.mk3 is not None:
        keys.add((3, epoch, m.mk3[:KEY_BYTES]))
    if m.mk4 is not None:
        keys.add((4, epoch, m.mk4[:KEY_BYTES]))


AGENCY_PERSON = 5  # the kind of the sending agency's own handle for the child


@functools.lru_cache(maxsize=65536)
def _person_key(agency_id: str, reid_handle: str) -> bytes:
    return hashlib.sha256(f"{agency_id}\x1f{reid_handle}".encode()).digest()[:KEY_BYTES]


def event_keys(event: IngressEvent) -> frozenset[Key]:
    """The event's keys: its subject's match keys under every epoch it carries, and the
    sending agency's handle for the child under the event's key epoch."""
    subject = event.subject
    keys: set[Key] = {(AGENCY_PERSON, subject.key_epoch,
                       _person_key(event.agency_id, subject.reid_handle))}
    _add(keys, subject.match_keys, subject.key_epoch)
    other = subject.transition_keys
    if other is not None:
        _add(keys, other.match_keys, other.key_epoch)
    return frozenset(keys)


def _nhs(keys: frozenset[Key]) -> list[Key]:
    # A plain list: this runs for every cluster an event touches, and holds at most a few keys.
    return [k for k in keys if k[0] == 1]


def nhs_keys(keys: frozenset[Key]) -> frozenset[Key]:
    return frozenset(_nhs(keys))


def _conflicting(nhs: set[Key]) -> bool:
    """Two NHS-number keys of one epoch: two children."""
    return len({k[1] for k in nhs}) != len(nhs)


def _belongs(cluster_nhs: frozenset[Key], own: frozenset[Key]) -> bool:
    """In a conflict, whether an event with NHS keys `own` belongs with a cluster.

    A cluster without an NHS key takes it. One with NHS keys takes it only when they share one
    and disagree in no epoch; an event without an NHS key cannot choose between children.
    """
    if not cluster_nhs:
        return True
    if cluster_nhs.isdisjoint(own):
        return False
    own_epochs = {k[1]: k for k in own}
    return all(own_epochs.get(k[1], k) == k for k in cluster_nhs)


@quick_init
@dataclass(frozen=True, slots=True)
class Linking:
    """Where one event goes: the clusters it joins, and those it only touches.

    `joined`: indices of existing clusters merged with the event into one cluster.
    `conflicting`: indices of clusters that share a key with the event but carry a different
    NHS-number key; they stay apart and are flagged, as is the event's own cluster.
    """

    joined: tuple[int, ...]
    conflicting: tuple[int, ...]

    @property
    def conflict(self) -> bool:
        return bool(self.conflicting)


_NEW_CHILD = Linking((), ())
WEAK = 4  # the kind of mk4: surname + date of birth + postcode


def link(cluster_keys: Sequence[frozenset[Key]], keys: frozenset[Key]) -> Linking:
    """Decide how an event with `keys` joins the clusters whose key sets are `cluster_keys`."""
    strong = [k for k in keys if k[0] != WEAK]
    touching = [i for i, ck in enumerate(cluster_keys) if not ck.isdisjoint(strong)]
    if not touching:
        return _NEW_CHILD  # the first event about a child in this block
    nhs_seen = set(_nhs(keys))
    for i in touching:
        nhs_seen.update(_nhs(cluster_keys[i]))
    if len(nhs_seen) <= 1 or not _conflicting(nhs_seen):
        return Linking(tuple(touching), ())
    own_nhs = nhs_keys(keys)
    # Conflict. The event's own NHS keys decide where it belongs; without one the event cannot
    # choose between children and joins only clusters that have no NHS key.
    joined = tuple(i for i in touching if _belongs(nhs_keys(cluster_keys[i]), own_nhs))
    conflicting = tuple(i for i in touching if i not in joined)
    return Linking(joined, conflicting)


def block_key(block: int) -> bytes:
    """The Kafka key of a linkage block's events: 4 bytes big-endian, as producers write it
    (producers/matchkeys.py); the correlator and the auditors' replay both check it."""
    return block.to_bytes(4, "big")


def block_subject(block: int) -> str:
    """A linkage block as the subject of a journal entry about it (BLOCK_STATE_RESET): 32 hex
    digits, the width of every other entry's subject (an alert or event id)."""
    return f"{block:032x}"


def subject_block(subject_id: str) -> int | None:
    """The block `block_subject` wrote, or None if `subject_id` is not one."""
    if len(subject_id) != 32:
        return None
    try:
        return int(subject_id, 16)
    except ValueError:
        return None
