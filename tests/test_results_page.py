"""The results page applies PLAN.md's rules mechanically (finding A, the decisive tables): check them on worked data."""

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def page():
    return load_benchmark("results_page")


def grid(page, best: dict[float, float], gain: float, noise=(0.0, 0.001, -0.001)) -> dict:
    """Cells whose accuracy peaks at best[size] by `gain` (per-seed offsets `noise`), else 0.80."""
    cells = {}
    for seed, offset in zip(page.SEEDS, noise):
        for size in page.SIZES:
            for m in page.MAGNITUDES:
                acc = 0.80 + offset + (gain if m == best[size] else 0.0)
                cells[seed, size, m] = {"val_accuracy": acc, "test_accuracy": acc}
    return cells


def verdict(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("- Finding A"))


def test_a_holds_when_the_best_magnitude_falls_with_size_and_the_small_model_gains(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.02)
    assert page.best_magnitude(cells, 0.05) == 0.0 and page.best_magnitude(cells, 1.0) == 10.0
    assert "**holds**" in verdict(page.finding_a_verdict(cells))


def test_a_fails_when_the_small_model_prefers_as_much_augmentation(page):
    cells = grid(page, {1.0: 5.0, 0.25: 5.0, 0.1: 5.0, 0.05: 10.0}, gain=0.02)
    assert "**fails**" in verdict(page.finding_a_verdict(cells))


def test_a_is_not_shown_when_the_ordering_holds_but_the_seeds_disagree(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.0005)
    for seed in page.SEEDS:  # seed 1 prefers the dense magnitude at 5% on test: the interval spans zero
        cells[seed, 0.05, 10.0]["test_accuracy"] += 0.004 if seed == 1 else 0.0
    assert "**not shown**" in verdict(page.finding_a_verdict(cells))


def test_ties_go_to_the_smaller_magnitude(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.0)
    assert all(page.best_magnitude(cells, size) == 0.0 for size in page.SIZES)
    assert "**fails**" in verdict(page.finding_a_verdict(cells))


def comparison(a: str, b: str, size: float, gains: tuple[float, ...]) -> dict:
    """A decisive.json comparison whose seeds gain `gains` (accuracy) for a over b on validation."""
    from paired_stats import paired_difference

    base = {seed: 0.80 + 0.01 * seed for seed in range(len(gains))}
    diff = paired_difference({s: base[s] + g for s, g in enumerate(gains)}, base).as_dict()
    return {"a": a, "b": b, "size": size, "val": diff, "test": diff}


CLEAR, NOISY = (0.010, 0.012, 0.011), (0.02, -0.015, 0.004)


@pytest.mark.parametrize("gains, sizes_run, status", [
    ({0.1: CLEAR, 0.05: CLEAR}, (0.1, 0.05), "→ a default"),
    ({0.1: NOISY, 0.05: CLEAR}, (0.1, 0.05), "→ **not** a default"),
    ({0.05: CLEAR}, (0.05,), "→ **passes where it ran**"),
    ({0.05: NOISY}, (0.05,), "→ **not** a default"),
])
def test_a_mechanism_becomes_a_default_only_above_zero_at_both_sizes(page, gains, sizes_run, status):
    rows = [comparison("kd", "linear", size, gains[size]) for size in sizes_run]
    (line,) = page.decisive_verdicts("d", rows, [0.1, 0.05])
    assert status in line


def test_the_full_recipe_goal_needs_a_point_above_zero_at_every_size(page):
    small = (0.004, 0.005, 0.006)  # above zero but under one point
    met = [comparison("full", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    assert "**met**" in page.decisive_verdicts("e", met, [0.1, 0.05])[0]
    short = [comparison("full", "tp_baseline", 0.1, CLEAR), comparison("full", "tp_baseline", 0.05, small)]
    assert "**not met**" in page.decisive_verdicts("e", short, [0.1, 0.05])[0]
    assert "**not met**" in page.decisive_verdicts("e", met[:1], [0.1, 0.05])[0]  # one size run is not both


def test_the_weak_views_own_cost_is_reported_not_decided(page):
    rows = [comparison("linear", "tp_baseline", 0.05, tuple(-g for g in CLEAR)),
            comparison("linear", "tp_baseline", 0.1, NOISY)]
    (line,) = page.decisive_verdicts("f", rows, [0.1, 0.05])
    assert "costs at 0.05" in line and "default" not in line


@pytest.mark.parametrize("gains, status", [
    ({0.1: CLEAR, 0.05: CLEAR}, "**confirmed: a default**"),
    ({0.1: NOISY, 0.05: CLEAR}, "**confirmed at 5% only: worth it there**"),
    ({0.1: CLEAR, 0.05: NOISY}, "**not confirmed**"),
    ({0.1: NOISY, 0.05: NOISY}, "**not confirmed**"),
])
def test_confirmation_on_new_seeds(page, gains, status):
    rows = [comparison("kd_plain", "tp_baseline", size, gains[size]) for size in (0.1, 0.05)]
    (line,) = page.decisive_verdicts("g", rows, [0.1, 0.05])
    assert status in line


def test_confirmation_is_pending_until_every_size_has_every_new_seed(page):
    one_size = [comparison("kd_plain", "tp_baseline", 0.05, CLEAR)]
    assert "**pending**" in page.decisive_verdicts("g", one_size, [0.1, 0.05], seeds_needed=3)[0]
    two_seeds = [comparison("kd_plain", "tp_baseline", size, CLEAR[:2]) for size in (0.1, 0.05)]
    assert "**pending**" in page.decisive_verdicts("g", two_seeds, [0.1, 0.05], seeds_needed=3)[0]


def test_exploratory_table_only_proposes_for_the_confirmation(page):
    rows = [comparison("kd_plain", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    (line,) = page.decisive_verdicts("f", rows, [0.1, 0.05])
    assert "a default only if (g) confirms it" in line


def test_the_headline_counts_confirmations_and_waits_for_pending_ones(page):
    done = [comparison("kd_plain", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    failed = [comparison("rep_trunk", "tp_baseline", size, NOISY) for size in (0.1, 0.05)]
    data = {"confirmation": {"seeds": [3, 4, 5]}, "comparisons": [{"table": "g", **c} for c in done + failed]}
    assert "1 of 2 candidates beat" in page.confirmation_status(data)
    data["comparisons"] = [{"table": "g", **c} for c in failed]
    assert "0 of 1 candidates" in page.confirmation_status(data) and "baseline's settings" in page.confirmation_status(data)
    data["comparisons"] = [{"table": "g", **done[1]}]  # 10% not run yet
    assert "still running" in page.confirmation_status(data)
    assert page.confirmation_status(None) == ""
