"""Linking pseudonyms into child clusters within one linkage block.

A child is a connected component of match keys: two events belong to the same child when they
share any match key (directly or through other events). This is union-find over match keys,
kept as one key set per cluster because a block holds only a handful of children: joining an
event unites every cluster that shares a key with it.

The one exception is the NHS number (mk1): two different mk1 values in one cluster mean two
different children whose weaker keys (names, date of birth, postcode) collide. Such clusters are
not merged; they are flagged as an identity conflict, and every alert about them says so, so a
practitioner checks identity before acting.

Match keys are stored by a 16-byte prefix: within a block (children sharing a date-of-birth
bucket) 128 bits cannot collide by chance, and it halves the state kept per child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from safehub.schemas.frozen import quick_init
from safehub.schemas.records import MatchKeys

KEY_BYTES = 16

# (kind number, key prefix); kind 1 (NHS number) sorts first, so a cluster's smallest key is
# its NHS-number key whenever it has one.
Key = tuple[int, bytes]


def event_keys(match_keys: MatchKeys) -> frozenset[Key]:
    # Spelled out: this runs for every event, and a loop over `present()` cost twice as much.
    m = match_keys
    keys = set()
    if m.mk1 is not None:
        keys.add((1, m.mk1[:KEY_BYTES]))
    if m.mk2 is not None:
        keys.add((2, m.mk2[:KEY_BYTES]))
    if m.mk3 is not None:
        keys.add((3, m.mk3[:KEY_BYTES]))
    if m.mk4 is not None:
        keys.add((4, m.mk4[:KEY_BYTES]))
    return frozenset(keys)


def _nhs(keys: frozenset[Key]) -> list[Key]:
    # A plain list: this runs for every cluster an event touches, and holds at most a few keys.
    return [k for k in keys if k[0] == 1]


def nhs_keys(keys: frozenset[Key]) -> frozenset[Key]:
    return frozenset(_nhs(keys))


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


def link(cluster_keys: Sequence[frozenset[Key]], keys: frozenset[Key]) -> Linking:
    """Decide how an event with `keys` joins the clusters whose key sets are `cluster_keys`."""
    touching = [i for i, ck in enumerate(cluster_keys) if not ck.isdisjoint(keys)]
    if not touching:
        return _NEW_CHILD  # the first event about a child in this block
    nhs_seen = set(_nhs(keys))
    for i in touching:
        nhs_seen.update(_nhs(cluster_keys[i]))
    if len(nhs_seen) <= 1:
        return Linking(tuple(touching), ())
    own_nhs = nhs_keys(keys)
    # Conflict. The event's own NHS key, if any, decides where it belongs; without one the
    # event cannot choose between children and joins only clusters that have no NHS key.
    joined = tuple(
        i for i in touching if nhs_keys(cluster_keys[i]) <= own_nhs
    )
    conflicting = tuple(i for i in touching if i not in joined)
    return Linking(joined, conflicting)
