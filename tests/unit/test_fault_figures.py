"""The fault run's figures per kill (bench/fault_checks.py): how long the output took to move
again, and how much of that the cluster itself could take no acks=all write."""

from __future__ import annotations

from bench.fault_checks import below_min_isr, isr_timeline, recovery


def test_the_cluster_below_min_isr_is_timed_within_the_stall_only() -> None:
    samples = [(9.0, ("audit[0]",)), (10.5, ()), (14.0, ("audit[0]",)),
               (15.0, ("audit[0]", "__transaction_state[7]")), (17.0, ()),
               (21.0, ("correlated[1]",)), (30.0, ("correlated[1]",))]
    # Stalled 12 s after a kill at 10: below from 14 to 17 and from 21 to 22.
    assert below_min_isr(samples, 10.0, 12.0) == {"below_min_isr_s": 4.0,
                                                  "below_min_isr_most": 2}
    # Moved again at once: none of it was the cluster's.
    assert below_min_isr(samples, 10.0, 0.4) == {"below_min_isr_s": 0.0,
                                                 "below_min_isr_most": 0}
    # Never moved again within the window: the whole window counts.
    assert below_min_isr(samples, 10.0, None, window_s=30.0)["below_min_isr_s"] == 22.0


def test_the_timeline_keeps_the_changes_only() -> None:
    samples = [(101.0, ()), (102.0, ()), (103.0, ("a[0]",)), (104.0, ("a[1]",)), (105.0, ())]
    assert isr_timeline(samples, 100.0) == [(1.0, 0), (3.0, 1), (5.0, 0)]


def test_the_output_recovery_is_the_first_move_of_any_partition_and_of_the_last() -> None:
    tp0, tp1 = ("in", 0), ("in", 1)
    samples = [(9.0, {tp0: 5, tp1: 5}, 1), (12.0, {tp0: 5, tp1: 5}, 1),
               (20.0, {tp0: 6, tp1: 5}, 1), (31.0, {tp0: 6, tp1: 9}, 2)]
    assert recovery(samples, at=10.0) == {"output_s": 10.0, "all_partitions_s": 21.0,
                                          "inbox_s": 21.0}
