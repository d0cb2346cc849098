"""Each ingress partition's fair share of what the worker hands to faust per fetch round.

One agency flooding its ingress topic must not hold up the others' events. faust hands the
records of one fetch round (everything aiokafka has buffered: up to 1 MiB a partition, some
11,000 small malformed records) to its queue one at a time, round-robin between partitions,
and asks for the next round only when the last record of this one is queued. An event of
another agency fetched meanwhile therefore waited for the whole round: with faust's queue and
the batches already cut to 1,000, 3.1 s behind a 100,000-record flood in one run of
bench/flood_bench.py and 0.5 s in two others, depending on when its fetch landed.

`FairShare` keeps what a round fetched and hands faust at most `share` records of each
partition per round, the rest in later rounds, before anything newer of that partition is
asked for; a partition with nothing held is asked for at every round. What waits ahead of
another agency's event is then at most a share of each partition, faust's queue and the
batches in flight (command.py, DEFAULT_BATCH). Order within a partition is kept: held records
go first, and a partition is fetched again only once its held records are all handed over.
Held records are dropped when the partition is sought (its position moves, and aiokafka drops
its own buffer too) or is no longer assigned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Records of one partition handed over per round (SAFEHUB_CORRELATOR_FAIR_SHARE): six flooded
# partitions then put at most ~600 records in a round ahead of another agency's. A catch-up of
# 60,000 events ran at ~0.96x the events/s it reached with the share unlimited (5,412 against
# 5,645, medians of 5 alternated runs of bench/correlation_bench.py), once faust stopped pausing
# ingress partitions under queue pressure (transport.py); it was 0.59x before that.
SHARE = 100


class FairShare:
    def __init__(self, share: int = SHARE) -> None:
        if share < 1:
            raise ValueError("a share is at least one record")
        self.share = share
        # partition -> [its held records, the index of the first not yet handed over]
        self._held: dict[Any, list[Any]] = {}

    def holding(self) -> set[Any]:
        """Partitions with records held back: not to be fetched until these are handed over."""
        return set(self._held)

    def take(self, fetched: Mapping[Any, Sequence[Any]],
             active: Iterable[Any]) -> dict[Any, list[Any]]:
        """Hold `fetched` (partition -> records, of partitions holding nothing) and hand over
        up to a share of each `active` partition's held records, oldest first."""
        for tp, records in fetched.items():
            if not records:
                continue
            if tp in self._held:
                self._held[tp][0].extend(records)
            else:
                self._held[tp] = [list(records), 0]
        out: dict[Any, list[Any]] = {}
        for tp in active:
            held = self._held.get(tp)
            if held is None:
                continue
            records, start = held
            end = start + self.share
            out[tp] = records[start:end]
            if end < len(records):
                held[1] = end
            else:
                del self._held[tp]
        return out

    def drop(self, tp: Any) -> None:
        """Forget what is held of `tp` (it was sought: it is read again from its new position)."""
        self._held.pop(tp, None)

    def keep_only(self, assigned: Iterable[Any]) -> None:
        """Forget what is held of partitions no longer assigned."""
        keep = set(assigned)
        for tp in [tp for tp in self._held if tp not in keep]:
            del self._held[tp]

    def clear(self) -> None:
        self._held.clear()
