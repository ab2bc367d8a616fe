import pytest

from edgecomp.compression.magnitude import linear, magnitude_for
from edgecomp.compression.steps import step_targets
from edgecomp.core.recipe import ConstantSchedule, LinearSchedule, StepsSchedule


def test_constant_ignores_size_and_step():
    cfg = ConstantSchedule(dense=14)
    assert {magnitude_for(cfg, k, s) for k, s in [(0, 1.0), (2, 0.5), (5, 0.1)]} == {14.0}


def test_linear_follows_the_macs_ratio():
    cfg = LinearSchedule(dense=14, min=2)
    assert magnitude_for(cfg, 0, 1.0) == 14
    assert magnitude_for(cfg, 3, 0.5) == pytest.approx(8.0)
    assert magnitude_for(cfg, 3, 0.0) == pytest.approx(2.0)
    assert linear(10, 0, 1.5) == 10  # ratios are clamped to 0..1


def test_linear_is_monotone_in_size():
    cfg = LinearSchedule(dense=20, min=0)
    values = [magnitude_for(cfg, 1, s / 10) for s in range(11)]
    assert values == sorted(values)


def test_steps_schedule_uses_one_value_per_step():
    cfg = StepsSchedule(dense=14, values=[9, 5, 0])
    assert [magnitude_for(cfg, k, 0.3) for k in range(4)] == [14, 9, 5, 0]


@pytest.mark.parametrize("geometric", [False, True])
def test_step_targets_end_at_the_target_and_decrease(geometric):
    targets = step_targets(0.3, 4, geometric)
    assert len(targets) == 4
    assert targets[-1] == pytest.approx(0.3)
    assert targets == sorted(targets, reverse=True)
    assert all(0.3 <= t < 1 for t in targets)


def test_linear_vs_geometric_targets():
    assert step_targets(0.25, 2, False) == pytest.approx([0.625, 0.25])
    assert step_targets(0.25, 2, True) == pytest.approx([0.5, 0.25])
