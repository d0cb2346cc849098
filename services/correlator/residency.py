"""Which blocks' states the correlation child holds decoded, and on what table bytes.

Why a budget. The child keeps blocks' decoded states between batches (offload.py), and nothing
used to let one go: every block ever seen stayed. Decoded, a state takes about eleven times its
encoded size (a full block, 2,000 events of as many children under eight keys each: 416 KiB
encoded, about 4.5 MiB as Python objects, measured with tracemalloc). With blocks limited to
4,096 and one block's state bounded (core.py), a worker owning every partition could hold
4,096 full blocks: 1.6 GiB encoded in the table's in-memory store and some 18 GiB decoded in
the child. The child's share is bounded here: the states it holds add up to at most
`budget_bytes` encoded (DEFAULT_BUDGET_BYTES, 24 MiB: about 270 MiB decoded at worst), least
recently used first out. A block let go is told to the child with the next batch (`drop`), and
when the block comes back its bytes are shipped from the table again and decoded. A realistic
block (a handful of children, a few KiB) costs nothing to keep: 4,096 of them fit in the budget.
The blocks of the batches in flight are never dropped (below), so the budget can be exceeded
by those batches' blocks (at most 4,096).

What is not bounded here: the table's store (faust's in-memory store, the durable copy the
worker recovers from its changelog) keeps every block of the worker's partitions encoded, 1.6
GiB in the worst case above, spread over the workers by partition.

Pipelining. Several batches are in flight (app.py): the child has correlated them, but their
states are not yet committed, and the table still holds the states from before them. A block
of an uncommitted batch is therefore never dropped: shipped back from the table before that
batch's commit, it would lose the batch's effect. Each batch has a sequence number, and
`committed` says when its blocks are in the table; as a second guard, a committed state is
recorded as the child's basis only if the child has not dropped the block since that batch was
sent.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

DEFAULT_BUDGET_BYTES = 24 * 1024 * 1024


def _size(raw: bytes | None) -> int:
    return 0 if raw is None else len(raw)


class Residency:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        # block -> the table value (bytes object, or None) the child's state was last based on,
        # least recently used first
        self._basis: OrderedDict[int, bytes | None] = OrderedDict()
        self.held_bytes = 0
        self._seq = 0
        self._dropped: dict[int, int] = {}  # block -> the batch before which the child drops it
        self._unsaved: dict[int, set[int]] = {}  # uncommitted batch -> its blocks
        self._unsaved_blocks: Counter[int] = Counter()  # block -> uncommitted batches with it

    def __contains__(self, block: int) -> bool:
        return block in self._basis

    def __len__(self) -> int:
        return len(self._basis)

    def _set(self, block: int, raw: bytes | None) -> None:
        self.held_bytes += _size(raw) - _size(self._basis.get(block))
        self._basis[block] = raw
        self._basis.move_to_end(block)

    def plan(self, blocks: Iterable[tuple[int, bytes | None]]
             ) -> tuple[int, dict[int, bytes | None], list[int]]:
        """For a batch touching `blocks` (block, the table's value now): the batch's sequence
        number, the states to ship to the child, and the blocks it must drop before it."""
        self._seq += 1
        shipped: dict[int, bytes | None] = {}
        touched: set[int] = set()
        for block, raw in blocks:
            if block in touched:
                continue
            touched.add(block)
            # Bytes the table got any other way than from the child (recovery) are a different
            # object: the child's state is then stale and is replaced.
            if block in self._basis and self._basis[block] is raw:
                self._basis.move_to_end(block)
            else:
                shipped[block] = raw
                self._set(block, raw)
        self._unsaved[self._seq] = touched
        self._unsaved_blocks.update(touched)
        drop: list[int] = []
        if self.held_bytes > self.budget_bytes:
            for block in list(self._basis):  # least recently used first
                if self.held_bytes <= self.budget_bytes:
                    break
                if self._unsaved_blocks[block]:
                    continue  # this batch's own, or an uncommitted one's
                self.held_bytes -= _size(self._basis.pop(block))
                self._dropped[block] = self._seq
                drop.append(block)
        return self._seq, shipped, drop

    def committed(self, seq: int, states: Mapping[int, bytes]) -> None:
        """Batch `seq`'s states are committed and in the table: the child holds them, unless
        it has dropped the block since."""
        for block, raw in states.items():
            if self._dropped.get(block, 0) > seq:
                continue
            self._set(block, raw)
        for block in [b for b, at in self._dropped.items() if at <= seq]:
            del self._dropped[block]
        self._unsaved_blocks.subtract(self._unsaved.pop(seq, set()))
        self._unsaved_blocks += Counter()  # drops the zero counts
