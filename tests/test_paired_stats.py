"""The statistics behind every claim: worked examples checked by hand."""

import math

import pytest
from paired_stats import mean_interval, paired_difference

from edgecomp.compression.convergence import PlateauRule, stopping_epoch


def test_paired_difference_worked_example():
    # differences 0.02, 0.01, 0.01: mean 0.013333, sd 0.0057735, se 0.0033333, t(0.975, 2) = 4.302653
    a = {0: 0.90, 1: 0.92, 2: 0.91}
    b = {0: 0.88, 1: 0.91, 2: 0.90, 7: 0.5}  # seed 7 has no partner and is ignored
    diff = paired_difference(a, b)
    assert diff.seeds == (0, 1, 2) and diff.n == 3
    assert diff.mean == pytest.approx(0.0133333, abs=1e-6)
    assert diff.low == pytest.approx(0.0133333 - 0.0143422, abs=1e-6)
    assert diff.high == pytest.approx(0.0133333 + 0.0143422, abs=1e-6)
    assert not diff.excludes_zero and diff.verdict("A", "B") == "no difference shown"


def test_pairing_removes_the_shared_seed_effect():
    # seed effects of +-5 points, a constant +1 point gain: unpaired would see noise, paired sees the gain
    a = {0: 0.86, 1: 0.96, 2: 0.91, 3: 0.88}
    b = {seed: value - 0.01 for seed, value in a.items()}
    diff = paired_difference(a, b)
    assert diff.low == pytest.approx(0.01) and diff.high == pytest.approx(0.01)
    assert diff.verdict("A", "B") == "A better"
    _, low, high = mean_interval(list(a.values()))
    assert high - low > 0.05  # the unpaired spread of one variant alone is far wider than the gain


def test_paired_difference_needs_common_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference({0: 0.9}, {1: 0.9})
    one = paired_difference({0: 0.9}, {0: 0.8})
    assert one.n == 1 and math.isinf(one.low) and one.verdict("A", "B") == "too few seeds"


def test_plateau_rule_on_a_synthetic_learning_curve():
    rule = PlateauRule(patience=2, factor=0.1, min_delta=0.001, drops=2, max_epochs=60)
    rising = [0.70, 0.80, 0.85, 0.87, 0.88]
    stall = [0.880, 0.8805, 0.879]  # three epochs without a gain of 0.001: first cut after epoch 8
    after_first_cut = [0.895, 0.896, 0.8955, 0.8958]  # gain, then three flat epochs: second cut after 12
    after_second_cut = [0.8952, 0.8958, 0.8950, 0.95]  # none beats 0.895 + 0.001: stop at 15
    curve = rising + stall + after_first_cut + after_second_cut
    assert stopping_epoch(curve, rule) == 15
    assert stopping_epoch(curve[:14], rule) is None  # not plateaued yet


def test_plateau_rule_caps_a_curve_that_keeps_rising():
    rule = PlateauRule(max_epochs=10)
    assert stopping_epoch([0.5 + 0.01 * k for k in range(30)], rule) == 10
