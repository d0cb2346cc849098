"""The correlator reads each ingress partition in order: a record past the next offset is held
back and the partition re-read, unless the log itself has no record there. Table recovery ends
at a trailing transaction marker only once every record read before it has been applied."""

from safehub.services.correlator.transport import NextOffsets, recovery_complete

TP = ("ingress.police", 0)
OTHER = ("ingress.police", 1)


def test_records_in_order_are_admitted_and_a_skip_asks_for_a_re_read() -> None:
    offsets = NextOffsets()
    offsets.reset(TP, 14)
    assert [offsets.admit(TP, o) for o in (14, 15, 16)] == [None, None, None]
    # faust dropped 17-56 during a rebalance: 57 must not overtake them.
    assert offsets.admit(TP, 57) == 17
    # After the seek back, the partition is read from 17 and no hole is in the log.
    offsets.reset(TP, 17)
    assert [offsets.admit(TP, o) for o in range(17, 58)] == [None] * 41
    assert all(offsets.take_hole_at(TP, o) is None for o in range(14, 58))


def test_a_hole_found_again_after_the_re_read_is_in_the_log_and_let_through() -> None:
    offsets = NextOffsets()
    offsets.reset(TP, 5)
    assert offsets.admit(TP, 7) == 5  # offset 5 is a transaction marker, say
    offsets.reset(TP, 5)
    assert offsets.admit(TP, 7) is None
    assert offsets.take_hole_at(TP, 7) is None and offsets.take_hole_at(OTHER, 5) is None
    assert offsets.take_hole_at(TP, 6) == (5, 7)
    assert offsets.take_hole_at(TP, 5) is None  # taken, and so forgotten
    assert offsets.admit(TP, 8) is None
    # A later, different hole is re-read again.
    assert offsets.admit(TP, 20) == 9


def test_partitions_are_independent_and_unknown_ones_start_anywhere() -> None:
    offsets = NextOffsets()
    assert offsets.admit(OTHER, 100) is None  # no known position: nothing to compare with
    offsets.reset(TP, 0)
    assert offsets.admit(TP, 0) is None
    assert offsets.admit(OTHER, 101) is None
    assert offsets.admit(OTHER, 103) == 102
    assert offsets.admit(TP, 1) is None


def test_a_redelivered_record_does_not_move_the_next_offset_back() -> None:
    offsets = NextOffsets()
    offsets.reset(TP, 10)
    assert offsets.admit(TP, 10) is None
    assert offsets.admit(TP, 11) is None
    assert offsets.admit(TP, 10) is None  # a duplicate: the sinks and the state drop it
    assert offsets.admit(TP, 13) == 12


def test_revoked_partitions_are_forgotten() -> None:
    offsets = NextOffsets()
    offsets.reset(TP, 3)
    offsets.reset(OTHER, 4)
    offsets.keep_only({OTHER})
    assert offsets.admit(TP, 50) is None  # unknown again
    assert offsets.admit(OTHER, 6) == 4


def test_recovery_ends_only_once_every_record_fetched_is_applied() -> None:
    # The changelog partition's last offset, 580, is a commit marker; fetches read past it.
    assert recovery_complete(580, applied=579, fetched=579, read_to=581)
    # The last records were fetched but 200 of them are still queued in faust.
    assert not recovery_complete(580, applied=379, fetched=579, read_to=581)
    # Not read up to the marker yet, or not known how far.
    assert not recovery_complete(580, applied=570, fetched=570, read_to=571)
    assert not recovery_complete(580, applied=-1, fetched=None, read_to=None)
    # Only aborted transactions in the partition: nothing fetched, nothing to apply.
    assert recovery_complete(3, applied=-1, fetched=None, read_to=4)


def hole_at_5_and_6(offsets: NextOffsets, tp: tuple[str, int]) -> None:
    """Offsets 5 and 6 of `tp` hold no record: read past once, re-read, and let through."""
    offsets.reset(tp, 5)
    assert offsets.admit(tp, 7) == 5
    offsets.reset(tp, 5)
    assert offsets.admit(tp, 7) is None


def test_a_hole_is_taken_by_where_it_ends_once() -> None:
    # faust reports the same hole as a gap up to the record let through (`_add_gap`).
    offsets = NextOffsets()
    hole_at_5_and_6(offsets, TP)
    assert not offsets.take_hole_before(OTHER, 7) and not offsets.take_hole_before(TP, 6)
    assert offsets.take_hole_before(TP, 7)
    assert not offsets.take_hole_before(TP, 7) and offsets.take_hole_at(TP, 5) is None


def test_partitions_no_longer_assigned_lose_their_holes() -> None:
    offsets = NextOffsets()
    for tp in (TP, OTHER):
        hole_at_5_and_6(offsets, tp)
    offsets.keep_only({OTHER})
    assert offsets.take_hole_at(TP, 5) is None and offsets.take_hole_at(OTHER, 5) == (5, 7)
