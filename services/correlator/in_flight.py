"""The ingress offsets handed on (to faust's channels or the refusals lane) and not yet acked.

faust commits a partition up to the first gap in its acked offsets, counted from the offset it
last committed. With the refusals lane (refusals.py) acks no longer come in each partition's
order: a refusal behind an event can be acked first. faust forgets a revoked partition's
committed offset at once, while its `wait_empty` still commits what is acked; and a partition
never committed has none. Either way faust's check of the first gap does not run, so refusals
acked behind an event that faust dropped from its queue in the rebalance were committed past
it, and the event was never correlated (found in review, session 30). `first` is what the
commit must not pass, whatever faust knows (transport.py, `PromptConsumer._new_offset`).

Forgotten when the partition is read again from an earlier offset: what was handed on from
there is handed on again.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class InFlight:
    def __init__(self) -> None:
        self._order: dict[Any, deque[int]] = {}  # offsets in the order handed on
        self._pending: dict[Any, set[int]] = {}  # of those, the ones not yet acked

    def handed(self, tp: Any, offset: int) -> None:
        self._order.setdefault(tp, deque()).append(offset)
        self._pending.setdefault(tp, set()).add(offset)

    def acked(self, tp: Any, offset: int) -> None:
        pending = self._pending.get(tp)
        if pending is not None:
            pending.discard(offset)
            self.first(tp)  # drops what is acked from the front

    def first(self, tp: Any) -> int | None:
        """The lowest offset of `tp` handed on and not yet acked."""
        order = self._order.get(tp)
        if not order:
            return None
        pending = self._pending[tp]
        while order and order[0] not in pending:
            order.popleft()
        return order[0] if order else None

    def forget_from(self, tp: Any, offset: int) -> None:
        """`tp` is read again from `offset`: what was handed on from there is no longer."""
        order = self._order.get(tp)
        if order:
            pending = self._pending[tp]
            while order and order[-1] >= offset:
                pending.discard(order.pop())

    def forget(self) -> None:
        """Every partition is read again from its committed offset (after a rebalance)."""
        self._order.clear()
        self._pending.clear()
