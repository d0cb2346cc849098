"""The before/after comparison's arithmetic: which way is worse, what counts as noise."""

from __future__ import annotations

import pytest

from bench.runtime_compare import codec_sums, cost, verdict


def test_cost_is_above_one_when_after_is_worse_either_way() -> None:
    assert cost(100.0, 80.0, higher_is_better=True) == pytest.approx(1.25)
    assert cost(100.0, 125.0, higher_is_better=False) == pytest.approx(1.25)
    assert cost(100.0, 125.0, higher_is_better=True) == pytest.approx(0.8)


def test_steady_rounds_within_the_floor_are_no_loss() -> None:
    v = verdict([100.0, 102.0, 98.0], [97.0, 99.0, 96.0], higher_is_better=True, floor=0.05)
    assert v["verdict"] == "no loss (within noise)"
    assert v["noise"] == 0.05
    assert v["after_over_before"] == pytest.approx(0.97)


def test_a_consistent_drop_beyond_the_floor_is_a_loss() -> None:
    v = verdict([100.0, 100.0, 100.0], [80.0, 82.0, 81.0], higher_is_better=True, floor=0.05)
    assert v["verdict"] == "loss"


def test_a_consistent_rise_in_latency_is_a_loss_and_a_fall_a_gain() -> None:
    assert verdict([10.0, 10.0], [12.0, 12.0], False, 0.1)["verdict"] == "loss"
    assert verdict([10.0, 10.0], [8.0, 8.0], False, 0.1)["verdict"] == "gain"


def test_rounds_that_disagree_widen_the_noise() -> None:
    # Per-round costs 0.8 and 1.6: their median absolute deviation (0.4) is the noise, so a
    # median cost of 1.2 cannot be told from no change.
    v = verdict([100.0, 100.0], [125.0, 62.5], higher_is_better=True, floor=0.05)
    assert v["noise"] == pytest.approx(0.4)
    assert v["cost_factor"] == pytest.approx(1.2)
    assert v["verdict"] == "no loss (within noise)"


def test_one_round_under_someone_elses_load_hides_no_steady_shift() -> None:
    # Six rounds 7% slower, one round three times slower on one side only (a busy spell):
    # the verdict follows the six, and the busy round does not widen the noise.
    before = [30.0] * 7
    after = [32.1] * 6 + [90.0]
    v = verdict(before, after, higher_is_better=False, floor=0.05)
    assert v["cost_factor"] == pytest.approx(1.07)
    assert v["noise"] == 0.05
    assert v["verdict"] == "loss"


def test_runs_must_pair_up_by_round() -> None:
    with pytest.raises(ValueError):
        verdict([1.0, 2.0], [1.0], True, 0.05)
    with pytest.raises(ValueError):
        verdict([], [], True, 0.05)


def test_codec_sums_count_only_the_record_types_both_sides_have() -> None:
    before = {"A": {"encode_us": 1.0}, "B": {"encode_us": 2.0}}
    after = {"A": {"encode_us": 1.5}, "B": {"encode_us": 2.5}, "New": {"encode_us": 50.0}}
    types, total = codec_sums(before, after)
    assert types == ["A", "B"]
    assert total(before, "encode_us") == 3.0
    assert total(after, "encode_us") == 4.0
