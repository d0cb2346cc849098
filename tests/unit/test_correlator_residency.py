"""The correlation child holds blocks' decoded states within a memory budget (residency.py),
and a block let go comes back with its whole history (through the real child process)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from safehub.schemas.codec import encode
from safehub.schemas.records import MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.correlation import snapshot
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.offload import Child
from safehub.services.correlator.processing import Incoming
from safehub.services.correlator.residency import Residency

PREFIX = "t."


def _saved(held: Residency, blocks: list[tuple[int, bytes | None]]
           ) -> tuple[dict[int, bytes | None], list[int]]:
    """Plan a batch and commit it at once, its states unchanged."""
    seq, shipped, drop = held.plan(blocks)
    held.committed(seq, {b: raw for b, raw in blocks if raw is not None})
    return shipped, drop


def test_least_recently_used_blocks_are_let_go_beyond_the_budget() -> None:
    held = Residency(budget_bytes=25)
    table = {b: bytes(10) for b in range(5)}
    shipped, drop = _saved(held, [(0, table[0]), (1, table[1])])
    assert set(shipped) == {0, 1} and drop == []
    shipped, drop = _saved(held, [(0, table[0])])  # 0 is used again: 1 is now the oldest
    assert shipped == {} and drop == []
    shipped, drop = _saved(held, [(2, table[2])])
    assert set(shipped) == {2} and drop == [1]
    assert held.held_bytes == 20 and 1 not in held and len(held) == 2


def test_a_batch_keeps_its_own_blocks_even_over_the_budget() -> None:
    held = Residency(budget_bytes=0)
    shipped, drop = _saved(held, [(7, b"x" * 100), (8, b"y" * 100)])
    assert set(shipped) == {7, 8} and drop == []
    _, drop = _saved(held, [(9, None)])
    assert sorted(drop) == [7, 8]


def test_bytes_the_table_got_elsewhere_are_shipped_again() -> None:
    held = Residency()
    first = b"state one"
    _, shipped, _ = held.plan([(3, first)])
    assert shipped == {3: first}
    _, shipped, _ = held.plan([(3, first)])
    assert shipped == {}
    recovered = bytes(bytearray(first))  # equal, but another object: from the changelog
    _, shipped, _ = held.plan([(3, recovered)])
    assert shipped == {3: recovered}


def test_a_block_of_an_uncommitted_batch_is_not_let_go() -> None:
    """Batches in flight: the table does not hold batch 1's state of block 1 until batch 1 is
    committed, so block 1 stays with the child until then (shipped back from the table, it
    would lose batch 1's effect)."""
    held = Residency(budget_bytes=15)
    seq1, _, _ = held.plan([(1, bytes(10))])
    seq2, _, drop = held.plan([(2, bytes(10))])
    assert drop == [] and 1 in held
    committed = bytes(12)
    held.committed(seq1, {1: committed})
    held.committed(seq2, {2: bytes(10)})
    _, _, drop = held.plan([(3, None)])
    assert drop == [1]  # the least recently used, now that it is saved
    _, shipped, _ = held.plan([(1, committed)])
    assert shipped == {1: committed}


def _message(block: int, n: int, offset: int) -> Incoming:
    key = hashlib.sha256(f"child {block}".encode()).digest()
    at = 1_780_000_000_000 + n * 86_400_000
    subject = Subject(MatchKeys(mk1=key), 1, block, 14, "E08000035", None, "a" * 32)
    event = WarningSignEvent(hashlib.md5(f"{block}:{n}".encode()).hexdigest(), "police-r",
                             Sector.POLICE, at, at, subject, Sign.MISSING_FROM_HOME_OR_CARE)
    return Incoming(f"{PREFIX}ingress.police-r", 0, offset, block_key(block), encode(event))


@pytest.mark.timeout(60)
def test_a_block_the_child_let_go_comes_back_with_its_history() -> None:
    """Budget 0: every batch lets go of the blocks it did not touch; the table's bytes are
    shipped back, and the block's third event is correlated with the first two."""

    async def run() -> int:
        child = Child(load_rules(DEFAULT_RULES_PATH), PREFIX)
        held = Residency(budget_bytes=0)
        table: dict[int, bytes | None] = {}
        try:
            for n, block in enumerate([10, 10, 20, 10]):
                seq, shipped, drop = held.plan([(block, table.get(block))])
                reply = await child.submit(1_790_000_000_000, shipped,
                                           [_message(block, n, n)], drop)
                assert not reply.rejected
                table.update(reply.states)
                held.committed(seq, reply.states)
            state = table[10]
            assert state is not None
            return sum(len(c.observations) for c in snapshot.decode(state).clusters)
        finally:
            child.close()

    assert asyncio.run(run()) == 3
